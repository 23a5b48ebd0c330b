"""A black-box check of a deployment, over HTTP only: ``make smoke BASE_URL=... API_KEY=...``.

Usage::

    make smoke BASE_URL=https://<api-id>.execute-api.<region>.amazonaws.com/prod/v1 API_KEY=<a key of the stack>
    .venv/bin/python scripts/smoke.py --base-url URL --api-key KEY [--long] [--max-images N] [--origin ORIGIN]

(``BASE_URL``, ``API_KEY``, ``LONG=1``, ``MAX_IMAGES``, ``ORIGIN`` and ``LONG_SECONDS`` may come from the
environment instead.) It prints one line per check and closes with ``N passed, M failed``; its exit status is 1
when a check failed. The checks: health; a generation whose URL downloads and opens at the asked size; a
streamed generation with partial images; an edit with a mask; an async task polled to its end; an
``Idempotency-Key`` replay; a client token minted and used; a CORS preflight; ``GET /v1/usage``; and a
generation that takes over 60 s and still answers 200 (no 29 s cut remains).

``GET /v1/health`` says whether the stack calls the upstream simulator (``UpstreamSimulator=true``). There every
image is free and the long check asks the simulator for a ``LONG_SECONDS`` (65) delay through its prompt marker.
Against the real upstream the run spends at most ``MAX_IMAGES`` (6) images, one per image check, and skips the
long check unless ``LONG=1`` (then a 3840x2160 high-quality image, which takes the real model over a minute).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image

DEFAULT_MAX_IMAGES = 6
DEFAULT_LONG_SECONDS = 65
SIZE = (1024, 1024)
TASK_WAIT_SECONDS = 600


class Skip(Exception):
    """The check does not apply here (said why)."""


class Failed(Exception):
    """The check ran and the deployment did not do what it should."""


@dataclass
class Smoke:
    base_url: str
    api_key: str
    max_images: int = DEFAULT_MAX_IMAGES
    long: bool = False
    long_seconds: int = DEFAULT_LONG_SECONDS
    origin: str = "https://smoke.example.com"
    simulator: bool = False
    images_spent: int = 0
    task: dict[str, Any] = field(default_factory=dict)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=httpx.Timeout(360, connect=10)))

    # --- helpers -------------------------------------------------------------------------------------------------
    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", **extra}

    def spend(self, images: int) -> None:
        """Count images against the budget; on the simulator they cost nothing."""
        if not self.simulator and self.images_spent + images > self.max_images:
            raise Skip(f"would pass MAX_IMAGES={self.max_images} on the real upstream")
        self.images_spent += images

    def ok(self, response: httpx.Response, status: int = 200) -> Any:
        if response.status_code != status:
            raise Failed(f"HTTP {response.status_code} (wanted {status}): {response.text[:300]}")
        return response.json() if response.content else None

    def opened(self, url: str, size: tuple[int, int] = SIZE) -> str:
        """Download an image URL (no key: presigned) and open it; its format and size."""
        response = self.http.get(url)
        if response.status_code != 200:
            raise Failed(f"download HTTP {response.status_code}")
        image = Image.open(io.BytesIO(response.content))
        image.load()
        if image.size != size:
            raise Failed(f"image is {image.size[0]}x{image.size[1]}, asked {size[0]}x{size[1]}")
        return f"{image.format} {image.size[0]}x{image.size[1]}, {len(response.content)} bytes"

    def generate(self, prompt: str, **extra: Any) -> httpx.Response:
        body = {"model": "gpt-image-2", "prompt": prompt, "size": "1024x1024", "quality": "low", **extra}
        return self.http.post(f"{self.base_url}/images/generations", json=body, headers=self.headers())

    # --- the checks ----------------------------------------------------------------------------------------------
    def health(self) -> str:
        answer = self.ok(self.http.get(f"{self.base_url}/health"))
        if answer.get("status") != "ok":
            raise Failed(f"status {answer.get('status')!r}")
        self.simulator = answer.get("upstream") == "simulator"
        return f"version {answer.get('version')}, upstream {answer.get('upstream', 'sub2api')}"

    def generation(self) -> str:
        self.spend(1)
        answer = self.ok(self.generate("smoke test: a lighthouse at dawn"))
        return self.opened(answer["data"][0]["url"])

    def streamed_generation(self) -> str:
        self.spend(1)
        body: dict[str, Any] = {"model": "gpt-image-2", "prompt": "smoke test: a paper boat", "size": "1024x1024"}
        body |= {"quality": "low", "stream": True, "partial_images": 1}
        events: list[dict[str, Any]] = []
        with self.http.stream("POST", f"{self.base_url}/images/generations", json=body, headers=self.headers()) as r:
            if r.status_code != 200 or not r.headers.get("content-type", "").startswith("text/event-stream"):
                raise Failed(f"HTTP {r.status_code} {r.headers.get('content-type')}: {r.read()[:300]!r}")
            events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
        kinds = [event.get("type", "") for event in events]
        partials = kinds.count("image_generation.partial_image")
        completed = [event for event in events if event.get("type") == "image_generation.completed"]
        if partials < 1 or len(completed) != 1:
            raise Failed(f"events {kinds}")
        return f"{partials} partial image(s), then {self.opened(completed[0]['url'])}"

    def edit_with_mask(self) -> str:
        self.spend(1)
        picture, mask = io.BytesIO(), io.BytesIO()
        Image.radial_gradient("L").resize(SIZE).convert("RGB").save(picture, "PNG")
        hole = Image.new("RGBA", SIZE, (0, 0, 0, 255))
        hole.paste((0, 0, 0, 0), (256, 256, 768, 768))  # the transparent square is what may change
        hole.save(mask, "PNG")
        files = {
            "image": ("image.png", picture.getvalue(), "image/png"),
            "mask": ("mask.png", mask.getvalue(), "image/png"),
        }
        data = {
            "model": "gpt-image-2",
            "prompt": "smoke test: a window in the wall",
            "size": "1024x1024",
            "quality": "low",
        }
        response = self.http.post(f"{self.base_url}/images/edits", data=data, files=files, headers=self.headers())
        return self.opened(self.ok(response)["data"][0]["url"])

    def async_task(self) -> str:
        self.spend(1)
        body = {"model": "gpt-image-2", "prompt": "smoke test: a kite", "size": "1024x1024", "quality": "low"}
        submitted = self.http.post(f"{self.base_url}/images/generations/async", json=body, headers=self.headers())
        task = self.ok(submitted, 202)
        location = submitted.headers.get("location") or task["poll_url"]
        deadline, polls = time.monotonic() + TASK_WAIT_SECONDS, 0
        while task["status"] == "processing":
            if time.monotonic() > deadline:
                raise Failed(f"still processing after {TASK_WAIT_SECONDS} s")
            time.sleep(min(3.0, float(submitted.headers.get("retry-after") or 3)) if not self.simulator else 0.5)
            task, polls = self.ok(self.http.get(location, headers=self.headers())), polls + 1
        if task["status"] != "completed":
            raise Failed(f"task {task['id']} {task['status']}: {task.get('error')}")
        self.task = {"id": task["id"], "poll_url": location}
        return f"{task['id']} completed after {polls} poll(s), {self.opened(task['result']['data'][0]['url'])}"

    def idempotent_replay(self) -> str:
        self.spend(1)
        key = f"smoke-{uuid.uuid4()}"
        body = {"model": "gpt-image-2", "prompt": "smoke test: a red door", "size": "1024x1024", "quality": "low"}
        url = f"{self.base_url}/images/generations"
        first = self.ok(self.http.post(url, json=body, headers=self.headers(**{"Idempotency-Key": key})))
        second = self.ok(self.http.post(url, json=body, headers=self.headers(**{"Idempotency-Key": key})))
        paths = [httpx.URL(answer["data"][0]["url"]).path for answer in (first, second)]
        if paths[0] != paths[1] or first["created"] != second["created"]:
            raise Failed(f"the replay is another answer: {paths}")
        return f"the same image and answer twice ({paths[0].rsplit('/', 2)[-2]})"

    def client_token(self) -> str:
        if not self.task:
            raise Skip("needs the async task (it reads it with the token)")
        minted = self.http.post(
            f"{self.base_url}/client_tokens",
            json={"expires_in": 300, "scope": ["tasks"]},
            headers=self.headers(),
        )
        token = self.ok(minted)["token"]
        as_token = {"Authorization": f"Bearer {token}"}
        read = self.ok(self.http.get(self.task["poll_url"], headers=as_token))
        if read["id"] != self.task["id"]:
            raise Failed(f"the token read task {read['id']}")
        refused = self.http.post(f"{self.base_url}/client_tokens", json={}, headers=as_token)
        if refused.status_code != 403:
            raise Failed(f"a token minted a token: HTTP {refused.status_code}")
        return "minted (scope tasks), read the task with it, refused outside its scope (403)"

    def cors_preflight(self) -> str:
        headers = {"Origin": self.origin, "Access-Control-Request-Method": "POST"}
        headers["Access-Control-Request-Headers"] = "authorization,content-type"
        response = self.http.options(f"{self.base_url}/images/generations", headers=headers)
        if response.status_code not in (200, 204):
            raise Failed(f"HTTP {response.status_code}")
        allowed = response.headers.get("access-control-allow-origin")
        if allowed not in (self.origin, "*"):
            raise Failed(f"origin {self.origin} not allowed (ORIGIN= one of CorsAllowOrigins): {allowed!r}")
        return f"{response.status_code}, allows {allowed} {response.headers.get('access-control-allow-methods')}"

    def usage(self) -> str:
        answer = self.ok(self.http.get(f"{self.base_url}/usage", params={"days": 1}, headers=self.headers()))
        if answer.get("object") != "usage" or "totals" not in answer:
            raise Failed(f"not a usage object: {str(answer)[:200]}")
        totals = answer["totals"]
        return f"today: {totals.get('requests')} request(s), {totals.get('images')} image(s)"

    def long_generation(self) -> str:
        if not self.simulator and not self.long:
            raise Skip("real upstream: LONG=1 to spend an image on a minute-long generation")
        self.spend(1)
        if self.simulator:
            response_started = time.monotonic()
            response = self.generate(f"smoke test: a slow one [simulate delay={self.long_seconds}s]")
            size: tuple[int, int] = SIZE
        else:
            response_started = time.monotonic()
            response = self.generate("smoke test: a detailed city at night", size="3840x2160", quality="high")
            size = (3840, 2160)
        took = time.monotonic() - response_started
        answer = self.ok(response)
        if took <= 60:
            raise Failed(f"answered in {took:.0f} s: not over 60 s, so it proves nothing")
        return f"200 after {took:.0f} s, {self.opened(answer['data'][0]['url'], size)}"

    def checks(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("health", self.health),
            ("generation", self.generation),
            ("streamed generation", self.streamed_generation),
            ("edit with a mask", self.edit_with_mask),
            ("async task", self.async_task),
            ("idempotency replay", self.idempotent_replay),
            ("client token", self.client_token),
            ("CORS preflight", self.cors_preflight),
            ("usage", self.usage),
            ("over 60 s", self.long_generation),
        ]

    def run(self) -> int:
        passed = failed = skipped = 0
        for name, check in self.checks():
            started = time.monotonic()
            try:
                detail = check()
            except Skip as reason:
                skipped += 1
                print(f"SKIP  {name}: {reason}", flush=True)
                continue
            except (Failed, httpx.HTTPError, KeyError, ValueError, OSError) as problem:
                failed += 1
                print(f"FAIL  {name}: {type(problem).__name__}: {problem} ({time.monotonic() - started:.1f} s)")
                continue
            passed += 1
            print(f"PASS  {name}: {detail} ({time.monotonic() - started:.1f} s)", flush=True)
        where = "simulator (free)" if self.simulator else f"real upstream, at most {self.max_images}"
        print(f"images asked for: {self.images_spent} ({where})")
        print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""), flush=True)
        return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(description="Black-box smoke test of a deployment of the image service.")
    parser.add_argument("--base-url", default=env.get("BASE_URL"), help="the API's base_url, ending in /v1")
    parser.add_argument("--api-key", default=env.get("API_KEY"), help="a key of the stack (API_KEY)")
    parser.add_argument("--long", action="store_true", default=env.get("LONG", "") not in ("", "0"))
    parser.add_argument("--max-images", type=int, default=int(env.get("MAX_IMAGES") or DEFAULT_MAX_IMAGES))
    parser.add_argument("--long-seconds", type=int, default=int(env.get("LONG_SECONDS") or DEFAULT_LONG_SECONDS))
    parser.add_argument("--origin", default=env.get("ORIGIN") or "https://smoke.example.com")
    args = parser.parse_args(argv)
    if not args.base_url or not args.api_key:
        parser.error("BASE_URL and API_KEY are required")
    smoke = Smoke(
        base_url=args.base_url.rstrip("/"),
        api_key=args.api_key,
        max_images=args.max_images,
        long=args.long,
        long_seconds=args.long_seconds,
        origin=args.origin,
    )
    print(f"smoke test of {smoke.base_url}", flush=True)
    try:
        return smoke.run()
    finally:
        smoke.http.close()


if __name__ == "__main__":
    sys.exit(main())
