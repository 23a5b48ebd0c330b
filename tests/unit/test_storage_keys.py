"""Where images go in S3 (non-guessable keys) and what an image really is, decided from its bytes."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from imagecore.images import NotAnImage, inspect_image
from imagecore.storage import image_key, new_image_id

CREATED = datetime(2026, 3, 7, 23, 59, 59, tzinfo=UTC)
IMAGE_ID = "0123456789abcdef0123456789abcdef"


class TestImageKey:
    @pytest.mark.parametrize("output_format, extension", [("png", "png"), ("jpeg", "jpg"), ("webp", "webp")])
    def test_layout_is_images_date_id_index_extension(self, output_format: str, extension: str) -> None:
        assert image_key(CREATED, IMAGE_ID, 0, output_format) == f"images/2026/03/07/{IMAGE_ID}/0.{extension}"

    def test_index_numbers_the_images_of_one_request(self) -> None:
        keys = [image_key(CREATED, IMAGE_ID, i, "png") for i in range(3)]
        assert keys == [f"images/2026/03/07/{IMAGE_ID}/{i}.png" for i in range(3)]

    def test_months_and_days_are_zero_padded(self) -> None:
        assert image_key(datetime(2027, 11, 30, tzinfo=UTC), IMAGE_ID, 9, "webp").startswith("images/2027/11/30/")

    def test_unknown_formats_have_no_key(self) -> None:
        with pytest.raises(KeyError):
            image_key(CREATED, IMAGE_ID, 0, "gif")


class TestNewImageId:
    def test_is_128_random_bits_in_hex(self) -> None:
        assert re.fullmatch(r"[0-9a-f]{32}", new_image_id())

    def test_differs_each_call(self) -> None:
        ids = {new_image_id() for _ in range(1000)}
        assert len(ids) == 1000


class TestInspectImage:
    def test_rgba_png_has_alpha(self, make_image) -> None:
        info = inspect_image(make_image("PNG", (40, 30), "RGBA"))
        assert (info.format, info.width, info.height, info.has_alpha) == ("png", 40, 30, True)
        assert info.size == "40x30"

    def test_rgb_png_has_no_alpha(self, make_image) -> None:
        info = inspect_image(make_image("PNG", (40, 30), "RGB"))
        assert (info.format, info.has_alpha) == ("png", False)

    def test_jpeg(self, make_image) -> None:
        info = inspect_image(make_image("JPEG", (33, 17)))
        assert (info.format, info.width, info.height, info.has_alpha) == ("jpeg", 33, 17, False)

    @pytest.mark.parametrize("mode, has_alpha", [("RGB", False), ("RGBA", True)])
    def test_webp(self, make_image, mode: str, has_alpha: bool) -> None:
        info = inspect_image(make_image("WEBP", (64, 32), mode))
        assert (info.format, info.width, info.height, info.has_alpha) == ("webp", 64, 32, has_alpha)

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"garbage, not an image",
            b"\x89PNG\r\n\x1a\n",
            b"\xff\xd8\xff",
            b"RIFF\x00\x00\x00\x00WEBP",
            b"\x00" * 64,
        ],
        ids=["empty", "text", "png-signature-only", "jpeg-marker-only", "webp-header-only", "zeros"],
    )
    def test_anything_unreadable_is_not_an_image(self, data: bytes) -> None:
        with pytest.raises(NotAnImage):
            inspect_image(data)

    @pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
    def test_a_truncated_image_is_not_an_image(self, make_image, fmt: str) -> None:
        data = make_image(fmt, (256, 256))
        inspect_image(data)  # whole: fine
        with pytest.raises(NotAnImage):
            inspect_image(data[: len(data) // 2])

    @pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
    def test_other_formats_are_not_accepted_images(self, make_image, fmt: str) -> None:
        with pytest.raises(NotAnImage):
            inspect_image(make_image(fmt, (16, 16)))

    def test_not_an_image_is_a_value_error(self) -> None:
        assert issubclass(NotAnImage, ValueError)
