"""The docs page, the playground and cross-origin calls, in a real headless Chromium against the local stack.

Skipped, with the reason in the summary, on a machine without Chromium and chromedriver (``.ci/run`` installs
them)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.browser import MISSING, PageOrigin, chromium, console_errors, find_browser, screenshot, second_stack
from tests.e2e.conftest import API_KEY, RunningStack, free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(find_browser() is None, reason=MISSING),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def driver(browser: Any) -> Any:
    browser.delete_all_cookies()
    browser.get_log("browser")  # drop what earlier tests left
    browser.get_log("performance")
    return browser


@pytest.fixture(scope="module")
def page_origin() -> Iterator[PageOrigin]:
    origin = PageOrigin()
    yield origin
    origin.stop()


def wait_for(driver: Any, script: str, timeout: float = 60) -> Any:
    """Poll a JavaScript expression until it is truthy; its value (on a timeout, the page's text is printed)."""
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: d.execute_script(f"return {script}"))
    except Exception:
        print("PAGE", driver.execute_script("return document.body.innerText")[-2000:], console_errors(driver))
        raise


def stored_anything(driver: Any) -> dict[str, Any]:
    return driver.execute_script(
        "return {local: localStorage.length, session: sessionStorage.length, cookie: document.cookie}"
    )


def decoded_images(driver: Any) -> list[dict[str, Any]]:
    return driver.execute_script(
        """return [...document.querySelectorAll('#images img')].map(img => ({
             complete: img.complete, width: img.naturalWidth, height: img.naturalHeight, src: img.src,
             link: img.parentElement.querySelector('a').href}))"""
    )


# --- the docs page ------------------------------------------------------------------------------------------
def test_docs_page_renders_every_operation_offline_and_keeps_no_key(
    stack: RunningStack, driver: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    document = httpx.get(stack.api_url + "/openapi.json").json()
    operations = sum(len(methods) for methods in document["paths"].values())

    driver.get(stack.api_url + "/docs")
    shown = wait_for(
        driver,
        f"document.querySelectorAll('.opblock').length >= {operations} && document.querySelectorAll('.opblock').length",
    )
    screenshot(driver, "docs", tmp_path)

    assert shown == operations
    summaries = {e.text for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert set(document["paths"]) <= {s.replace("\u200b", "") for s in summaries}
    assert driver.find_elements(By.CSS_SELECTOR, ".models, section.models"), "the schemas are listed"
    # "Authorize" with a key: it stays in memory only.
    driver.find_element(By.CSS_SELECTOR, ".btn.authorize").click()
    field = wait_for(driver, "document.querySelector('.modal-ux input[type=text], .modal-ux input[type=password]')")
    field.send_keys(API_KEY)
    driver.find_element(By.CSS_SELECTOR, ".modal-ux .auth-btn-wrapper .authorize").click()
    assert stored_anything(driver) == {"local": 0, "session": 0, "cookie": ""}
    assert console_errors(driver) == []


def test_docs_try_it_out_calls_the_same_deployment(stack: RunningStack, driver: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.get(stack.api_url + "/docs")
    wait_for(driver, "document.querySelector('#operations-default-health_v1_health_get, .opblock-get')")
    block = wait_for(
        driver,
        "[...document.querySelectorAll('.opblock')].find(b => b.textContent.includes('/v1/health'))",
    )
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait_for(driver, "document.querySelector('.try-out__btn')").click()
    wait_for(driver, "document.querySelector('.execute')").click()
    status = wait_for(driver, "document.querySelector('.live-responses-table tbody .response-col_status')?.textContent")
    url = driver.execute_script("return document.querySelector('.request-url pre')?.textContent")

    assert status.strip().startswith("200")
    assert url.strip() == stack.api_url + "/health"
    assert console_errors(driver) == []


def authorize_docs(driver: Any, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, ".btn.authorize").click()
    field = wait_for(driver, "document.querySelector('.modal-ux input[type=text], .modal-ux input[type=password]')")
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, ".modal-ux .auth-btn-wrapper .authorize").click()
    driver.find_element(By.CSS_SELECTOR, ".modal-ux .btn-done, .modal-ux .close-modal").click()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/images/generations", "200"),
        ("/v1/images/generations/async", "202"),
        ("/v1/images/edits", "200"),
        ("/v1/client_tokens", "200"),
    ],
)
def test_docs_try_it_out_succeeds_with_the_documented_body_unedited(
    stack: RunningStack, driver: Any, tmp_path: Path, path: str, expected: str
) -> None:
    """Swagger UI's "Try it out" then "Execute", as a newcomer would, with nothing typed but the key."""
    from selenium.webdriver.common.by import By

    calls = stack.upstream_calls()
    driver.get(stack.api_url + "/docs")
    wait_for(driver, "document.querySelectorAll('.opblock').length > 5")
    authorize_docs(driver, API_KEY)
    block = wait_for(
        driver,
        f"""[...document.querySelectorAll('.opblock-post')].find(b =>
              b.querySelector('.opblock-summary-path').textContent.replace(/\u200b/g, '') === '{path}')""",
    )
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait_for(driver, "document.querySelector('.opblock.is-open .try-out__btn')").click()
    body = wait_for(driver, "document.querySelector('.opblock.is-open textarea.body-param__text')?.value")
    driver.find_element(By.CSS_SELECTOR, ".opblock.is-open .execute").click()
    status = wait_for(
        driver,
        "document.querySelector('.opblock.is-open .live-responses-table tbody .response-col_status')?.textContent",
    )
    answer = driver.execute_script(
        "return document.querySelector('.opblock.is-open .live-responses-table .microlight')?.textContent"
    )
    screenshot(driver, "docs-try-" + path.strip("/").replace("/", "-"), tmp_path)

    assert "output_compression" not in body and "partial_images" not in body
    assert status.strip().startswith(expected), answer
    if path != "/v1/client_tokens":
        assert '"1024x1024"' in body
        # the synchronous one drew its image; the async one's worker may still be at it
        assert stack.upstream_calls() >= calls + (1 if expected == "200" else 0)
    assert console_errors(driver) == []


def test_pages_send_a_strict_content_security_policy(stack: RunningStack) -> None:
    for page in ("docs", "playground"):
        response = httpx.get(f"{stack.api_url}/{page}")
        policy = dict(d.strip().split(" ", 1) for d in response.headers["content-security-policy"].split(";"))
        assert policy["default-src"] == "'none'"
        assert policy["script-src"] == "'self'"
        assert policy["connect-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert "cdn" not in response.text and "https://" not in response.text


# --- the playground -----------------------------------------------------------------------------------------
def fill_playground(driver: Any, key: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "credential")
    field.clear()
    field.send_keys(key)


def select(driver: Any, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, element_id)).select_by_visible_text(value)


def test_playground_generates_images_and_shows_them(stack: RunningStack, driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    calls = stack.upstream_calls()
    driver.get(stack.api_url + "/playground")
    fill_playground(driver, API_KEY)
    driver.find_element(By.ID, "prompt").send_keys("a lighthouse at dawn, seen from a browser")
    select(driver, "size", "1024x1536")
    select(driver, "output_format", "webp")
    field = driver.find_element(By.ID, "n")
    field.clear()
    field.send_keys("2")
    driver.find_element(By.ID, "generate").click()
    wait_for(
        driver, "[...document.querySelectorAll('#images img')].filter(i => i.complete && i.naturalWidth).length == 2"
    )
    images = decoded_images(driver)
    screenshot(driver, "playground-generate", tmp_path)

    assert [(i["width"], i["height"]) for i in images] == [(1024, 1536), (1024, 1536)]
    assert all(i["link"] == i["src"] and "X-Amz-Signature=" in i["src"] for i in images)
    downloaded = Image.open(io.BytesIO(httpx.get(images[0]["link"]).content))
    assert (downloaded.format, downloaded.size) == ("WEBP", (1024, 1536))
    assert stack.upstream_calls() == calls + 1
    assert "2 images" in driver.find_element(By.ID, "status").text
    assert stored_anything(driver) == {"local": 0, "session": 0, "cookie": ""}
    assert console_errors(driver) == []


def test_playground_streams_partial_previews_then_the_images(stack: RunningStack, driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    calls = stack.upstream_calls()
    driver.get(stack.api_url + "/playground")
    # Every preview the page shows while the answer streams in, as it is shown.
    driver.execute_script(
        """window.previews = [];
           new MutationObserver(() => {
             const img = document.querySelector('#preview img');
             if (img && !window.previews.includes(img.src)) window.previews.push(img.src);
           }).observe(document.getElementById('images'), {subtree: true, childList: true, attributes: true});"""
    )
    fill_playground(driver, API_KEY)
    driver.find_element(By.ID, "prompt").send_keys("a lighthouse, streamed")
    select(driver, "size", "1536x1024")
    driver.find_element(By.ID, "stream").click()
    select(driver, "partial_images", "2")
    driver.find_element(By.ID, "generate").click()
    wait_for(driver, "document.getElementById('status').textContent.includes('1 image in')")
    wait_for(
        driver, "[...document.querySelectorAll('#images img')].filter(i => i.complete && i.naturalWidth).length == 1"
    )
    images = decoded_images(driver)
    previews = driver.execute_script("return window.previews")
    screenshot(driver, "playground-stream", tmp_path)

    assert len(previews) == 2 and all(p.startswith("data:image/png;base64,") for p in previews)
    assert [(i["width"], i["height"]) for i in images] == [(1536, 1024)]
    assert images[0]["src"].startswith(stack.aws_url) and "X-Amz-Signature=" in images[0]["link"]
    assert driver.find_elements(By.ID, "preview") == []
    assert stack.upstream_calls() == calls + 1
    assert console_errors(driver) == []


def png_file(path: Path, size: tuple[int, int], mode: str) -> Path:
    color = (40, 90, 160, 0) if mode == "RGBA" else (40, 90, 160)
    Image.new(mode, size, color).save(path, format="PNG")
    return path


def test_playground_edits_an_uploaded_image_with_a_mask(stack: RunningStack, driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    image = png_file(tmp_path / "photo.png", (1024, 1024), "RGB")
    mask = png_file(tmp_path / "mask.png", (1024, 1024), "RGBA")
    calls = stack.upstream_calls()
    driver.get(stack.api_url + "/playground")
    fill_playground(driver, API_KEY)
    driver.find_element(By.ID, "edit-prompt").send_keys("add a red door")
    driver.find_element(By.ID, "edit-image").send_keys(str(image))
    driver.find_element(By.ID, "edit-mask").send_keys(str(mask))
    select(driver, "edit-size", "1536x1024")
    driver.find_element(By.ID, "edit").click()
    wait_for(
        driver, "[...document.querySelectorAll('#images img')].filter(i => i.complete && i.naturalWidth).length == 1"
    )
    images = decoded_images(driver)
    screenshot(driver, "playground-edit", tmp_path)

    assert [(i["width"], i["height"]) for i in images] == [(1536, 1024)]
    assert stack.upstream_calls() == calls + 1
    assert console_errors(driver) == []


def test_playground_shows_a_refused_key(stack: RunningStack, driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    calls = stack.upstream_calls()
    driver.get(stack.api_url + "/playground")
    fill_playground(driver, "isk-not-a-key-of-this-service")
    driver.find_element(By.ID, "prompt").send_keys("anything")
    driver.find_element(By.ID, "generate").click()
    shown = wait_for(driver, "!document.getElementById('error').hidden && document.getElementById('error').textContent")
    screenshot(driver, "playground-401", tmp_path)

    assert shown.startswith("HTTP 401 invalid_api_key")
    assert decoded_images(driver) == []
    assert stack.upstream_calls() == calls


# --- client tokens ------------------------------------------------------------------------------------------
TOKENS_MISSING = "client tokens (POST /v1/client_tokens) are not in this build"


def test_a_client_token_minted_by_a_server_key_drives_the_playground(
    stack: RunningStack, driver: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    pytest.importorskip("imagecore.accounts.client_tokens", reason=TOKENS_MISSING)
    minted = httpx.post(
        stack.api_url + "/client_tokens", json={"max_images": 2}, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert minted.status_code == 200, minted.text
    driver.get(stack.api_url + "/playground")
    fill_playground(driver, minted.json()["token"])
    driver.find_element(By.ID, "prompt").send_keys("made with a client token")
    select(driver, "size", "1024x1024")
    driver.find_element(By.ID, "generate").click()
    wait_for(driver, "[...document.querySelectorAll('#images img')].filter(i => i.complete && i.naturalWidth).length")
    screenshot(driver, "playground-client-token", tmp_path)

    assert [(i["width"], i["height"]) for i in decoded_images(driver)] == [(1024, 1024)]
    assert stored_anything(driver) == {"local": 0, "session": 0, "cookie": ""}


def test_an_expired_client_token_shows_the_401_on_the_playground(
    stack: RunningStack, driver: Any, tmp_path: Path
) -> None:
    import time

    from selenium.webdriver.common.by import By

    client_tokens = pytest.importorskip("imagecore.accounts.client_tokens", reason=TOKENS_MISSING)
    from imagecore.accounts import auth
    from tests.e2e import conftest

    owner = auth.owner_for_hash(auth.hash_key(API_KEY))
    expired, _ = client_tokens.mint(owner, signing_key=conftest.SIGNING_KEY, now=int(time.time()) - 3601)
    calls = stack.upstream_calls()
    driver.get(stack.api_url + "/playground")
    fill_playground(driver, expired)
    driver.find_element(By.ID, "prompt").send_keys("too late")
    driver.find_element(By.ID, "generate").click()
    shown = wait_for(driver, "!document.getElementById('error').hidden && document.getElementById('error').textContent")
    screenshot(driver, "playground-expired-token", tmp_path)

    assert shown.startswith("HTTP 401 invalid_api_key")
    assert "client token" in shown
    assert stack.upstream_calls() == calls


# --- another origin -----------------------------------------------------------------------------------------
FETCH_FROM_PAGE = """
const [api, key, done] = arguments;
(async () => {
  const answer = await fetch(api + "/images/generations", {
    method: "POST",
    headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json",
              "Idempotency-Key": crypto.randomUUID()},
    body: JSON.stringify({prompt: "a cross-origin lighthouse", size: "1024x1024", output_format: "png"}),
  });
  const body = await answer.json();
  const image = await fetch(body.data[0].url);
  const bytes = new Uint8Array(await image.arrayBuffer());
  done({status: answer.status, requestId: answer.headers.get("x-amzn-RequestId"), imageStatus: image.status,
        imageBytes: bytes.length, signature: Array.from(bytes.slice(1, 4)).map(c => String.fromCharCode(c)).join("")});
})().catch(error => done({error: String(error)}));
"""

UPLOAD_FROM_PAGE = """
const [api, key, done] = arguments;
(async () => {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 1024;
  canvas.getContext("2d").fillRect(0, 0, 1024, 1024);
  const png = await new Promise(resolve => canvas.toBlob(resolve, "image/png"));
  const auth = {"Authorization": "Bearer " + key, "Content-Type": "application/json"};
  const upload = await (await fetch(api + "/uploads", {method: "POST", headers: auth,
    body: JSON.stringify({content_type: "image/png", bytes: png.size})})).json();
  const form = new FormData();
  for (const [name, value] of Object.entries(upload.fields)) form.append(name, value);
  form.append("file", png);
  const stored = await fetch(upload.url, {method: "POST", body: form});
  const edit = await fetch(api + "/images/edits", {method: "POST", headers: auth,
    body: JSON.stringify({prompt: "paint it", images: [{upload_id: upload.id}], size: "1024x1024"})});
  done({s3: stored.status, edit: edit.status, data: (await edit.json()).data.length});
})().catch(error => done({error: String(error)}));
"""


def preflights(driver: Any) -> list[str]:
    """The URLs Chromium sent a CORS preflight for (from its network log)."""
    found = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent" and params["initiator"]["type"] == "preflight":
            assert params["request"]["headers"]["Access-Control-Request-Method"] == "POST"
            found.append(params["request"]["url"])
    return found


def test_a_page_of_another_origin_calls_the_api_and_downloads_the_image(
    stack: RunningStack, driver: Any, page_origin: PageOrigin
) -> None:
    driver.get(page_origin.url)
    result = driver.execute_async_script(FETCH_FROM_PAGE, stack.api_url, API_KEY)

    assert result.get("error") is None, result
    assert result["status"] == 200
    assert result["requestId"], "the request id is exposed to the page"
    assert (result["imageStatus"], result["signature"]) == (200, "PNG")
    assert result["imageBytes"] > 1000
    assert stack.api_url + "/images/generations" in preflights(driver)


def test_a_page_of_another_origin_uploads_to_s3_and_edits(
    stack: RunningStack, driver: Any, page_origin: PageOrigin
) -> None:
    driver.get(page_origin.url)
    result = driver.execute_async_script(UPLOAD_FROM_PAGE, stack.api_url, API_KEY)

    assert result == {"s3": 204, "edit": 200, "data": 1}


@pytest.fixture(scope="module")
def restricted(page_origin: PageOrigin) -> Iterator[str]:
    """A second stack that allows only ``page_origin``."""
    with second_stack(
        {"CORS_ALLOW_ORIGINS": page_origin.url, "API_KEYS": API_KEY}, (free_port(), free_port())
    ) as api_url:
        yield api_url


def test_only_the_allowed_origins_may_call_a_restricted_deployment(
    restricted: str, driver: Any, page_origin: PageOrigin
) -> None:
    other = PageOrigin()
    try:
        driver.get(other.url)
        refused = driver.execute_async_script(FETCH_FROM_PAGE, restricted, API_KEY)
        answer = httpx.post(
            restricted + "/images/generations",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"prompt": "fetched by the test itself", "size": "1024x1024"},
        ).json()
        image_from_other = driver.execute_async_script(
            "const [url, done] = arguments; fetch(url).then(r => done(r.status), e => done(String(e)));",
            answer["data"][0]["url"],
        )
        driver.get(page_origin.url)
        allowed = driver.execute_async_script(FETCH_FROM_PAGE, restricted, API_KEY)
    finally:
        other.stop()

    assert refused == {"error": "TypeError: Failed to fetch"}
    assert image_from_other == "TypeError: Failed to fetch"
    assert allowed.get("error") is None and allowed["status"] == 200 and allowed["signature"] == "PNG", allowed


# --- the playground: sizes, many inputs, progress, kept results, failures ----------------------------------
def note(driver: Any, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def test_playground_offers_every_contract_size_and_checks_a_custom_one(stack: RunningStack, driver: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.get(stack.api_url + "/playground")
    for select_id in ("size", "edit-size"):
        values = driver.execute_script(f"return [...document.getElementById('{select_id}').options].map(o => o.value)")
        assert {"1024x1024", "1536x1024", "1024x1536", "2560x1440", "3840x2160", "2160x3840", "auto", "custom"} <= set(
            values
        ), values
    fill_playground(driver, API_KEY)
    driver.find_element(By.ID, "prompt").send_keys("a size the contract refuses")
    select(driver, "size", "custom...")
    assert driver.find_element(By.ID, "width").is_displayed()
    for width, height, problem in [
        ("1000", "1000", "multiple of 16"),
        ("3856", "1024", "at most 3840"),
        ("3840", "1024", "3 times"),
        ("512", "512", "655,360"),
    ]:
        for element_id, value in (("width", width), ("height", height)):
            field = driver.find_element(By.ID, element_id)
            field.clear()
            field.send_keys(value)
        calls = stack.upstream_calls()
        driver.find_element(By.ID, "generate").click()
        shown = note(driver, "size-note")
        assert shown.startswith("Not a valid size") and problem in shown, (width, height, shown)
        assert driver.execute_script("return document.querySelectorAll('#images .result').length") == 0
        assert stack.upstream_calls() == calls  # nothing was sent
    assert console_errors(driver) == []


def test_playground_draws_a_4k_image(stack: RunningStack, driver: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.get(stack.api_url + "/playground")
    fill_playground(driver, API_KEY)
    driver.find_element(By.ID, "prompt").send_keys("a city skyline in 4K")
    select(driver, "size", "3840x2160 (4K)")
    select(driver, "quality", "low")
    assert "5 minutes" in note(driver, "size-note")  # a large size is said to be slow before it is asked
    driver.find_element(By.ID, "generate").click()
    wait_for(driver, "[...document.querySelectorAll('#images img')].filter(i => i.complete && i.naturalWidth).length")

    assert [(i["width"], i["height"]) for i in decoded_images(driver)] == [(3840, 2160)]
    details = driver.find_element(By.CSS_SELECTOR, "#images .result .details").text
    assert "3840x2160" in details
    assert console_errors(driver) == []


def test_playground_edits_several_images_with_a_mask(stack: RunningStack, driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    images = [png_file(tmp_path / f"input-{i}.png", (1024, 1024), "RGB") for i in range(3)]
    mask = png_file(tmp_path / "mask.png", (1024, 1024), "RGBA")
    calls = stack.upstream_calls()
    driver.get(stack.api_url + "/playground")
    fill_playground(driver, API_KEY)
    driver.find_element(By.ID, "edit-prompt").send_keys("blend these three")
    driver.find_element(By.ID, "edit-image").send_keys("\n".join(str(path) for path in images))
    driver.find_element(By.ID, "edit-mask").send_keys(str(mask))
    assert "input-0.png" in note(driver, "edit-image-note") and "input-2.png" in note(driver, "edit-image-note")
    select(driver, "edit-size", "1024x1024")
    driver.find_element(By.ID, "edit").click()
    wait_for(driver, "[...document.querySelectorAll('#images img')].filter(i => i.complete && i.naturalWidth).length")

    assert stack.upstream_calls() == calls + 1
    received = httpx.get(stack.simulator_url.removesuffix("/v1") + "/_simulator/stats").json()["last_request"]
    parts = [(part["name"], part["filename"]) for part in received["files"]]
    assert parts == [("image[]", "input-0.png"), ("image[]", "input-1.png"), ("image[]", "input-2.png"),
                     ("mask", "mask.png")]  # fmt: skip
    assert "3 images and a mask" in driver.find_element(By.CSS_SELECTOR, "#images .result .details").text
    assert console_errors(driver) == []


def test_playground_refuses_more_than_16_edit_images_before_sending(
    stack: RunningStack, driver: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    one = png_file(tmp_path / "one.png", (1024, 1024), "RGB")
    paths = []
    for i in range(17):
        path = tmp_path / f"many-{i}.png"
        path.write_bytes(one.read_bytes())
        paths.append(str(path))
    calls = stack.upstream_calls()
    driver.get(stack.api_url + "/playground")
    fill_playground(driver, API_KEY)
    driver.find_element(By.ID, "edit-prompt").send_keys("too many")
    driver.find_element(By.ID, "edit-image").send_keys("\n".join(paths))
    driver.find_element(By.ID, "edit").click()

    assert "17 images chosen: an edit takes at most 16." in note(driver, "edit-image-note")
    assert driver.execute_script("return document.querySelectorAll('#images .result').length") == 0
    assert stack.upstream_calls() == calls


def test_playground_shows_progress_and_elapsed_time_while_a_request_runs(
    stack: RunningStack, driver: Any, tmp_path: Path
) -> None:
    """Without streaming nothing arrives until the image is done: the page still shows that it is working."""
    from selenium.webdriver.common.by import By

    stack.slow_simulator(3000)
    driver.get(stack.api_url + "/playground")
    fill_playground(driver, API_KEY)
    driver.find_element(By.ID, "prompt").send_keys("a slow lighthouse")
    select(driver, "size", "1024x1024")
    driver.find_element(By.ID, "generate").click()
    wait_for(driver, "parseFloat(document.getElementById('elapsed').textContent) >= 1.5")
    running = driver.execute_script(
        """return {state: document.getElementById('progress').dataset.state,
                   status: document.getElementById('status').textContent,
                   disabled: document.getElementById('generate').disabled,
                   card: document.querySelector('#images .result').dataset.outcome}"""
    )
    screenshot(driver, "playground-running", tmp_path)
    wait_for(driver, "document.getElementById('progress').dataset.state === 'done'")
    elapsed = float(driver.find_element(By.ID, "elapsed").text.split()[0])

    assert running["state"] == "waiting" and running["disabled"] and running["card"] == "running"
    assert "nothing shows until it is done" in running["status"]
    assert elapsed >= 3.0
    assert "1 image in" in driver.find_element(By.ID, "status").text
    assert not driver.find_element(By.ID, "generate").get_property("disabled")


def test_playground_keeps_every_result_and_says_why_one_failed(
    stack: RunningStack, driver: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver.get(stack.api_url + "/playground")
    fill_playground(driver, API_KEY)
    driver.find_element(By.ID, "prompt").send_keys("the first, kept")
    select(driver, "size", "1024x1024")
    driver.find_element(By.ID, "generate").click()
    wait_for(driver, "document.getElementById('progress').dataset.state === 'done'")
    first_link = decoded_images(driver)[0]["link"]

    stack.queue_faults(
        {"status": 400, "error": {"message": "Your request was rejected by the safety system.", "type":
         "invalid_request_error", "code": "moderation_blocked"}}
    )  # fmt: skip
    driver.find_element(By.ID, "generate").click()
    wait_for(driver, "document.getElementById('progress').dataset.state === 'failed'")
    cards = driver.execute_script(
        """return [...document.querySelectorAll('#images .result')].map(card => ({
             outcome: card.dataset.outcome, why: card.querySelector('.why')?.textContent || '',
             links: [...card.querySelectorAll('figure a')].map(a => a.href), text: card.innerText}))"""
    )
    screenshot(driver, "playground-results", tmp_path)

    assert [card["outcome"] for card in cards] == ["failed", "done"]  # newest first; the first is still there
    assert cards[0]["why"].startswith("HTTP 400 moderation_blocked")
    assert "rejected by the safety system" in cards[0]["why"]
    assert "failed after" in driver.find_element(By.ID, "status").text
    assert cards[1]["links"] == [first_link]
    assert "link valid until" in cards[1]["text"] and "request id" in cards[1]["text"]
    image = Image.open(io.BytesIO(httpx.get(first_link).content))
    assert image.size == (1024, 1024)
