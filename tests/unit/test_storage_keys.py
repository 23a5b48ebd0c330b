"""Where images go in S3 (non-guessable keys) and what an image really is, decided from its bytes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws

from imagecore.domain.images import NotAnImage, inspect_image
from imagecore.storage.store import ImageStore, ImageToStore, image_folder, new_image_id

CREATED = datetime(2026, 3, 7, 23, 59, 59, tzinfo=UTC)
IMAGE_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def image_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[ImageStore]:
    """An ImageStore on a moto S3 bucket: the keys below are the ones ``save`` really writes."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="images")
        yield ImageStore(s3, "images")


def stored_keys(store: ImageStore) -> list[str]:
    return sorted(o["Key"] for o in store.s3.list_objects_v2(Bucket="images").get("Contents", []))


class TestImageKey:
    @pytest.mark.parametrize(
        "output_format, extension, content_type",
        [("png", "png", "image/png"), ("jpeg", "jpg", "image/jpeg"), ("webp", "webp", "image/webp")],
    )
    def test_layout_is_images_date_id_index_extension(
        self, image_store: ImageStore, output_format: str, extension: str, content_type: str
    ) -> None:
        saved = image_store.save([ImageToStore(b"bytes", output_format)], created=CREATED)

        key = saved[0].key
        assert re.fullmatch(rf"images/2026/03/07/[0-9a-f]{{32}}/0\.{extension}", key), key
        assert stored_keys(image_store) == [key]
        stored = image_store.s3.get_object(Bucket="images", Key=key)
        assert stored["ContentType"] == content_type == saved[0].content_type
        assert stored["Body"].read() == b"bytes"

    def test_index_numbers_the_images_of_one_request(self, image_store: ImageStore) -> None:
        saved = image_store.save([ImageToStore(bytes([i]), "png") for i in range(3)], folder=f"images/x/{IMAGE_ID}")

        assert [s.key for s in saved] == [f"images/x/{IMAGE_ID}/{i}.png" for i in range(3)]
        assert stored_keys(image_store) == [s.key for s in saved]
        for i, s in enumerate(saved):
            assert image_store.s3.get_object(Bucket="images", Key=s.key)["Body"].read() == bytes([i])

    def test_months_and_days_are_zero_padded(self, image_store: ImageStore) -> None:
        saved = image_store.save([ImageToStore(b"x", "webp")], created=datetime(2027, 1, 3, tzinfo=UTC))
        assert saved[0].key.startswith("images/2027/01/03/")
        assert image_folder(datetime(2027, 11, 30, tzinfo=UTC), IMAGE_ID) == f"images/2027/11/30/{IMAGE_ID}"

    def test_each_request_gets_its_own_folder(self, image_store: ImageStore) -> None:
        first = image_store.save([ImageToStore(b"a", "png")], created=CREATED)
        second = image_store.save([ImageToStore(b"b", "png")], created=CREATED)
        assert first[0].key.rsplit("/", 1)[0] != second[0].key.rsplit("/", 1)[0]

    def test_unknown_formats_have_no_key(self, image_store: ImageStore) -> None:
        with pytest.raises(KeyError):
            image_store.save([ImageToStore(b"x", "gif")], created=CREATED)
        assert stored_keys(image_store) == []


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
