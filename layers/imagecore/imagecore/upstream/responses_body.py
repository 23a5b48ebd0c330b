"""Reading the upstream's answer to ``POST /v1/responses``: a JSON ``response`` object (possibly after sub2api's
whitespace keep-alives) or ``text/event-stream`` events, each handed on as soon as it is whole.

Unlike an Images answer, a Responses answer is relayed event by event, so each event is parsed whole (the largest,
``response.output_item.done`` and ``response.completed``, carry a finished image's base64; an image is at most a
few tens of megabytes). The body may not outgrow ``MAX_RESPONSES_BODY_BYTES``.

``BodyError`` subclasses say why an answer cannot be used, ``StreamFailed`` that the upstream said it failed
(an ``error`` event, a ``response.failed`` event, or an ``{"error": ...}`` object under the 200).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from imagecore.upstream.reader import BodyIncomplete, BodyMalformed, BodyTooLarge, StreamFailed

# A streamed answer carries each image up to five times (three previews, the finished item, the final response).
MAX_RESPONSES_BODY_BYTES = 512 * 1024 * 1024

EventSink = Callable[[dict[str, Any]], None]


class ResponsesBody:
    """``feed`` the body's chunks as they come, then ``close`` for the final ``response`` object.

    With ``sse``, each event is parsed and given to ``on_event`` before the next one is read."""

    def __init__(self, *, sse: bool, on_event: EventSink | None, max_bytes: int = MAX_RESPONSES_BODY_BYTES) -> None:
        self.sse = sse
        self.on_event = on_event
        self.max_bytes = max_bytes
        self.received = 0
        self.events = 0
        self._buffer = bytearray()
        self._final: dict[str, Any] | None = None
        self._failure: Any = None

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.max_bytes:
            raise BodyTooLarge(f"the answer is over {self.max_bytes:,} bytes")
        if not self.sse:
            if self._buffer or chunk.strip():
                self._buffer += chunk if self._buffer else chunk.lstrip()
            return
        self._buffer += chunk.replace(b"\r\n", b"\n")
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                return
            block = bytes(self._buffer[:end])
            del self._buffer[: end + 2]
            self._dispatch(block)

    def close(self) -> dict[str, Any]:
        if self.sse:
            if self._buffer.strip():
                self._dispatch(bytes(self._buffer))
                self._buffer.clear()
            if self._failure is not None:
                raise StreamFailed(self._failure, after_events=self.events > 1)
            if self._final is None:
                raise BodyIncomplete("the event stream ended before response.completed")
            return self._final
        if not self._buffer:
            raise BodyIncomplete("the answer ended before its JSON")
        try:
            value = json.loads(bytes(self._buffer))
        except ValueError:
            raise BodyIncomplete("the answer's JSON was cut short or is not JSON") from None
        if not isinstance(value, dict):
            raise BodyMalformed("the answer is not a JSON object")
        if value.get("error") is not None and not value.get("output"):
            raise StreamFailed(value["error"], after_events=False)
        if value.get("object") != "response" or not isinstance(value.get("output"), list):
            raise BodyMalformed("the answer is not a response object")
        return value

    def _dispatch(self, block: bytes) -> None:
        data: list[str] = []
        for line in block.decode("utf-8", "replace").split("\n"):
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if not data:
            return  # a comment (keep-alive) or an event without data
        text = "\n".join(data)
        if text.strip() == "[DONE]":
            return
        try:
            event = json.loads(text)
        except ValueError:
            raise BodyMalformed("an event's data is not JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise BodyMalformed("an event without a type")
        self.events += 1
        kind = event["type"]
        if kind == "error":
            self._failure = event.get("error") if isinstance(event.get("error"), dict) else event
            return
        if kind == "response.failed":
            response = event.get("response")
            error = response.get("error") if isinstance(response, dict) else None
            self._failure = error or {"message": "the response failed", "type": "server_error"}
            return
        if kind in ("response.completed", "response.incomplete") and isinstance(event.get("response"), dict):
            self._final = event["response"]
        if self.on_event is not None:
            self.on_event(event)
