"""Edit inputs read and checked without any network: real image bytes made with Pillow, multipart bodies made
with a real encoder (httpx, as the openai SDK sends them), broken by hand only where breaking is the point."""

from __future__ import annotations

import io
import random
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from imagecore.domain.errors import ImageServiceError, InvalidRequest, NotFound
from imagecore.domain.models import EditParameters, EditUploadRequest, UploadRef
from imagecore.storage.store import UploadedFile, UploadNotFound, UploadTooLarge
from imagecore.usecases.edits import MAX_IMAGES, RawFile, check_images, edit_from_multipart, edit_from_uploads
from tests.helpers import multipart
from tests.unit.conftest import image_bytes

LIMIT = 50 * 1024 * 1024
PNG = image_bytes("PNG", (64, 48))
RGBA_MASK = image_bytes("PNG", (64, 48), "RGBA")
JPEG = image_bytes("JPEG", (64, 48))


def noisy_png(size: tuple[int, int] = (32, 32), seed: int = 7) -> bytes:
    """A PNG that does not compress away (random pixels), so its size is predictable enough."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def edit(
    fields: dict[str, Any] | None = None,
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
    *,
    max_image_bytes: int = LIMIT,
):
    body, content_type = multipart({"prompt": "edit this", **(fields or {})}, files)
    return edit_from_multipart(body, content_type, max_image_bytes=max_image_bytes)


def png_part(name: str = "image[]", filename: str = "a.png", data: bytes = PNG, content_type: str = "image/png"):
    return (name, (filename, data, content_type))


def rejected(call: Any, *args: Any, **kwargs: Any) -> ImageServiceError:
    with pytest.raises(ImageServiceError) as caught:
        call(*args, **kwargs)
    return caught.value


def raw(param: str, data: bytes, filename: str | None = None) -> RawFile:
    return RawFile(param, data, filename)


# --- how many images ---------------------------------------------------------------------------------------


def test_no_image_is_a_400_missing_required_parameter():
    error = rejected(edit, {"size": "1024x1024"})
    assert (error.status, error.param, error.code) == (400, "image", "missing_required_parameter")
    assert "image[]" in error.message


def test_check_images_without_images():
    error = rejected(check_images, [], None, max_image_bytes=LIMIT)
    assert (error.status, error.param, error.code) == (400, "image", "missing_required_parameter")


def test_seventeen_images_are_too_many():
    files = [png_part(filename=f"{i}.png") for i in range(MAX_IMAGES + 1)]
    error = rejected(edit, files=files)
    assert (error.status, error.param, error.code) == (400, "image", "too_many_images")
    assert "17" in error.message and "16" in error.message


def test_sixteen_images_are_accepted_in_order():
    files = [png_part(filename=f"{i}.png") for i in range(MAX_IMAGES)]
    result = edit(files=files)
    assert [image.filename for image in result.images] == [f"{i}.png" for i in range(MAX_IMAGES)]
    assert result.mask is None
    assert result.input_bytes == MAX_IMAGES * len(PNG)


# --- size limit --------------------------------------------------------------------------------------------


def test_an_image_over_the_limit_names_its_index():
    big = noisy_png((32, 32))
    assert len(big) > 2000
    files = [png_part(data=PNG), png_part(data=big, filename="big.png")]
    error = rejected(edit, files=files, max_image_bytes=1000 + len(PNG))
    assert (error.status, error.param, error.code) == (400, "image[1]", "image_too_large")
    assert "image[1]" in error.message


def test_an_image_over_50_mb_is_refused_before_it_is_read():
    too_big = bytes(LIMIT + 1)  # zero pages: cheap, and never decoded because the length check comes first
    error = rejected(check_images, [raw("image[0]", PNG), raw("image[1]", too_big)], None, max_image_bytes=LIMIT)
    assert (error.status, error.param, error.code) == (400, "image[1]", "image_too_large")
    assert "50 MB" in error.message


def test_an_image_at_exactly_the_limit_is_not_too_large():
    images, _ = check_images([raw("image[0]", PNG)], None, max_image_bytes=len(PNG))
    assert images[0].data == PNG


def test_a_mask_over_the_limit_names_the_mask():
    error = rejected(check_images, [raw("image[0]", PNG)], raw("mask", RGBA_MASK), max_image_bytes=len(RGBA_MASK) - 1)
    assert (error.param, error.code) == ("mask", "image_too_large")


# --- what the bytes really are -----------------------------------------------------------------------------


def test_a_text_file_named_png_is_not_an_image():
    files = [png_part(filename="notes.png", data=b"just some text, honestly\n" * 20)]
    error = rejected(edit, files=files)
    assert (error.status, error.param, error.code) == (400, "image[0]", "invalid_image_format")


def test_a_gif_is_refused():
    gif = image_bytes("GIF", (64, 48))
    error = rejected(edit, files=[png_part(filename="anim.png", data=gif)])
    assert (error.status, error.param, error.code) == (400, "image[0]", "invalid_image_format")


def test_a_truncated_png_is_refused():
    truncated = noisy_png((64, 64))[:-200]
    error = rejected(edit, files=[png_part(data=truncated)])
    assert (error.status, error.param, error.code) == (400, "image[0]", "invalid_image_format")


def test_a_truncated_jpeg_is_refused():
    error = rejected(edit, files=[png_part(filename="a.jpg", data=JPEG[: len(JPEG) // 2], content_type="image/jpeg")])
    assert (error.param, error.code) == ("image[0]", "invalid_image_format")


def test_an_empty_file_is_refused():
    error = rejected(edit, files=[png_part(data=b"")])
    assert (error.param, error.code) == ("image[0]", "invalid_image_format")


def test_the_second_bad_image_is_the_one_named():
    error = rejected(edit, files=[png_part(), png_part(data=b"nope", filename="b.png")])
    assert (error.param, error.code) == ("image[1]", "invalid_image_format")


def test_a_jpeg_named_png_is_accepted_and_forwarded_as_a_jpeg():
    result = edit(files=[png_part(filename="photo.png", data=JPEG, content_type="image/png")])
    (image,) = result.images
    assert image.data == JPEG
    assert image.filename == "photo.png"
    assert image.info.format == "jpeg"
    assert image.content_type == "image/jpeg"


def test_webp_is_accepted():
    webp = image_bytes("WEBP", (64, 48))
    (image,) = edit(files=[png_part(filename="x.webp", data=webp, content_type="application/octet-stream")]).images
    assert (image.content_type, image.info.size) == ("image/webp", "64x48")


# --- the mask ----------------------------------------------------------------------------------------------


def test_an_rgba_mask_of_the_same_size_is_accepted():
    result = edit(files=[png_part(), png_part("mask", "mask.png", RGBA_MASK)])
    assert result.mask is not None
    assert (result.mask.filename, result.mask.content_type, result.mask.data) == ("mask.png", "image/png", RGBA_MASK)
    assert result.input_bytes == len(PNG) + len(RGBA_MASK)


def test_a_mask_is_compared_with_the_first_image_only():
    other = image_bytes("PNG", (100, 100))
    result = edit(files=[png_part(), png_part(data=other, filename="b.png"), png_part("mask", "m.png", RGBA_MASK)])
    assert len(result.images) == 2 and result.mask is not None


def test_a_jpeg_mask_for_a_png_image_is_refused():
    jpeg_mask = image_bytes("JPEG", (64, 48))
    error = rejected(edit, files=[png_part(), png_part("mask", "mask.jpg", jpeg_mask, "image/jpeg")])
    assert (error.status, error.param, error.code) == (400, "mask", "invalid_mask")
    assert "format" in error.message


def test_a_mask_of_other_dimensions_is_refused():
    mask = image_bytes("PNG", (48, 64), "RGBA")
    error = rejected(edit, files=[png_part(), png_part("mask", "mask.png", mask)])
    assert (error.status, error.param, error.code) == (400, "mask", "invalid_mask")
    assert "64x48" in error.message and "48x64" in error.message


def test_a_mask_without_alpha_is_refused():
    mask = image_bytes("PNG", (64, 48), "RGB")
    error = rejected(edit, files=[png_part(), png_part("mask", "mask.png", mask)])
    assert (error.status, error.param, error.code) == (400, "mask", "invalid_mask")
    assert "alpha" in error.message


def test_a_mask_that_is_not_an_image_is_refused():
    error = rejected(edit, files=[png_part(), png_part("mask", "mask.png", b"not a mask")])
    assert (error.param, error.code) == ("mask", "invalid_image_format")


def test_two_masks_are_refused():
    files = [png_part(), png_part("mask", "m1.png", RGBA_MASK), png_part("mask", "m2.png", RGBA_MASK)]
    error = rejected(edit, files=files)
    assert (error.status, error.param) == (400, "mask")


def test_a_mask_alone_is_still_missing_its_image():
    error = rejected(edit, files=[png_part("mask", "mask.png", RGBA_MASK)])
    assert (error.param, error.code) == ("image", "missing_required_parameter")


# --- the parameters ----------------------------------------------------------------------------------------


def test_form_text_is_read_like_its_json_equivalent():
    result = edit({"n": "2", "size": "1024x1536", "quality": "low", "output_format": "webp"}, [png_part()])
    params = result.parameters
    assert (params.n, params.size, params.quality, params.output_format) == (2, "1024x1536", "low", "webp")
    assert params.prompt == "edit this"


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"n": "abc"}, "n", None),
        ({"n": "0"}, "n", None),
        ({"n": "11"}, "n", None),
        ({"size": "1000x1000"}, "size", None),
        ({"size": "3856x2160"}, "size", None),
        ({"background": "transparent"}, "background", None),
        ({"model": "dall-e-2"}, "model", "invalid_value"),
        ({"quality": "ultra"}, "quality", "invalid_value"),
        ({"stream": "maybe"}, "stream", None),
        ({"output_compression": "50"}, "output_compression", None),
        ({"input_fidelity": "medium"}, "input_fidelity", "invalid_value"),
        ({"style": "vivid"}, "style", "unknown_parameter"),
        ({"prompt": ""}, "prompt", None),
    ],
)
def test_each_bad_parameter_is_a_400_naming_it(fields, param, code):
    error = rejected(edit, fields, [png_part()])
    assert (error.status, error.type, error.param) == (400, "invalid_request_error", param)
    assert param in error.message
    if code:
        assert error.code == code


def test_a_missing_prompt_is_missing_required_parameter():
    body, content_type = multipart({"size": "1024x1024"}, [png_part()])
    error = rejected(edit_from_multipart, body, content_type, max_image_bytes=LIMIT)
    assert (error.param, error.code) == ("prompt", "missing_required_parameter")


def test_a_bad_size_is_reported_before_the_images_are_read():
    error = rejected(edit, {"size": "1000x1000"}, [png_part(data=b"not an image")])
    assert error.param == "size"
    assert "multiples of 16" in error.message


def test_an_unknown_file_field_is_refused():
    error = rejected(edit, files=[png_part(), png_part("picture", "p.png")])
    assert (error.status, error.param, error.code) == (400, "picture", "unknown_parameter")


def test_an_index_past_two_digits_is_an_unknown_file_field():
    error = rejected(edit, files=[png_part("image[100]")])
    assert (error.param, error.code) == ("image[100]", "unknown_parameter")


@pytest.mark.parametrize("name", ["image", "image[]", "image[3]", "mask"])
def test_an_image_sent_as_a_text_field_is_invalid_type(name):
    error = rejected(edit, {name: "iVBORw0KGgo="}, [png_part()])
    assert (error.status, error.param, error.code) == (400, name, "invalid_type")


def test_a_text_field_sent_twice_is_refused():
    body, content_type = multipart([("prompt", "one"), ("prompt", "two"), ("size", "1024x1024")])
    error = rejected(edit_from_multipart, body, content_type, max_image_bytes=LIMIT)
    assert (error.status, error.param) == (400, "prompt")
    assert "2 times" in error.message


def test_a_repeated_text_field_alongside_images_is_refused():
    error = rejected(edit, {"n": ["1", "2"]}, [png_part()])
    assert (error.status, error.param) == (400, "n")


def test_input_fidelity_is_accepted_and_never_sent_upstream():
    result = edit({"input_fidelity": "high", "size": "1024x1024"}, [png_part()])
    assert result.parameters.input_fidelity == "high"
    body = result.parameters.upstream_body()
    assert "input_fidelity" not in body
    assert "response_format" not in body and "stream" not in body
    assert body["size"] == "1024x1024"
    assert body["prompt"] == "edit this"


def test_edit_parameters_upstream_body_drops_only_our_fields():
    params = EditParameters.model_validate({"prompt": "p", "input_fidelity": "low", "response_format": "b64_json"})
    assert params.upstream_body() == {
        "prompt": "p",
        "model": "gpt-image-2",
        "n": 1,
        "size": "auto",
        "quality": "auto",
        "output_format": "png",
    }


# --- image part names and order ----------------------------------------------------------------------------


def test_indexed_parts_are_sorted_by_index():
    files = [png_part(f"image[{i}]", f"{i}.png") for i in (2, 0, 1)]
    result = edit(files=files)
    assert [image.filename for image in result.images] == ["0.png", "1.png", "2.png"]


def test_indexed_parts_sort_numerically_not_as_text():
    files = [png_part(f"image[{i}]", f"{i}.png") for i in (10, 2, 1)]
    assert [image.filename for image in edit(files=files).images] == ["1.png", "2.png", "10.png"]


def test_a_single_image_part_is_accepted():
    (image,) = edit(files=[png_part("image", "solo.png")]).images
    assert (image.filename, image.data) == ("solo.png", PNG)


def test_repeated_image_array_parts_keep_their_order():
    a, b = image_bytes("PNG", (64, 48)), image_bytes("PNG", (80, 80))
    result = edit(files=[png_part(filename="a.png", data=a), png_part(filename="b.png", data=b)])
    assert [(image.filename, image.data) for image in result.images] == [("a.png", a), ("b.png", b)]


# --- broken multipart --------------------------------------------------------------------------------------


def good_body() -> tuple[bytes, str]:
    return multipart({"prompt": "p", "size": "1024x1024"}, [png_part(), png_part("mask", "mask.png", RGBA_MASK)])


def assert_clean_400(body: bytes, content_type: str, codes: tuple[str, ...] = ("invalid_multipart",)) -> None:
    try:
        edit_from_multipart(body, content_type, max_image_bytes=LIMIT)
    except InvalidRequest as error:
        assert error.status == 400
        assert error.code in codes, (error.code, error.message)
    else:
        pytest.fail("a broken multipart body was accepted")


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.5, 0.8, 0.99])
def test_a_body_cut_anywhere_is_invalid_multipart(fraction):
    body, content_type = good_body()
    assert_clean_400(body[: int(len(body) * fraction)], content_type)


def test_a_body_missing_only_its_closing_boundary_is_invalid_multipart():
    body, content_type = good_body()
    assert body.endswith(b"--\r\n")
    assert_clean_400(body[: body.rindex(b"\r\n--")], content_type)


def test_no_boundary_parameter_is_invalid_multipart():
    body, _ = good_body()
    assert_clean_400(body, "multipart/form-data")


def test_a_boundary_that_does_not_match_the_body():
    body, _ = good_body()
    assert_clean_400(
        body, "multipart/form-data; boundary=not-the-one", ("invalid_multipart", "missing_required_parameter")
    )


def test_an_empty_body():
    _, content_type = good_body()
    assert_clean_400(b"", content_type, ("invalid_multipart", "missing_required_parameter"))


@pytest.mark.parametrize(
    "body",
    [
        b"garbage" * 100,
        b"\x00\xff" * 500,
        b'--B\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n',  # no end
        b"--B\r\nno headers at all\r\n--B--\r\n",
        b"--B\r\nContent-Disposition: form-data\r\n\r\nvalue\r\n--B--\r\n",  # a part without a name
        b'--B\r\nContent-Disposition: form-data; filename="a.png"\r\n\r\nx\r\n--B--\r\n',  # nameless file
        b"--B\r\nContent-Type: image/png\r\n\r\nx\r\n--B--\r\n",  # no Content-Disposition
        b"--B--\r\n",  # no parts at all
    ],
    ids=[
        "text",
        "binary",
        "unterminated-part",
        "headerless-part",
        "nameless-part",
        "nameless-file",
        "no-disposition",
        "no-parts",
    ],
)
def test_hand_broken_bodies_are_400s(body):
    assert_clean_400(
        body,
        "multipart/form-data; boundary=B",
        ("invalid_multipart", "missing_required_parameter", "unknown_parameter", "invalid_value"),
    )


def test_too_many_parts_is_invalid_multipart_not_a_crash():
    fields = [(f"f{i}", "x") for i in range(200)]
    body, content_type = multipart(fields)
    assert_clean_400(body, content_type, ("invalid_multipart",))


# --- JSON bodies naming uploads ----------------------------------------------------------------------------

UPLOAD_ID = "upl_" + "a1" * 16


class FakeUploads:
    def __init__(self, files: dict[str, tuple[bytes, str]] | None = None, too_large: set[str] | None = None):
        self.files = files or {}
        self.too_large = too_large or set()
        self.reads: list[str] = []

    def read(self, upload_id: str) -> UploadedFile:
        self.reads.append(upload_id)
        if upload_id in self.too_large:
            raise UploadTooLarge(upload_id)
        if upload_id not in self.files:
            raise UploadNotFound(upload_id)
        data, filename = self.files[upload_id]
        return UploadedFile(upload_id, data, "image/png", filename)


def test_json_edit_reads_each_upload_and_checks_it():
    mask_id = "upl_" + "b2" * 16
    uploads = FakeUploads({UPLOAD_ID: (PNG, "big.png"), mask_id: (RGBA_MASK, "mask.png")})
    body = {"images": [{"upload_id": UPLOAD_ID}], "mask": {"upload_id": mask_id}, "prompt": "p", "n": 2}
    result = edit_from_uploads(EditUploadRequest.model_validate(body).model_dump_json(), uploads, max_image_bytes=LIMIT)
    assert [(i.filename, i.data) for i in result.images] == [("big.png", PNG)]
    assert result.mask is not None and result.mask.data == RGBA_MASK
    assert result.parameters.n == 2
    assert "images" not in result.parameters.upstream_body()
    assert "mask" not in result.parameters.upstream_body()


def test_json_edit_with_an_unknown_upload_is_a_404_naming_it():
    body = f'{{"images": [{{"upload_id": "{UPLOAD_ID}"}}], "prompt": "p"}}'
    error = rejected(edit_from_uploads, body, FakeUploads(), max_image_bytes=LIMIT)
    assert isinstance(error, NotFound)
    assert (error.status, error.param, error.code) == (404, "images[0]", "upload_not_found")


def test_json_edit_with_an_oversized_upload_is_image_too_large():
    body = f'{{"images": [{{"upload_id": "{UPLOAD_ID}"}}], "prompt": "p"}}'
    error = rejected(edit_from_uploads, body, FakeUploads(too_large={UPLOAD_ID}), max_image_bytes=LIMIT)
    assert (error.status, error.param, error.code) == (400, "images[0]", "image_too_large")


def test_json_edit_upload_that_is_not_an_image():
    body = f'{{"images": [{{"upload_id": "{UPLOAD_ID}"}}], "prompt": "p"}}'
    error = rejected(edit_from_uploads, body, FakeUploads({UPLOAD_ID: (b"text", "t.png")}), max_image_bytes=LIMIT)
    assert (error.status, error.param, error.code) == (400, "images[0]", "invalid_image_format")


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ('{"prompt": "p"}', "images", "missing_required_parameter"),
        ('{"prompt": "p", "images": []}', "images", None),
        ('{"prompt": "p", "images": [{"upload_id": "../x"}]}', "images[0].upload_id", None),
        ("{not json", None, "invalid_json"),
        ("[]", None, "invalid_type"),
    ],
)
def test_json_edit_validation(body, param, code):
    uploads = FakeUploads()
    error = rejected(edit_from_uploads, body, uploads, max_image_bytes=LIMIT)
    assert error.status == 400
    assert error.param == param
    if code:
        assert error.code == code
    assert uploads.reads == []


@pytest.mark.parametrize(
    "upload_id",
    [
        "../x",
        "../../images/2026/01/01/x/0.png",
        "upl_short",
        "upl_" + "a" * 65,
        "upl_" + "a" * 19,
        "img_" + "a" * 32,
        "UPL_" + "a" * 32,
        "upl_" + "a" * 30 + "/..",
        "upl_" + "a" * 30 + "%2F",
        "upl_" + "a" * 32 + "\n",
        "uploads/abc/upl_" + "a" * 32,
        "",
    ],
)
def test_upload_ids_outside_the_pattern_are_refused(upload_id):
    with pytest.raises(ValidationError):
        UploadRef(upload_id=upload_id)


@pytest.mark.parametrize("upload_id", ["upl_" + "a" * 20, "upl_" + "Z9" * 32, "upl_" + "0123456789abcdef" * 2])
def test_well_formed_upload_ids_are_accepted(upload_id):
    assert UploadRef(upload_id=upload_id).upload_id == upload_id


@pytest.mark.parametrize(("count", "ok"), [(0, False), (1, True), (16, True), (17, False)])
def test_edit_upload_request_takes_1_to_16_images(count, ok):
    body = {"prompt": "p", "images": [{"upload_id": UPLOAD_ID}] * count}
    if ok:
        assert len(EditUploadRequest.model_validate(body).images) == count
    else:
        with pytest.raises(ValidationError):
            EditUploadRequest.model_validate(body)


def test_edit_upload_request_refuses_unknown_fields_in_a_ref():
    with pytest.raises(ValidationError):
        EditUploadRequest.model_validate({"prompt": "p", "images": [{"upload_id": UPLOAD_ID, "key": "uploads/x"}]})
