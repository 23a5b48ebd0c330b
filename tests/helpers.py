"""Small builders every suite uses: real image bytes, masks, multipart bodies as the openai SDK sends them."""

from __future__ import annotations

import hashlib
import io
from typing import Any
from urllib.parse import urlparse

import httpx
import urllib3
from PIL import Image, ImageDraw

Files = list[tuple[str, tuple[str, bytes, str]]]


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def rgba_mask(size: tuple[int, int] = (256, 256)) -> bytes:
    """An RGBA PNG mask as OpenAI wants one: opaque everywhere but a fully transparent ellipse (the area to edit)."""
    width, height = size
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    ImageDraw.Draw(mask).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(0, 0, 0, 0))
    return encode(mask)


def multipart(
    fields: dict[str, Any] | list[tuple[str, str]] | None = None, files: Files | None = None
) -> tuple[bytes, str]:
    """``(body, content type)`` of a multipart request as the openai SDK encodes it (httpx, a new random boundary
    every time); a body without files with urllib3's encoder, because httpx falls back to urlencoded then."""
    if files:
        request = httpx.Request("POST", "http://x", data=fields or {}, files=files)
        return request.read(), request.headers["content-type"]
    pairs = list(fields.items()) if isinstance(fields, dict) else list(fields or [])
    return urllib3.encode_multipart_formdata(pairs)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_of(url: str) -> str:
    """The S3 key of a presigned URL (path-style)."""
    return urlparse(url).path.lstrip("/")
