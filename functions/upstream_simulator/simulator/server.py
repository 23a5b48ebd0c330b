"""A stand-in for sub2api serving gpt-image-2, for the local stack, the tests, the benchmark and a test deployment
(``UpstreamSimulator=true``: this package runs as a function behind the Lambda Web Adapter, ``__main__``).

It serves ``/v1/images/generations``, ``/v1/images/edits`` (multipart, like sub2api: ``image``, ``image[]``
or ``image[N]`` file parts and ``mask``) and ``/v1/responses`` (``simulator.responses``). It renders
real images of the requested size and format with Pillow, answers in the upstream's shape with realistic usage
figures, and can be told to misbehave the way the real one does: latency, sub2api's whitespace keep-alive
before the JSON, errors under a 200, 5xx, 429 with Retry-After, garbage.

With ``stream: true`` it answers server-sent events like the upstream: ``partial_images`` partial images
(``image_generation.partial_image`` / ``image_edit.partial_image``), then one ``*.completed`` event per image with
``usage``, the latency spread between them.

A request asks for its own delay with ``[simulate delay=65s]`` in its prompt (it passes through the service to
the upstream untouched) or an ``X-Simulator-Delay-Ms`` header: that call takes that long, so a deployment can
prove that a minute-long generation still answers.

Control endpoints (not part of the upstream API):
- ``POST /_simulator/faults`` ``{"responses": [{"status": 503}, ...]}`` queues scripted answers, one per call.
  An entry with ``status`` answers that status with an error object (``error``, ``retry_after``, ``garbage``,
  ``latency_ms``, ``keepalive_ms`` refine it). An entry with ``mode`` answers the real images, damaged:

  - ``cut``: a 200 whose body stops halfway (``fraction``, default 0.5) and the connection closes;
  - ``keepalive_cut``: keep-alive whitespace (``keepalives``, default 3), then the connection closes;
  - ``odd_metadata``: the answer with ``fields`` laid over its top level (``{"created": 1e20}``...);
  - ``bomb``: ``data[0]`` is a PNG whose header declares ``width`` x ``height`` (default 50000x50000);
  - ``truncated_image``: ``data[0]`` is a PNG cut short of its end;
  - ``oversized``: a 200 whose ``b64_json`` runs on for ``bytes`` bytes (streamed, never built in memory);
  - ``sse_error``: (with ``stream``) an ``error`` event after ``after_partials`` partial images;
  - ``sse_cut``: (with ``stream``) the connection closes after ``after_partials`` partial images;
- ``GET /_simulator/stats`` counts calls and shows the last request received (headers, and the JSON body or the
  form fields and file parts with their names, sizes and SHA-256), and the last ``RECENT_REQUESTS`` of them, oldest
  first (a test on a shared stack finds its own there, whatever async work ran meanwhile);
- ``POST /_simulator/options`` ``{"latency_ms": 40000, "keepalive_ms": 0}`` changes the behaviour until the
  next reset (a test that needs a slow upstream asks for one);
- ``POST /_simulator/reset`` clears all three.
They are off (404) when ``SimulatorOptions.control`` is false, as in a deployment.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from werkzeug.wrappers import Request, Response

from imagecore.domain.models import MODELS, parse_size

from .rendering import declared_size_png, estimate_usage, render_image, runaway_image

# "[simulate delay=65s]" (or 1500ms) in a prompt: that call takes that long.
DELAY_MARKER = re.compile(r"\[simulate delay=(\d+(?:\.\d+)?)(ms|s)\]")
DELAY_HEADER = "X-Simulator-Delay-Ms"
MAX_DELAY_MS = 14 * 60 * 1000  # under a function's 15 minutes
READY_PATH = "/_ready"


@dataclass
class SimulatorOptions:
    api_key: str | None = None  # when set, requests must carry it as a bearer token
    latency_ms: int = 0  # how long "generation" takes
    keepalive_ms: int = 0  # while generating, write " \n" this often (sub2api's keep-alive)
    account_id: str | None = "acct-local-simulator"
    control: bool = True  # the /_simulator/* endpoints (faults, stats, options, reset)


RECENT_REQUESTS = 20


@dataclass
class _State:
    faults: deque[dict[str, Any]] = field(default_factory=deque)
    calls: int = 0
    recent_requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_REQUESTS))
    lock: threading.Lock = field(default_factory=threading.Lock)


class UpstreamSimulator:
    """A WSGI app; ``werkzeug.serving.make_server(host, port, simulator)`` serves it."""

    def __init__(self, options: SimulatorOptions | None = None) -> None:
        self.options = options or SimulatorOptions()
        self._initial_options = self.options
        self._state = _State()

    # --- control -------------------------------------------------------------------------------------------
    def queue_faults(self, *responses: dict[str, Any]) -> None:
        with self._state.lock:
            self._state.faults.extend(responses)

    def reset(self) -> None:
        with self._state.lock:
            self._state.faults.clear()
            self._state.calls = 0
            self._state.recent_requests.clear()
            self.options = self._initial_options

    def set_options(self, **changes: Any) -> None:
        with self._state.lock:
            self.options = replace(
                self.options,
                latency_ms=int(changes.get("latency_ms", self.options.latency_ms)),
                keepalive_ms=int(changes.get("keepalive_ms", self.options.keepalive_ms)),
            )

    @property
    def calls(self) -> int:
        return self._state.calls

    @property
    def recent_requests(self) -> list[dict[str, Any]]:
        with self._state.lock:
            return list(self._state.recent_requests)

    @property
    def last_request(self) -> dict[str, Any] | None:
        recent = self.recent_requests
        return recent[-1] if recent else None

    # --- WSGI ----------------------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        return self._dispatch(request)(environ, start_response)

    # (method, path ending) -> the method that answers it: the upstream's routes, one line each.
    ROUTES: dict[tuple[str, str], Callable[[UpstreamSimulator, Request], Response]] = {}

    def _dispatch(self, request: Request) -> Response:
        path = request.path.rstrip("/")
        if path == READY_PATH and request.method == "GET":  # the Lambda Web Adapter's readiness check
            return _json(200, {"ready": True})
        if path.startswith("/_simulator/") and self.options.control:
            return self._control(request, path)
        for (method, ending), answer in self.ROUTES.items():
            if request.method == method and path.endswith(ending):
                return answer(self, request)
        return _json(404, _error("Not found", "invalid_request_error", "not_found"))

    def _control(self, request: Request, path: str) -> Response:
        if path == "/_simulator/faults" and request.method == "POST":
            self.queue_faults(*(request.get_json(force=True) or {}).get("responses", []))
            return _json(200, {"queued": len(self._state.faults)})
        if path == "/_simulator/stats":
            stats = {"calls": self.calls, "last_request": self.last_request, "recent_requests": self.recent_requests}
            return _json(200, stats)
        if path == "/_simulator/options" and request.method == "POST":
            self.set_options(**(request.get_json(force=True) or {}))
            return _json(200, {"latency_ms": self.options.latency_ms, "keepalive_ms": self.options.keepalive_ms})
        if path == "/_simulator/reset" and request.method == "POST":
            self.reset()
            return _json(200, {"reset": True})
        return _json(404, _error("Not found", "invalid_request_error", "not_found"))

    def _generations(self, request: Request) -> Response:
        try:
            body = json.loads(request.get_data() or b"null")
        except ValueError:
            body = None
        early, damage = self._receive(request, {"json": body})
        if early is not None:
            return early
        return self._images(body, self._headers(), damage=damage, delay_ms=_header_delay(request))

    def _edits(self, request: Request) -> Response:
        """Multipart like sub2api's: image / image[] / image[N] file parts and an optional mask; 400 without a file."""
        fields = {name: request.form.get(name) for name in request.form}
        parts: list[dict[str, Any]] = [
            {
                "name": name,
                "filename": storage.filename,
                "content_type": storage.mimetype,
                "bytes": len(data := storage.read()),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            for name, storage in request.files.items(multi=True)
        ]
        early, damage = self._receive(request, {"form": fields, "files": parts})
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
        for name in ("partial_images",):
            if name in body:
                body[name] = int(body[name])
        if "stream" in body:
            body["stream"] = str(body["stream"]).lower() == "true"
        body.setdefault("model", "gpt-image-2")
        # Edit input tokens: the prompt plus each reference image (a flat 765 per image here).
        return self._images(
            body,
            headers,
            extra_input_tokens=765 * len(images),
            damage=damage,
            kind="image_edit",
            delay_ms=_header_delay(request),
        )

    def _receive(self, request: Request, summary: dict[str, Any]) -> tuple[Response | None, dict[str, Any] | None]:
        """Count the call, remember what came, and answer early when a fault is queued or the key is wrong;
        a fault with a ``mode`` is handed back, to damage the real answer."""
        with self._state.lock:
            self._state.calls += 1
            self._state.recent_requests.append(
                {
                    "path": request.path,
                    "headers": {k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"},
                    "authorization_ok": self._authorized(request),
                    **summary,
                }
            )
            fault = self._state.faults.popleft() if self._state.faults else None
        headers = self._headers()
        if not self._authorized(request):
            return _json(401, _error("Invalid API key", "authentication_error", "invalid_api_key"), headers), None
        if fault is not None and "mode" in fault:
            return None, fault
        if fault is not None:
            return self._fault(fault, headers), None
        return None, None

    def _headers(self) -> dict[str, str]:
        headers = {"x-request-id": f"req_{secrets.token_hex(12)}"}
        if self.options.account_id:
            headers["x-account-id"] = self.options.account_id
        return headers

    def _images(
        self,
        body: Any,
        headers: dict[str, str],
        extra_input_tokens: int = 0,
        damage: dict[str, Any] | None = None,
        kind: str = "image_generation",
        delay_ms: int | None = None,
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
        latency_ms = requested_delay_ms(prompt, delay_ms, self.options.latency_ms)
        images = [
            render_image(width, height, output_format, body.get("output_compression"), f"{prompt}#{i}")
            for i in range(n)
        ]
        fields = {
            "size": f"{width}x{height}",
            "quality": "medium" if quality == "auto" else quality,
            "output_format": output_format,
            "background": body.get("background") or "opaque",
        }
        usage = estimate_usage(prompt, size, fields["quality"], n, extra_input_tokens)
        if body.get("stream"):
            partials = [
                render_image(width, height, output_format, body.get("output_compression"), f"{prompt}#partial{k}")
                for k in range(int(body.get("partial_images") or 0))
            ]
            return self._events(kind, images, partials, fields, usage, headers, damage or {}, latency_ms)
        payload = {
            "created": int(time.time()),
            "data": [
                {"b64_json": base64.b64encode(data).decode("ascii"), "revised_prompt": f"{prompt} (as drawn)"}
                for data in images
            ],
            "model": body["model"],
            **fields,
            "usage": usage,
        }
        if damage is not None:
            return self._damaged(payload, headers, damage, latency_ms)
        return self._respond(200, payload, headers, latency_ms, self.options.keepalive_ms)

    def _damaged(
        self, payload: dict[str, Any], headers: dict[str, str], damage: dict[str, Any], latency_ms: int
    ) -> Response:
        """The real answer, broken the way a faulty upstream or network breaks it."""
        mode = damage["mode"]
        if mode == "odd_metadata":
            payload.update(damage.get("fields") or {})
        elif mode == "bomb":
            bomb = declared_size_png(int(damage.get("width", 50_000)), int(damage.get("height", 50_000)))
            payload["data"][0]["b64_json"] = base64.b64encode(bomb).decode("ascii")
        elif mode == "truncated_image":
            whole = base64.b64decode(payload["data"][0]["b64_json"])
            payload["data"][0]["b64_json"] = base64.b64encode(whole[: len(whole) * 2 // 3]).decode("ascii")
        elif mode in ("cut", "keepalive_cut"):
            body = json.dumps(payload).encode("utf-8")
            if mode == "cut":
                prefix = body[: int(len(body) * float(damage.get("fraction", 0.5)))]
            else:
                prefix = b" \n" * int(damage.get("keepalives", 3))
            return _cut_off(prefix, headers, "application/json")
        elif mode == "oversized":
            return Response(
                runaway_image(int(damage.get("bytes", 64 << 20))),
                status=200,
                headers=headers,
                content_type="application/json",
            )
        return self._respond(200, payload, headers, latency_ms, self.options.keepalive_ms)

    def _events(
        self,
        kind: str,
        images: list[bytes],
        partials: list[bytes],
        fields: dict[str, Any],
        usage: dict[str, Any],
        headers: dict[str, str],
        damage: dict[str, Any],
        latency_ms: int,
    ) -> Response:
        """The upstream's SSE answer: the partial images, then one completed event per image; the latency is
        spread over the events, so a client sees them arrive one by one."""
        pause = latency_ms / 1000 / (len(partials) + 1)
        mode = damage.get("mode")
        stop_after = int(damage.get("after_partials", 0)) if mode in ("sse_error", "sse_cut") else None

        def stream() -> Iterator[bytes]:
            for index, data in enumerate(partials):
                if index == stop_after:
                    break
                time.sleep(pause)
                event = {"type": f"{kind}.partial_image", "b64_json": _b64(data), "partial_image_index": index}
                yield _sse(event | fields | {"created_at": int(time.time())})
            if mode == "sse_error":
                error = _error("simulated failure while generating", "server_error", "upstream_error")
                yield _sse({"type": "error", **error}, name="error")
                return
            if mode == "sse_cut":
                raise ConnectionAbortedError("simulated cut after the partial images")
            time.sleep(pause)
            for data in images:
                completed = {"type": f"{kind}.completed", "b64_json": _b64(data), "created_at": int(time.time())}
                yield _sse(completed | fields | {"usage": usage})

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


UpstreamSimulator.ROUTES.update(
    {
        ("POST", "/images/generations"): UpstreamSimulator._generations,
        ("POST", "/images/edits"): UpstreamSimulator._edits,
    }
)


def requested_delay_ms(prompt: str, header_ms: int | None, default_ms: int) -> int:
    """How long this call takes: the prompt's ``[simulate delay=...]``, else the header's, else the default."""
    found = DELAY_MARKER.search(prompt)
    if found:
        value, unit = float(found.group(1)), found.group(2)
        return min(MAX_DELAY_MS, round(value * (1000 if unit == "s" else 1)))
    if header_ms is not None:
        return min(MAX_DELAY_MS, header_ms)
    return default_ms


def _header_delay(request: Request) -> int | None:
    value = request.headers.get(DELAY_HEADER, "")
    return int(value) if value.isdigit() else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _sse(event: dict[str, Any], name: str | None = None) -> bytes:
    return f"event: {name or event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _cut_off(prefix: bytes, headers: dict[str, str], content_type: str) -> Response:
    """A 200 that sends ``prefix`` and then drops the connection (the status line is already committed)."""

    def stream() -> Iterator[bytes]:
        yield prefix
        raise ConnectionAbortedError("simulated cut after a committed 200")

    return Response(stream(), status=200, headers=headers, content_type=content_type)


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status=status, headers=headers or {}, content_type="application/json")


def _error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}
