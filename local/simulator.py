"""A stand-in for sub2api serving gpt-image-2, for the local stack, the tests and the benchmark.

It serves ``/v1/images/generations`` and ``/v1/images/edits`` (multipart, like sub2api: ``image``, ``image[]``
or ``image[N]`` file parts and ``mask``). It renders real images of the requested size and format with
Pillow, answers in the upstream's shape with realistic usage figures, and can be told to misbehave the way the
real one does: latency, sub2api's whitespace keep-alive before the JSON, errors under a 200, 5xx, 429 with
Retry-After, garbage.

Control endpoints (not part of the upstream API):
- ``POST /_simulator/faults`` ``{"responses": [{"status": 503}, ...]}`` queues scripted answers, one per call;
- ``GET /_simulator/stats`` counts calls and shows the last request received (headers, and the JSON body or the
  form fields and file parts with their names, sizes and SHA-256);
- ``POST /_simulator/options`` ``{"latency_ms": 40000, "keepalive_ms": 0}`` changes the behaviour until the
  next reset (a test that needs a slow upstream asks for one);
- ``POST /_simulator/reset`` clears all three.

With ``stream: true`` it answers like OpenAI's image stream (``text/event-stream``): ``partial_images`` previews
(``image_generation.partial_image``; ``image_edit.*`` for edits), then one ``*.completed`` event per image with
the usage, spread over the latency. A queued fault ``{"stream_error_after": 1}`` sends that many events and then
``event: error`` (the failure after the first event that only a stream can have).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from PIL import Image, ImageDraw
from werkzeug.wrappers import Request, Response

from imagecore.models import MODELS, parse_size

# Output tokens per image at 1024x1024 for each quality (OpenAI's published table for GPT image models).
_TOKENS_1M = {"low": 272, "medium": 1056, "high": 4160}
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


@dataclass
class SimulatorOptions:
    api_key: str | None = None  # when set, requests must carry it as a bearer token
    latency_ms: int = 0  # how long "generation" takes
    keepalive_ms: int = 0  # while generating, write " \n" this often (sub2api's keep-alive)
    account_id: str | None = "acct-local-simulator"


@dataclass
class _State:
    faults: deque[dict[str, Any]] = field(default_factory=deque)
    calls: int = 0
    last_request: dict[str, Any] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def estimate_usage(prompt: str, size: str, quality: str, n: int, image_tokens: int = 0) -> dict[str, Any]:
    width, height = (1024, 1024) if size == "auto" else map(int, size.split("x"))
    per_image = _TOKENS_1M.get(quality, _TOKENS_1M["medium"]) * (width * height) / (1024 * 1024)
    text_tokens = max(1, math.ceil(len(prompt) / 4))
    output_tokens = round(per_image) * n
    return {
        "input_tokens": text_tokens + image_tokens,
        "output_tokens": output_tokens,
        "total_tokens": text_tokens + image_tokens + output_tokens,
        "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
    }


@lru_cache(maxsize=32)
def render_image(width: int, height: int, output_format: str, compression: int | None, seed: str) -> bytes:
    """A real picture: colour gradients, shapes and grain decided by ``seed`` (the prompt), so different prompts
    give different images and the files compress like photographs rather than flat colour."""
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    gradient = Image.linear_gradient("L")
    red = gradient.resize((width, height))
    green = gradient.rotate(90).resize((width, height))
    blue = Image.radial_gradient("L").resize((width, height))
    image = Image.merge("RGB", (red, green, blue))
    tint = Image.new("RGB", (width, height), (digest[0], digest[1], digest[2]))
    image = Image.blend(image, tint, 0.35)
    draw = ImageDraw.Draw(image)
    for i in range(6):
        x, y = digest[3 + i] / 255 * width, digest[9 + i] / 255 * height
        r = (0.05 + digest[15 + i] / 255 * 0.2) * min(width, height)
        colour = (digest[21 + i % 8], digest[(22 + i) % 32], digest[(23 + i) % 32])
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour, outline=(255, 255, 255), width=max(2, width // 400))
    grain = Image.effect_noise((width, height), 24).convert("RGB")
    image = Image.blend(image, grain, 0.12)
    out = io.BytesIO()
    options: dict[str, Any] = {}
    if output_format == "png":
        options["compress_level"] = 1
    else:
        options["quality"] = 85 if compression is None else max(1, 100 - compression)
    image.save(out, _PIL_FORMATS[output_format], **options)
    return out.getvalue()


def render_preview(final: bytes, width: int, height: int, output_format: str, index: int, count: int) -> bytes:
    """A preview the way a partial image looks: the final picture, coarser the earlier it comes."""
    coarse = max(4, 2 ** (count - index + 2))
    with Image.open(io.BytesIO(final)) as image:
        small = image.convert("RGB").resize((max(1, width // coarse), max(1, height // coarse)))
        preview = small.resize((width, height), Image.Resampling.NEAREST)
    out = io.BytesIO()
    options: dict[str, Any] = {"compress_level": 1} if output_format == "png" else {"quality": 60}
    preview.save(out, _PIL_FORMATS[output_format], **options)
    return out.getvalue()


class UpstreamSimulator:
    """A WSGI app; ``werkzeug.serving.make_server(host, port, simulator)`` serves it."""

    def __init__(self, options: SimulatorOptions | None = None) -> None:
        self.options = options or SimulatorOptions()
        self._initial_options = self.options
        self._state = _State()
        self._stream_fault: dict[str, Any] | None = None

    # --- control -------------------------------------------------------------------------------------------
    def queue_faults(self, *responses: dict[str, Any]) -> None:
        with self._state.lock:
            self._state.faults.extend(responses)

    def reset(self) -> None:
        with self._state.lock:
            self._state.faults.clear()
            self._state.calls = 0
            self._state.last_request = None
            self.options = self._initial_options

    def set_options(self, **changes: Any) -> None:
        from dataclasses import replace

        known = {name: int(value) for name, value in changes.items() if name in ("latency_ms", "keepalive_ms")}
        with self._state.lock:
            self.options = replace(self.options, **known)

    @property
    def calls(self) -> int:
        return self._state.calls

    @property
    def last_request(self) -> dict[str, Any] | None:
        return self._state.last_request

    # --- WSGI ----------------------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        return self._dispatch(request)(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        path = request.path.rstrip("/")
        if path == "/_simulator/faults" and request.method == "POST":
            self.queue_faults(*(request.get_json(force=True) or {}).get("responses", []))
            return _json(200, {"queued": len(self._state.faults)})
        if path == "/_simulator/stats":
            return _json(200, {"calls": self.calls, "last_request": self.last_request})
        if path == "/_simulator/options" and request.method == "POST":
            self.set_options(**(request.get_json(force=True) or {}))
            return _json(200, {"latency_ms": self.options.latency_ms, "keepalive_ms": self.options.keepalive_ms})
        if path == "/_simulator/reset" and request.method == "POST":
            self.reset()
            return _json(200, {"reset": True})
        if path.endswith("/images/generations") and request.method == "POST":
            return self._generations(request)
        if path.endswith("/images/edits") and request.method == "POST":
            return self._edits(request)
        return _json(404, _error("Not found", "invalid_request_error", "not_found"))

    def _generations(self, request: Request) -> Response:
        try:
            body = json.loads(request.get_data() or b"null")
        except ValueError:
            body = None
        early = self._receive(request, {"json": body})
        if early is not None:
            return early
        return self._images(body, self._headers(), kind="image_generation")

    def _edits(self, request: Request) -> Response:
        """Multipart like sub2api's: image / image[] / image[N] file parts and an optional mask; 400 without a file."""
        fields = {name: request.form.get(name) for name in request.form}
        parts = [
            {
                "name": name,
                "filename": storage.filename,
                "content_type": storage.mimetype,
                "bytes": len(data := storage.read()),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            for name, storage in request.files.items(multi=True)
        ]
        early = self._receive(request, {"form": fields, "files": parts})
        if early is not None:
            return early
        headers = self._headers()
        images = [p for p in parts if p["name"] in ("image", "image[]") or p["name"].startswith("image[")]
        if not images:
            return _json(400, _error("image is required", "invalid_request_error", "missing_required_parameter"))
        body: dict[str, Any] = dict(fields)
        if "n" in body:
            body["n"] = int(body["n"])
        if "output_compression" in body:
            body["output_compression"] = int(body["output_compression"])
        body.setdefault("model", "gpt-image-2")
        # Edit input tokens: the prompt plus each reference image (a flat 765 per image here).
        if "partial_images" in body:
            body["partial_images"] = int(body["partial_images"])
        if "stream" in body:
            body["stream"] = str(body["stream"]).lower() == "true"
        return self._images(body, headers, extra_input_tokens=765 * len(images), kind="image_edit")

    def _receive(self, request: Request, summary: dict[str, Any]) -> Response | None:
        """Count the call, remember what came, and answer early when a fault is queued or the key is wrong."""
        with self._state.lock:
            self._state.calls += 1
            self._state.last_request = {
                "path": request.path,
                "headers": {k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"},
                "authorization_ok": self._authorized(request),
                **summary,
            }
            fault = self._state.faults.popleft() if self._state.faults else None
        headers = self._headers()
        if not self._authorized(request):
            return _json(401, _error("Invalid API key", "authentication_error", "invalid_api_key"), headers)
        if fault is not None and "stream_error_after" in fault:
            self._stream_fault = fault  # played out by the stream itself, after its first events
            return None
        if fault is not None:
            return self._fault(fault, headers)
        return None

    def _headers(self) -> dict[str, str]:
        headers = {"x-request-id": f"req_{secrets.token_hex(12)}"}
        if self.options.account_id:
            headers["x-account-id"] = self.options.account_id
        return headers

    def _images(
        self, body: Any, headers: dict[str, str], extra_input_tokens: int = 0, kind: str = "image_generation"
    ) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            return _json(400, _error("prompt is required", "invalid_request_error", "missing_required_parameter"))
        if body.get("model") not in MODELS:
            return _json(400, _error("Unsupported model", "invalid_request_error", "invalid_value"), headers)
        size = str(body.get("size") or "auto")
        try:
            width, height = (1024, 1024) if size == "auto" else (parse_size(size).width, parse_size(size).height)
        except ValueError as exc:
            return _json(400, _error(str(exc), "invalid_request_error", "invalid_value"), headers)
        output_format = str(body.get("output_format") or "png")
        quality = str(body.get("quality") or "auto")
        n = int(body.get("n") or 1)
        prompt = body["prompt"]
        images = [
            render_image(width, height, output_format, body.get("output_compression"), f"{prompt}#{i}")
            for i in range(n)
        ]
        payload = {
            "created": int(time.time()),
            "data": [
                {"b64_json": base64.b64encode(data).decode("ascii"), "revised_prompt": f"{prompt} (as drawn)"}
                for data in images
            ],
            "model": body["model"],
            "size": f"{width}x{height}",
            "quality": "medium" if quality == "auto" else quality,
            "output_format": output_format,
            "background": body.get("background") or "opaque",
            "usage": estimate_usage(prompt, size, "medium" if quality == "auto" else quality, n, extra_input_tokens),
        }
        if body.get("stream") is True:
            fault, self._stream_fault = self._stream_fault, None
            return self._stream(kind, payload, images, int(body.get("partial_images") or 0), headers, fault)
        return self._respond(200, payload, headers, self.options.latency_ms, self.options.keepalive_ms)

    def _stream(
        self,
        kind: str,
        payload: dict[str, Any],
        images: list[bytes],
        partials: int,
        headers: dict[str, str],
        fault: dict[str, Any] | None,
    ) -> Response:
        """OpenAI's image stream: previews first (coarser renderings of the first image), then each image."""
        fields = {k: payload[k] for k in ("size", "quality", "background", "output_format")}
        width, height = map(int, payload["size"].split("x"))
        steps = partials + len(images)
        pause = self.options.latency_ms / 1000 / max(1, steps)
        events: list[tuple[str, dict[str, Any]]] = []
        for index in range(partials):
            preview = render_preview(images[0], width, height, payload["output_format"], index, partials)
            events.append(
                (
                    f"{kind}.partial_image",
                    {
                        "type": f"{kind}.partial_image",
                        "b64_json": base64.b64encode(preview).decode("ascii"),
                        "partial_image_index": index,
                        "created_at": payload["created"],
                        **fields,
                    },
                )
            )
        for data in images:
            events.append(
                (
                    f"{kind}.completed",
                    {
                        "type": f"{kind}.completed",
                        "b64_json": base64.b64encode(data).decode("ascii"),
                        "created_at": payload["created"],
                        **fields,
                        "usage": payload["usage"],
                    },
                )
            )
        cut = int(fault["stream_error_after"]) if fault is not None else None

        def stream() -> Iterator[bytes]:
            for number, (event, data) in enumerate(events):
                if cut is not None and number == cut:
                    error = (fault or {}).get("error") or _error(
                        "simulated failure mid-stream", "server_error", "upstream_error"
                    )["error"]
                    yield f"event: error\ndata: {json.dumps({'type': 'error', 'error': error})}\n\n".encode()
                    return
                time.sleep(pause)
                yield f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()

        return Response(stream(), status=200, headers=headers, content_type="text/event-stream")

    def _fault(self, fault: dict[str, Any], headers: dict[str, str]) -> Response:
        status = int(fault.get("status", 500))
        if "retry_after" in fault:
            headers["Retry-After"] = str(fault["retry_after"])
        if fault.get("garbage"):
            return Response(b"<html>bad gateway</html>", status=status, headers=headers, content_type="text/html")
        error = fault.get("error") or _error(f"simulated upstream fault {status}", "upstream_error", None)["error"]
        return self._respond(
            status,
            {"error": error},
            headers,
            int(fault.get("latency_ms", self.options.latency_ms)),
            int(fault.get("keepalive_ms", self.options.keepalive_ms)),
        )

    def _authorized(self, request: Request) -> bool:
        if not self.options.api_key:
            return True
        return request.headers.get("Authorization", "") == f"Bearer {self.options.api_key}"

    @staticmethod
    def _respond(
        status: int, payload: dict[str, Any], headers: dict[str, str], latency_ms: int, keepalive_ms: int
    ) -> Response:
        body = json.dumps(payload).encode("utf-8")
        if keepalive_ms <= 0:
            time.sleep(latency_ms / 1000)
            return Response(body, status=status, headers=headers, content_type="application/json")

        def stream() -> Iterator[bytes]:
            # sub2api's keep-alive: whitespace commits the status line, the JSON (or an error) comes last.
            deadline = time.monotonic() + latency_ms / 1000
            while time.monotonic() < deadline:
                yield b" \n"
                time.sleep(min(keepalive_ms / 1000, max(0.0, deadline - time.monotonic())))
            yield body

        return Response(stream(), status=status, headers=headers, content_type="application/json")


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status=status, headers=headers or {}, content_type="application/json")


def _error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}
