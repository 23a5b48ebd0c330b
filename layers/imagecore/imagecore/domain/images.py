"""What an image really is, decided from its bytes.

Two depths of looking:
- ``inspect_image``: the header only (format, size, alpha) plus the file's trailer, cheap enough for every image
  the upstream answers. A header declaring more pixels than allowed (a decompression bomb) raises
  ``ImageTooLarge`` before anything is decoded.
- ``verify_image``: the same, then the pixels are decoded once (JPEG at 1/8 scale, which still reads every
  block of its bitstream) to prove the file is whole, and dropped at once. For images the caller sends: a
  truncated or forged file is refused here instead of being forwarded to the upstream and billed there.

An image is looked at where it is: bytes in memory (an answer, a multipart part), or an ``ImageOnDisk`` on local
disk (an upload streamed from S3 to Lambda's ephemeral storage), which Pillow reads from its path a block at a
time, so a 50 MB input is never held whole.

Pillow's own guard (``Image.MAX_IMAGE_PIXELS``, a ``DecompressionBombError`` past twice it) is set from the
same limit explicitly, so it is never the library default that decides, and its error is never what escapes.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeAlias

from PIL import Image, ImageFile, UnidentifiedImageError

# Pillow's format names -> the API's output_format names.
FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}

# The largest image taken, in pixels: twice the largest output (3840x2160 = 8,294,400), e.g. 4096x4096 or a
# 5120x3276 photo. Decoding one as RGBA holds at most 64 MiB, and only while it is being checked.
MAX_INPUT_PIXELS = 16_777_216

Image.MAX_IMAGE_PIXELS = MAX_INPUT_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False


class NotAnImage(ValueError):
    """The bytes are not a readable PNG, JPEG or WebP image."""


class ImageTooLarge(NotAnImage):
    """The image declares more pixels than allowed (a decompression bomb, or just too big to take)."""

    def __init__(self, message: str, *, width: int | None = None, height: int | None = None, limit: int) -> None:
        super().__init__(message)
        self.width = width
        self.height = height
        self.limit = limit


# How much of a file's end is read to tell whether it is whole (a JPEG may end in a little zero padding).
_TRAILER_BYTES = 64 * 1024


@dataclass(frozen=True)
class ImageOnDisk:
    """An image on local disk, with its size and SHA-256 taken while it was written."""

    path: Path
    size: int
    sha256: str


# An image as bytes in memory, or as a file on local disk.
ImageSource: TypeAlias = bytes | ImageOnDisk


def source_size(source: ImageSource) -> int:
    return source.size if isinstance(source, ImageOnDisk) else len(source)


def source_sha256(source: ImageSource) -> str:
    return source.sha256 if isinstance(source, ImageOnDisk) else hashlib.sha256(source).hexdigest()


def source_bytes(source: ImageSource) -> bytes:
    """The bytes themselves: a file is read whole (for inputs that are inlined, and small)."""
    return source.path.read_bytes() if isinstance(source, ImageOnDisk) else source


def open_source(source: ImageSource) -> BinaryIO:
    """The image as a readable file object (the caller closes it): the file itself, or the bytes."""
    if isinstance(source, ImageOnDisk):
        return source.path.open("rb")
    return io.BytesIO(source)


@dataclass(frozen=True)
class ImageInfo:
    format: str  # png | jpeg | webp
    width: int
    height: int
    has_alpha: bool

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def pixels(self) -> int:
        return self.width * self.height


def inspect_image(data: ImageSource, *, max_pixels: int = MAX_INPUT_PIXELS) -> ImageInfo:
    """Format, size and alpha from the header; the trailer checked. Nothing is decoded."""
    return _look(data, max_pixels=max_pixels, decode=False)


def verify_image(data: ImageSource, *, max_pixels: int = MAX_INPUT_PIXELS) -> ImageInfo:
    """``inspect_image``, then a full decode proving the image is whole; the pixels are not kept."""
    return _look(data, max_pixels=max_pixels, decode=True)


def _look(data: ImageSource, *, max_pixels: int, decode: bool) -> ImageInfo:
    if not source_size(data):
        raise NotAnImage("empty image")
    try:
        with warnings.catch_warnings():
            # Past MAX_IMAGE_PIXELS Pillow warns (and past twice it raises); the limit is applied below instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(data.path if isinstance(data, ImageOnDisk) else io.BytesIO(data)) as image:
                info = _header(image, _ends(data), max_pixels)
                if decode:
                    _decode(image, info)
                return info
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"the image declares more than {2 * MAX_INPUT_PIXELS:,} pixels", limit=max_pixels) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, NotAnImage):
            raise
        raise NotAnImage("not a readable image") from exc


@dataclass(frozen=True)
class _Ends:
    """What the completeness check reads of a file: its first 8 bytes, its trailer and its length."""

    head: bytes
    tail: bytes
    length: int


def _ends(source: ImageSource) -> _Ends:
    if not isinstance(source, ImageOnDisk):
        return _Ends(source[:8], source, len(source))
    with source.path.open("rb") as file:
        head = file.read(8)
        file.seek(max(0, source.size - _TRAILER_BYTES), os.SEEK_SET)
        return _Ends(head, file.read(), source.size)


def _header(image: Image.Image, data: _Ends, max_pixels: int) -> ImageInfo:
    fmt = FORMATS.get(image.format or "")
    if fmt is None:
        raise NotAnImage(f"unsupported image format {image.format}")
    width, height = image.size
    if width < 1 or height < 1:
        raise NotAnImage("the image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} ({width * height:,} pixels); at most {max_pixels:,} are taken",
            width=width,
            height=height,
            limit=max_pixels,
        )
    if not _complete(fmt, data):
        raise NotAnImage(f"truncated {fmt} image")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    return ImageInfo(format=fmt, width=width, height=height, has_alpha=has_alpha)


def _decode(image: Image.Image, info: ImageInfo) -> None:
    """Decode every byte of the (first) frame; Pillow raises on a short or corrupt stream. ``load`` keeps the
    pixels on ``image``, which the caller's ``with`` closes right after."""
    if info.format == "jpeg":
        image.draft(image.mode, (max(1, info.width // 8), max(1, info.height // 8)))
    image.load()


def _complete(fmt: str, data: _Ends) -> bool:
    """Whether the file ends where its format says it ends: catches a cut-off image without decoding it."""
    if fmt == "png":
        return data.tail.endswith(b"IEND\xaeB`\x82")
    if fmt == "jpeg":
        return data.tail.rstrip(b"\x00").endswith(b"\xff\xd9")
    return data.length >= 8 and int.from_bytes(data.head[4:8], "little") + 8 <= data.length  # webp: RIFF size
