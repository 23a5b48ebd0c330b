"""Reading an upstream answer: one pipeline for the three framings sub2api uses, with one set of limits. This
module holds the JSON scanner and the limits; ``upstream.bodies`` reads the JSON and SSE framings with them,
``upstream.fields`` normalises what is not an image.

The framings are a buffered JSON body, the same JSON after whitespace keep-alives (sub2api writes ``" \\n"``
while it waits, which commits the 200), and ``text/event-stream`` (``stream: true``). All three are read as
they arrive, chunk by chunk:

- keep-alive whitespace is skipped, never kept;
- every image string (``data[i].b64_json`` in a JSON body, ``b64_json`` in an SSE event) is base64-decoded
  while it is read, so the base64 text is never held whole, and each finished image is inspected and handed to
  a sink before the next one is read: one image in flight, whatever ``n``;
- everything else (``created``, ``usage``, ``model``, ``size``, ``quality``, ``output_format``, ``background``,
  ``revised_prompt``...) is kept as text and parsed as JSON, so odd values reach the caller's normalisation as
  they came;
- a string holding JSON escapes (``\\/``) falls back to a full parse of that one string;
- the body may not outgrow the largest answer the request can have (``ReadLimits.for_request``), an image may
  not outgrow what its size allows, and the small fields may not outgrow ``max_fields_bytes``.

``BodyError`` and its subclasses say why an answer cannot be used; the upstream client turns them into the
domain errors (a committed 200 that is cut short is never asked again: it was billed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pybase64

from imagecore.domain.images import ImageInfo
from imagecore.domain.models import MAX_PIXELS, parse_size

# JSON around the images (usage, revised prompts, keys): far more than any real answer carries.
MAX_FIELDS_BYTES = 1 << 20
# PNG chunk headers, metadata and filter bytes beyond the raw pixels of the largest image a size allows.
IMAGE_SLACK_BYTES = 1 << 20
BODY_SLACK_BYTES = 1 << 20

_WHITESPACE = b" \t\r\n"
_SCALAR_END = re.compile(rb'[ \t\r\n,:\[\]{}"]')


def find_either(buf: bytes, first: bytes, second: bytes, start: int) -> int:
    """The position of the first ``first`` or ``second`` from ``start``, or -1 (two memchr scans beat a regex
    character class by an order of magnitude on megabytes of base64)."""
    one = buf.find(first, start)
    two = buf.find(second, start, len(buf) if one < 0 else one)
    return two if two >= 0 else one


def _skip_whitespace(buf: bytes, pos: int) -> int:
    """The position of the first byte from ``pos`` that is not JSON whitespace, or -1: keep-alives are stepped
    over a window at a time, never kept."""
    while pos < len(buf):
        if buf[pos] not in _WHITESPACE:
            return pos
        window = buf[pos : pos + 65536]
        rest = window.lstrip(_WHITESPACE)
        if rest:
            return pos + len(window) - len(rest)
        pos += len(window)
    return -1


class BodyError(Exception):
    """An upstream answer that cannot be used. ``code`` is the OpenAI error code the caller gets (502)."""

    code = "upstream_error"


class BodyIncomplete(BodyError):
    """The answer stopped before it was whole: a cut connection, or keep-alives then nothing."""

    code = "upstream_incomplete"


class BodyTooLarge(BodyError):
    """The answer (or one image, or its small fields) is larger than the request can produce."""

    code = "upstream_too_large"


class BodyMalformed(BodyError):
    """Not the JSON (or SSE) the upstream speaks."""


class ImageUnusable(BodyError):
    """An image string that is not base64, or bytes that are not a whole PNG, JPEG or WebP within the limits."""


@dataclass
class StreamFailed(Exception):
    """An SSE ``error`` event: the upstream's error object, and whether an image event came before it."""

    error: Any
    after_events: bool


@dataclass(frozen=True)
class ReadLimits:
    max_body_bytes: int
    max_image_bytes: int
    max_pixels: int = MAX_PIXELS
    max_fields_bytes: int = MAX_FIELDS_BYTES

    @classmethod
    def for_request(cls, body: dict[str, Any]) -> ReadLimits:
        """The largest answer the request can have: ``n`` images (and their partials when streamed), each at most
        4 bytes a pixel of the requested size (any size when ``auto``), as base64, plus slack."""
        pixels = MAX_PIXELS
        try:
            size = parse_size(str(body.get("size") or "auto"))
            pixels = size.width * size.height
        except ValueError:
            pass
        n = _small_int(body.get("n"), default=1, high=10)
        partials = _small_int(body.get("partial_images"), default=0, high=3) if body.get("stream") else 0
        image_bytes = pixels * 4 + IMAGE_SLACK_BYTES
        images = n * (1 + partials)
        return cls(max_body_bytes=images * (image_bytes * 4 // 3 + 4) + BODY_SLACK_BYTES, max_image_bytes=image_bytes)


def _small_int(value: Any, *, default: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return min(max(number, 1 if default else 0), high)


@dataclass(frozen=True)
class ReadImage:
    """One decoded and inspected image with the small fields of the object that carried it."""

    index: int
    data: bytes
    info: ImageInfo
    fields: dict[str, Any]


ImageCallback = Callable[[ReadImage], None]


class _Base64Value:
    """One base64 string value, decoded as its pieces arrive (4 characters at a time, the rest carried)."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        # The decoded pieces, joined once at the end: one copy of the image, not one per append plus one more
        # to turn a growing bytearray into bytes.
        self._pieces: list[bytes] = []
        self._size = 0
        self._carry = b""
        self._escaped: bytearray | None = None

    def write(self, piece: bytes) -> None:
        if self._escaped is None and b"\\" in piece:
            # JSON escapes inside base64 (an encoder writing "\/"): keep the rest raw and parse it as JSON.
            self._escaped = bytearray(self._carry)
            self._carry = b""
        if self._escaped is not None:
            self._escaped += piece
            if len(self._escaped) > self._max_bytes * 2:
                raise BodyTooLarge("an image is larger than its size allows")
            return
        view = memoryview(piece)
        if self._carry:  # complete the carried quantum alone rather than copying the whole piece behind it
            need = 4 - len(self._carry)
            self._carry += piece[:need]
            if len(self._carry) < 4:
                return
            self._decode(self._carry)
            view = view[need:]
        whole = len(view) - len(view) % 4
        if whole:
            self._decode(view[:whole])
        self._carry = bytes(view[whole:])

    def finish(self) -> bytes:
        tail: bytes = self._carry
        if self._escaped is not None:
            try:
                text = json.loads(b'"' + bytes(self._escaped) + b'"')
                tail = "".join(text.split()).encode("ascii")
            except (ValueError, UnicodeEncodeError):
                raise ImageUnusable("is not base64") from None
        if tail:
            self._decode(tail)
        if not self._size:
            raise ImageUnusable("is empty")
        data = b"".join(self._pieces)
        self._pieces, self._size = [], 0
        return data

    def _decode(self, text: bytes | memoryview) -> None:
        try:
            piece = pybase64.b64decode(text, validate=True)
        except ValueError:  # binascii.Error is a ValueError
            raise ImageUnusable("is not base64") from None
        self._size += len(piece)
        if self._size > self._max_bytes:
            raise BodyTooLarge("an image is larger than its size allows")
        self._pieces.append(piece)


@dataclass
class _Frame:
    kind: bytes  # b"{" or b"["
    path: tuple[str, ...]  # the keys from the root to this container ("[]" for an array element)
    start: int  # where the container starts in the kept text
    key: str | None = None
    expect_key: bool = False
    image: _Base64Value | None = None
    image_data: bytes | None = None


ItemCallback = Callable[[dict[str, Any], bytes | None], None]


class JsonScanner:
    """Walks one JSON object as its bytes arrive.

    It keeps the text of everything but the image strings (whitespace outside strings dropped), streams each
    string found at ``<item_path>.b64_json`` into a base64 decoder (the kept text gets ``true`` in its place),
    and calls ``on_item(fields, image)`` when the object at ``item_path`` closes, with that object's fields
    parsed. Syntax is checked where it matters for the walk; the kept text is parsed by ``result``."""

    def __init__(
        self,
        item_path: tuple[str, ...],
        on_item: ItemCallback,
        limits: ReadLimits,
        before_image: Callable[[], None] | None = None,
    ) -> None:
        self._item_path = item_path
        self._before_image = before_image
        self._on_item = on_item
        self._limits = limits
        self._kept = bytearray()
        self._stack: list[_Frame] = []
        self._state = "start"  # start | between | string | key | scalar | image | done
        self._pending = b""  # a lone backslash at the end of a chunk, inside a string
        self._string_start = 0

    @property
    def started(self) -> bool:
        return self._state != "start"

    @property
    def done(self) -> bool:
        return self._state == "done"

    def feed(self, chunk: bytes) -> None:
        buf = self._pending + chunk if self._pending else chunk
        self._pending = b""
        pos = 0
        while pos < len(buf):
            if self._state in ("string", "key", "image"):
                pos = self._string(buf, pos)
            elif self._state == "scalar":
                pos = self._scalar(buf, pos)
            else:
                pos = _skip_whitespace(buf, pos)
                if pos < 0:
                    return
                pos = self._token(buf, pos)
        if len(self._kept) > self._limits.max_fields_bytes:
            raise BodyTooLarge("the fields around the images are too large")

    def result(self) -> Any:
        """The kept text parsed (image strings replaced by ``true``); only once ``done``."""
        try:
            return json.loads(self._kept)
        except (ValueError, UnicodeDecodeError):
            raise BodyMalformed("is not JSON") from None

    # --- the walk ---------------------------------------------------------------------------------------------
    def _token(self, buf: bytes, pos: int) -> int:
        byte = buf[pos : pos + 1]
        if self._state == "done":
            raise BodyMalformed("has data after the JSON")
        if self._state == "start" and byte != b"{":
            raise BodyMalformed("is not a JSON object")
        self._state = "between"
        if byte in (b"{", b"["):
            self._open(byte)
        elif byte in (b"}", b"]"):
            self._close(byte)
        elif byte == b",":
            top = self._top()
            top.expect_key = top.kind == b"{"
            top.key = None
            self._kept += byte
        elif byte == b":":
            self._kept += byte
        elif byte == b'"':
            return self._open_string(pos)
        else:
            self._state = "scalar"
            return pos
        return pos + 1

    def _top(self) -> _Frame:
        if not self._stack:
            raise BodyMalformed("is not JSON")
        return self._stack[-1]

    def _child_path(self) -> tuple[str, ...]:
        if not self._stack:
            return ()
        top = self._stack[-1]
        return (*top.path, top.key or "") if top.kind == b"{" else (*top.path, "[]")

    def _open(self, kind: bytes) -> None:
        self._stack.append(_Frame(kind, self._child_path(), len(self._kept), expect_key=kind == b"{"))
        self._kept += kind

    def _close(self, kind: bytes) -> None:
        frame = self._top()
        if (frame.kind, kind) not in ((b"{", b"}"), (b"[", b"]")):
            raise BodyMalformed("is not JSON")
        self._stack.pop()
        self._kept += kind
        if frame.kind == b"{" and frame.path == self._item_path and (frame.image_data is not None or not self._stack):
            try:
                fields = json.loads(self._kept[frame.start :])
            except (ValueError, UnicodeDecodeError):
                raise BodyMalformed("is not JSON") from None
            self._on_item(fields, frame.image_data)
        if not self._stack:
            self._state = "done"

    def _open_string(self, pos: int) -> int:
        top = self._top()
        if top.kind == b"{" and top.expect_key:
            self._state = "key"
            top.expect_key = False
        elif top.kind == b"{" and top.key == "b64_json" and top.path == self._item_path and top.image is None:
            self._state = "image"
            top.image = _Base64Value(self._limits.max_image_bytes)
            self._kept += b"true"
            return pos + 1
        else:
            self._state = "string"
        self._string_start = len(self._kept)
        self._kept += b'"'
        return pos + 1

    def _string(self, buf: bytes, pos: int) -> int:
        """Consume string text up to its closing quote or the end of the chunk; escapes are kept whole."""
        end = pos
        while True:
            end = find_either(buf, b'"', b"\\", end)
            if end < 0:
                self._string_text(buf[pos:])
                return len(buf)
            if buf[end : end + 1] == b'"':
                break
            if end + 1 >= len(buf):  # a backslash whose escaped character is in the next chunk
                self._string_text(buf[pos:end])
                self._pending = b"\\"
                return len(buf)
            end += 2
        self._string_text(buf[pos:end])
        self._end_string()
        return end + 1

    def _string_text(self, text: bytes) -> None:
        if not text:
            return
        if self._state == "image":
            image = self._top().image
            assert image is not None
            image.write(text)
        else:
            self._kept += text

    def _end_string(self) -> None:
        top = self._top()
        if self._state == "image":
            assert top.image is not None
            if self._before_image is not None:
                self._before_image()
            top.image_data = top.image.finish()
            top.image = None
        else:
            self._kept += b'"'
            if self._state == "key":
                try:
                    key = json.loads(self._kept[self._string_start :])
                except (ValueError, UnicodeDecodeError):
                    raise BodyMalformed("is not JSON") from None
                top.key = str(key)
        self._state = "between"

    def _scalar(self, buf: bytes, pos: int) -> int:
        stop = _SCALAR_END.search(buf, pos)
        end = len(buf) if stop is None else stop.start()
        self._kept += buf[pos:end]
        if stop is not None:
            self._state = "between"
        return end
