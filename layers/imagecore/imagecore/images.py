"""What an image really is, decided from its bytes (Pillow reads the header only, so this is cheap)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# Pillow's format names -> the API's output_format names.
FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}


class NotAnImage(ValueError):
    """The bytes are not a readable PNG, JPEG or WebP image."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # png | jpeg | webp
    width: int
    height: int
    has_alpha: bool

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


def inspect_image(data: bytes) -> ImageInfo:
    if not data:
        raise NotAnImage("empty image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = FORMATS.get(image.format or "")
            if fmt is None:
                raise NotAnImage(f"unsupported image format {image.format}")
            if not _complete(fmt, data):
                raise NotAnImage(f"truncated {fmt} image")
            has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
            return ImageInfo(format=fmt, width=image.width, height=image.height, has_alpha=has_alpha)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise NotAnImage("not a readable image") from exc


def _complete(fmt: str, data: bytes) -> bool:
    """Whether the file ends where its format says it ends: catches a truncated image without decoding it."""
    if fmt == "png":
        return data.endswith(b"IEND\xaeB`\x82")
    if fmt == "jpeg":
        return data.rstrip(b"\x00").endswith(b"\xff\xd9")
    return len(data) >= 8 and int.from_bytes(data[4:8], "little") + 8 <= len(data)  # webp: RIFF size
