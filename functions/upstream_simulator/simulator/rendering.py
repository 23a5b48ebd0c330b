"""What the simulator draws: real pictures of the asked size and format, the usage the upstream would report
for them, and the damaged images its fault modes answer with."""

from __future__ import annotations

import hashlib
import io
import math
import struct
import zlib
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from PIL import Image, ImageDraw

# Output tokens per image at 1024x1024 for each quality (OpenAI's published table for GPT image models).
_TOKENS_1M = {"low": 272, "medium": 1056, "high": 4160}
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


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


@lru_cache(maxsize=2)
def _backdrop(width: int, height: int) -> tuple[Image.Image, Image.Image]:
    """What every picture of a size shares, made once for the last two sizes asked (never drawn on; 50 MB for a
    4K size): the colour gradients and the grain. The seed picks the tint and the shapes."""
    gradient = Image.linear_gradient("L")
    red = gradient.resize((width, height))
    green = gradient.rotate(90).resize((width, height))
    blue = Image.radial_gradient("L").resize((width, height))
    grain = Image.effect_noise((width, height), 24).convert("RGB")
    return Image.merge("RGB", (red, green, blue)), grain


@lru_cache(maxsize=32)
def render_image(width: int, height: int, output_format: str, compression: int | None, seed: str) -> bytes:
    """A real picture: colour gradients, shapes and grain decided by ``seed`` (the prompt), so different prompts
    give different images and the files compress like photographs rather than flat colour."""
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    gradients, grain = _backdrop(width, height)
    tint = Image.new("RGB", (width, height), (digest[0], digest[1], digest[2]))
    image = Image.blend(gradients, tint, 0.35)
    draw = ImageDraw.Draw(image)
    for i in range(6):
        x, y = digest[3 + i] / 255 * width, digest[9 + i] / 255 * height
        r = (0.05 + digest[15 + i] / 255 * 0.2) * min(width, height)
        colour = (digest[21 + i % 8], digest[(22 + i) % 32], digest[(23 + i) % 32])
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour, outline=(255, 255, 255), width=max(2, width // 400))
    image = Image.blend(image, grain, 0.12)
    out = io.BytesIO()
    options: dict[str, Any] = {}
    if output_format == "png":
        options["compress_level"] = 1
    else:
        options["quality"] = 85 if compression is None else max(1, 100 - compression)
    image.save(out, _PIL_FORMATS[output_format], **options)
    return out.getvalue()


def declared_size_png(width: int, height: int) -> bytes:
    """A small, well-formed PNG whose header declares ``width`` x ``height``: a decompression bomb for anyone who
    trusts the header (its one IDAT row is all there is)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def runaway_image(size: int) -> Iterator[bytes]:
    """A JSON answer whose one image string is ``size`` bytes of valid base64 and never seems to end."""
    yield b'{"created": 1, "data": [{"b64_json": "'
    block = b"A" * 65536
    for _ in range(size // len(block)):
        yield block
    yield b'"}]}'
