"""Headless Chromium for the browser tests: the system's browser (Debian's ``chromium`` and ``chromium-driver``)
driven through Selenium, a page origin of our own (a second HTTP server), and a second local stack with other
allowed origins.

The browser runs offline: every host name but 127.0.0.1 resolves to nothing, so a page that tried to load a
script from a CDN would fail, and the tests would see it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1600",
    # Offline: nothing but the loopback address resolves.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


def find_browser() -> tuple[str, str] | None:
    """(browser, chromedriver) found on PATH, or None."""
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


MISSING = "no Chromium on this machine: apt-get install chromium chromium-driver (.ci/run does it) to run them"


@contextmanager
def chromium() -> Iterator[Any]:
    """A fresh headless Chromium (its own profile, thrown away after), with its console log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    assert found is not None, MISSING
    browser, driver_path = found
    profile = tempfile.mkdtemp(prefix="image-service-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[str]:
    """The page's console errors so far (CSP refusals, failed loads, script errors)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver: Any, name: str, folder: Path) -> Path:
    """A PNG of the whole page, in ``folder`` (and in $BROWSER_SCREENSHOTS when set, to look at)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height), 800), 6000))
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    extra = os.environ.get("BROWSER_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


class PageOrigin:
    """Another web origin: an HTTP server on its own port that serves one empty page, for pages that call the
    API from elsewhere (scripts then run in that origin through the driver)."""

    PAGE = "<!doctype html><html><head><meta charset='utf-8'><title>client</title></head><body>client</body></html>"

    def __init__(self) -> None:
        def app(environ: dict[str, Any], start_response: Any) -> Any:
            Request(environ)
            return Response(self.PAGE, content_type="text/html; charset=utf-8")(environ, start_response)

        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def second_stack(env: dict[str, str], ports: tuple[int, int]) -> Iterator[str]:
    """``python -m local`` with ``env`` on top (e.g. CORS_ALLOW_ORIGINS), on ``ports`` (API, AWS); yields the
    API URL once it answers, stops it after."""
    port, aws_port = ports
    log = tempfile.NamedTemporaryFile(prefix="image-service-stack-", suffix=".log", delete=False)  # noqa: SIM115
    full = {**os.environ, "PORT": str(port), "AWS_PORT": str(aws_port), "PYTHONUNBUFFERED": "1", **env}
    for name in ("UPSTREAM_BASE_URL", "UPSTREAM_API_KEY", "IMAGES_BUCKET", "S3_ENDPOINT_URL"):
        if name not in env:
            full.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "local"], cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT
    )
    api_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 50
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the second stack did not start:\n{Path(log.name).read_text()}")
            # The banner is printed once every function is loaded: only then is the API asked.
            if "API key" in Path(log.name).read_text() and httpx.get(api_url + "/health", timeout=5).is_success:
                break
            time.sleep(0.2)
        yield api_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        os.unlink(log.name)
