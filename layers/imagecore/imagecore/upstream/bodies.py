"""The two framings of an upstream answer read as they arrive: a JSON body (possibly after whitespace keep-alive)
and a server-sent event stream, each handing over every image as soon as its base64 is decoded, within the read
limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imagecore.domain.images import ImageInfo, NotAnImage, inspect_image
from imagecore.upstream.reader import (
    BodyIncomplete,
    BodyMalformed,
    BodyTooLarge,
    ImageCallback,
    ImageUnusable,
    JsonScanner,
    ReadImage,
    ReadLimits,
    StreamFailed,
    find_either,
)


class _Counted:
    """Counts the bytes read against the body limit. ``before_image`` is called when an image string has been
    read, just before its decoded bytes are put together: a sink that stores in the background waits there for
    the previous image, so that only one whole image is ever held."""

    def __init__(self, limits: ReadLimits, before_image: Callable[[], None] | None = None) -> None:
        self.limits = limits
        self.before_image = before_image
        self.bytes_read = 0

    def count(self, chunk: bytes) -> None:
        self.bytes_read += len(chunk)
        if self.bytes_read > self.limits.max_body_bytes:
            raise BodyTooLarge("the answer is larger than the request can produce")


def inspect_upstream_image(data: bytes, limits: ReadLimits) -> ImageInfo:
    """The image's format and size from its bytes; a file that is not whole or declares more pixels than any
    answer can have (a decompression bomb) is refused."""
    try:
        info = inspect_image(data)
    except NotAnImage:
        raise ImageUnusable("is not a whole PNG, JPEG or WebP image") from None
    except Exception:  # Pillow's DecompressionBombError and friends: refused, never a 500
        raise ImageUnusable("is not a usable image") from None
    if info.width * info.height > limits.max_pixels:
        raise ImageUnusable(f"declares {info.width}x{info.height} pixels, more than any answer can have")
    return info


class JsonBody(_Counted):
    """A JSON answer (with or without leading keep-alives): each ``data[i]`` image goes to ``on_image`` as soon
    as its object closes; ``close`` returns the body with every ``b64_json`` replaced by ``true``."""

    def __init__(
        self, limits: ReadLimits, on_image: ImageCallback, before_image: Callable[[], None] | None = None
    ) -> None:
        super().__init__(limits, before_image)
        self._on_image = on_image
        self._images = 0
        self._scanner = JsonScanner(("data", "[]"), self._item, limits, before_image)

    def feed(self, chunk: bytes) -> None:
        self.count(chunk)
        self._scanner.feed(chunk)

    def _item(self, fields: dict[str, Any], data: bytes | None) -> None:
        if data is None:
            return
        index = self._images
        try:
            info = inspect_upstream_image(data, self.limits)
        except ImageUnusable as exc:
            raise ImageUnusable(f"data[{index}] {exc}") from None
        self._images += 1
        self._on_image(ReadImage(index, data, info, fields))

    def close(self) -> dict[str, Any]:
        if not self._scanner.done:
            raise BodyIncomplete("the answer ended before its JSON did")
        body = self._scanner.result()
        assert isinstance(body, dict)
        return body


@dataclass
class _Event:
    name: str = ""
    data_lines: int = 0
    scanner: JsonScanner | None = None
    fields: dict[str, Any] | None = None
    image: bytes | None = None
    ignored: bool = False


@dataclass
class SseOutcome:
    """What an event stream left once it ended: the fields of the last ``completed`` event (``usage`` included)
    and the number of images and partial images read."""

    fields: dict[str, Any] = field(default_factory=dict)
    images: int = 0
    partials: int = 0


class SseBody(_Counted):
    """A ``text/event-stream`` answer. ``*.partial_image`` events go to ``on_partial`` (their index is
    ``partial_image_index``; an unusable partial is dropped, it is only a preview), ``*.completed`` events to
    ``on_image``, an ``error`` event raises ``StreamFailed``; other events and comments are skipped."""

    def __init__(
        self,
        limits: ReadLimits,
        on_image: ImageCallback,
        on_partial: ImageCallback | None,
        before_image: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(limits, before_image)
        self._on_image = on_image
        self._on_partial = on_partial
        self._outcome = SseOutcome()
        self._event = _Event()
        self._line = bytearray()  # the field name (and small values) of the current line
        self._field: str | None = None  # the field whose value is being read, once its colon was seen
        self._after_cr = False

    def feed(self, chunk: bytes) -> None:
        self.count(chunk)
        pos = 0
        if self._after_cr and chunk[:1] == b"\n":
            pos = 1
        self._after_cr = False
        while pos < len(chunk):
            end = find_either(chunk, b"\n", b"\r", pos)
            self._text(chunk[pos:] if end < 0 else chunk[pos:end])
            if end < 0:
                return
            self._end_line()
            self._after_cr = chunk[end : end + 1] == b"\r"
            pos = end + 1
            if self._after_cr and chunk[pos : pos + 1] == b"\n":
                pos += 1
                self._after_cr = False

    def close(self) -> SseOutcome:
        if self._line or self._field is not None:
            self._end_line()
        self._dispatch()
        if self._outcome.images == 0:
            raise BodyIncomplete("the event stream ended before its image")
        return self._outcome

    def _text(self, text: bytes) -> None:
        if self._field is None:
            colon = text.find(b":")
            if colon < 0:
                self._line += text
                if len(self._line) > 64:
                    raise BodyMalformed("is not an event stream")
                return
            self._line += text[:colon]
            self._field = self._line.decode("utf-8", "replace")
            self._line = bytearray()
            text = text[colon + 1 :]
            if text.startswith(b" "):
                text = text[1:]
            if self._field == "data":
                self._start_data()
        if self._field == "data":
            self._data(text)
        elif self._field:  # "event", "id", "retry": short values
            self._line += text
            if len(self._line) > 256:
                raise BodyMalformed("has an over-long event field")

    def _start_data(self) -> None:
        event = self._event
        if event.data_lines and event.scanner is not None:
            event.scanner.feed(b"\n")
        event.data_lines += 1
        if event.scanner is None and not event.ignored:
            event.scanner = JsonScanner((), self._keep, self.limits, self.before_image)

    def _data(self, text: bytes) -> None:
        event = self._event
        if event.scanner is None or not text:
            return
        if not event.scanner.started and text.lstrip().startswith(b"[DONE]"):
            event.scanner, event.ignored = None, True
            return
        event.scanner.feed(text)

    def _keep(self, fields: dict[str, Any], data: bytes | None) -> None:
        self._event.fields = fields
        self._event.image = data

    def _end_line(self) -> None:
        name, value = self._field, self._line.decode("utf-8", "replace")
        if name is None and not self._line:
            self._dispatch()  # a blank line ends the event
        elif name == "event":
            self._event.name = value.strip()
        self._field = None
        self._line = bytearray()

    def _dispatch(self) -> None:
        event, self._event = self._event, _Event()
        if event.scanner is None:
            return
        if not event.scanner.done:
            raise BodyIncomplete("an event ended before its JSON did")
        fields = event.fields or {}
        kind = event.name or str(fields.get("type") or "")
        if kind == "error" or kind.endswith(".failed"):
            error = fields.get("error", fields)
            raise StreamFailed(error, after_events=self._outcome.images + self._outcome.partials > 0)
        if kind.endswith(".partial_image") and event.image is not None:
            self._partial(fields, event.image)
        elif kind.endswith(".completed") and event.image is not None:
            index = self._outcome.images
            try:
                info = inspect_upstream_image(event.image, self.limits)
            except ImageUnusable as exc:
                raise ImageUnusable(f"the completed image {exc}") from None
            self._outcome.images += 1
            self._outcome.fields = {k: v for k, v in fields.items() if k != "b64_json"}
            self._on_image(ReadImage(index, event.image, info, fields))

    def _partial(self, fields: dict[str, Any], data: bytes) -> None:
        try:
            info = inspect_upstream_image(data, self.limits)
        except ImageUnusable:
            return
        index = fields.get("partial_image_index")
        self._outcome.partials += 1
        if self._on_partial is not None:
            number = index if isinstance(index, int) and 0 <= index < 100 else self._outcome.partials - 1
            self._on_partial(ReadImage(number, data, info, fields))
