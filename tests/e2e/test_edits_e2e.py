"""Edits and uploads end to end through the local stack (``make run``): the official openai SDK and curl-style
multipart with httpx as clients, real images made with Pillow, results downloaded from the presigned URLs, and
what the upstream received read back from the simulator."""

from __future__ import annotations

import io
from typing import Any

import httpx
import openai
import pytest
from PIL import Image, ImageDraw

from tests.e2e.conftest import API_KEY
from tests.helpers import rgba_mask, sha256

pytestmark = pytest.mark.e2e

SECOND_KEY = "isk-e2e-second-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


# --- real images --------------------------------------------------------------------------------------------
def photo(width: int, height: int, seed: int = 0, sigma: float = 48) -> Image.Image:
    """A photo-like RGB picture: colour gradients, a few shapes and grain (compresses like a photograph)."""
    gradient = Image.linear_gradient("L")
    red = gradient.resize((width, height))
    green = gradient.rotate(90 + 90 * seed).resize((width, height))
    blue = Image.radial_gradient("L").resize((width, height))
    image = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(image)
    for i in range(4):
        x, y = (37 * (i + 1) * (seed + 3)) % width, (53 * (i + 2) * (seed + 5)) % height
        r = min(width, height) // (5 + i)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(40 * i, 255 - 50 * i, (90 * seed) % 256))
    grain = Image.effect_noise((width, height), sigma).convert("RGB")
    return Image.blend(image, grain, 0.25)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def png(width: int, height: int, seed: int = 0) -> bytes:
    return encode(photo(width, height, seed), "PNG")


def jpeg(width: int, height: int, seed: int = 0, quality: int = 90) -> bytes:
    return encode(photo(width, height, seed), "JPEG", quality=quality)


def noise_png(side: int) -> bytes:
    """Grain in three channels: a PNG about side * side * 3 bytes large (noise does not compress)."""
    noise = Image.effect_noise((side, side), 100)
    rgb = Image.merge("RGB", (noise, noise.rotate(90), noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    return encode(rgb, "PNG", compress_level=1)


# --- helpers ------------------------------------------------------------------------------------------------
def download(url: str) -> Image.Image:
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def upstream_request(stack: Any) -> dict[str, Any]:
    stats = httpx.get(stack.simulator_url.removesuffix("/v1") + "/_simulator/stats").json()
    return stats["last_request"]


def edit_multipart(stack: Any, files: list[tuple[str, Any]], key: str = API_KEY) -> httpx.Response:
    return httpx.post(
        stack.api_url + "/images/edits", files=files, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


# --- 1. the SDK with two PNGs and a mask --------------------------------------------------------------------
def test_sdk_edit_with_two_pngs_and_an_rgba_mask(stack, openai_client):
    first, second, mask = png(768, 512, seed=1), png(640, 640, seed=2), rgba_mask((768, 512))
    raw = openai_client.images.with_raw_response.edit(
        model="gpt-image-2",
        image=[("a.png", first, "image/png"), ("b.png", second, "image/png")],
        mask=("mask.png", mask, "image/png"),
        prompt="put the two scenes side by side under a stormy sky",
        size="1536x1024",
    )
    result = raw.parse()

    assert len(result.data) == 1
    image = download(result.data[0].url)
    assert (image.format, image.size) == ("PNG", (1536, 1024))
    assert result.usage.input_tokens_details.image_tokens > 0
    assert stack.upstream_calls() == 1

    received = upstream_request(stack)
    assert received["path"].endswith("/images/edits")
    assert received["headers"]["content-type"].startswith("multipart/form-data")
    parts = [(p["name"], p["filename"], p["content_type"], p["bytes"], p["sha256"]) for p in received["files"]]
    assert parts == [
        ("image[]", "a.png", "image/png", len(first), sha256(first)),
        ("image[]", "b.png", "image/png", len(second), sha256(second)),
        ("mask", "mask.png", "image/png", len(mask), sha256(mask)),
    ]
    assert received["form"]["size"] == "1536x1024"
    assert received["form"]["model"] == "gpt-image-2"
    assert "stormy sky" in received["form"]["prompt"]

    record = stack.request_record(raw.headers["x-amzn-requestid"])
    assert record["operation"] == "edits"
    assert (record["images_in"], record["mask"]) == (2, True)
    assert record["input_bytes"] == len(first) + len(second) + len(mask)
    assert record["outcome"] == "success"
    assert record["api_key_id"].startswith("key_")
    assert "stormy sky" not in stack.log_path.read_text()


def test_input_fidelity_is_accepted_but_not_forwarded(stack, openai_client):
    raw = openai_client.images.with_raw_response.edit(
        model="gpt-image-2",
        image=("photo.png", png(512, 512, seed=3), "image/png"),
        prompt="sharper",
        size="1024x1024",
        input_fidelity="high",
    )
    assert download(raw.parse().data[0].url).size == (1024, 1024)
    assert "input_fidelity" not in upstream_request(stack)["form"]
    assert stack.request_record(raw.headers["x-amzn-requestid"])["dropped_params"] == ["input_fidelity"]


# --- 2. curl-style multipart --------------------------------------------------------------------------------
def test_multipart_single_image_field_jpeg_in_webp_out(stack):
    photo_jpeg = jpeg(1024, 768, seed=4)
    response = edit_multipart(
        stack,
        [
            ("image", ("holiday.jpg", photo_jpeg, "image/jpeg")),
            ("prompt", (None, "make it golden hour")),
            ("model", (None, "gpt-image-2")),
            ("size", (None, "1024x1024")),
            ("output_format", (None, "webp")),
        ],
    )
    assert response.status_code == 200, response.text
    image = download(response.json()["data"][0]["url"])
    assert (image.format, image.size) == ("WEBP", (1024, 1024))

    received = upstream_request(stack)
    assert [(p["name"], p["filename"], p["content_type"], p["sha256"]) for p in received["files"]] == [
        ("image[]", "holiday.jpg", "image/jpeg", sha256(photo_jpeg))
    ]
    assert received["form"]["output_format"] == "webp"
    record = stack.request_record(response.headers["x-amzn-requestid"])
    assert (record["operation"], record["images_in"], record["mask"]) == ("edits", 1, False)


def test_multipart_indexed_images_are_forwarded_in_index_order(stack):
    zero, one = jpeg(800, 600, seed=5), jpeg(600, 800, seed=6)
    response = edit_multipart(
        stack,
        [
            ("prompt", (None, "blend the two")),
            ("image[1]", ("one.jpg", one, "image/jpeg")),
            ("image[0]", ("zero.jpg", zero, "image/jpeg")),
            ("size", (None, "1536x1024")),
            ("output_format", (None, "webp")),
        ],
    )
    assert response.status_code == 200, response.text
    image = download(response.json()["data"][0]["url"])
    assert (image.format, image.size) == ("WEBP", (1536, 1024))
    received = upstream_request(stack)
    assert [(p["name"], p["filename"], p["sha256"]) for p in received["files"]] == [
        ("image[]", "zero.jpg", sha256(zero)),
        ("image[]", "one.jpg", sha256(one)),
    ]


def test_declared_type_is_ignored_the_real_one_is_forwarded(stack):
    """A JPEG sent as "image/png" named .png is checked and forwarded as what its bytes are."""
    real_jpeg = jpeg(512, 512, seed=8)
    response = edit_multipart(
        stack,
        [("image", ("looks.png", real_jpeg, "image/png")), ("prompt", (None, "p")), ("size", (None, "1024x1024"))],
    )
    assert response.status_code == 200, response.text
    [part] = upstream_request(stack)["files"]
    assert (part["content_type"], part["sha256"]) == ("image/jpeg", sha256(real_jpeg))


# --- 3. bad inputs: a 400 naming the field, never an upstream call ------------------------------------------
def _sdk_bad_request(call: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict) and body["message"] and body["type"] == "invalid_request_error"
    return body


def test_bad_images_are_400s_naming_the_field_without_an_upstream_call(stack, openai_client):
    first = png(512, 512, seed=9)

    def edit(**kwargs: Any) -> Any:
        return openai_client.images.edit(model="gpt-image-2", prompt="edit this", **kwargs)

    # A text file renamed .png and declared image/png.
    text = b"Dear diary,\nthis is not a picture at all.\n" * 50
    body = _sdk_bad_request(lambda: edit(image=[("first.png", first, "image/png"), ("notes.png", text, "image/png")]))
    assert (body["param"], body["code"]) == ("image[1]", "invalid_image_format")
    body = _sdk_bad_request(lambda: edit(image=("notes.png", text, "image/png")))
    assert body["param"] in ("image", "image[0]")
    assert body["code"] == "invalid_image_format"

    # A truncated PNG is not readable either.
    body = _sdk_bad_request(lambda: edit(image=[("cut.png", first[: len(first) // 2], "image/png")]))
    assert (body["param"], body["code"]) == ("image[0]", "invalid_image_format")

    # A mask of a different size than the first image.
    body = _sdk_bad_request(
        lambda: edit(image=[("a.png", first, "image/png")], mask=("mask.png", rgba_mask((256, 256)), "image/png"))
    )
    assert (body["param"], body["code"]) == ("mask", "invalid_mask")
    assert "size" in body["message"]

    # A mask without an alpha channel.
    opaque_mask = encode(photo(512, 512, seed=10), "PNG")
    body = _sdk_bad_request(
        lambda: edit(image=[("a.png", first, "image/png")], mask=("mask.png", opaque_mask, "image/png"))
    )
    assert (body["param"], body["code"]) == ("mask", "invalid_mask")
    assert "alpha" in body["message"]

    # A mask in another format than the first image (WebP with alpha for a PNG).
    webp_mask = encode(Image.open(io.BytesIO(rgba_mask((512, 512)))), "WEBP", lossless=True)
    body = _sdk_bad_request(
        lambda: edit(image=[("a.png", first, "image/png")], mask=("mask.webp", webp_mask, "image/webp"))
    )
    assert (body["param"], body["code"]) == ("mask", "invalid_mask")

    # 17 images.
    many = [(f"{i}.png", png(64, 64, seed=i), "image/png") for i in range(17)]
    body = _sdk_bad_request(lambda: edit(image=many))
    assert (body["param"], body["code"]) == ("image", "too_many_images")

    # A size the model does not take.
    body = _sdk_bad_request(lambda: edit(image=[("a.png", first, "image/png")], size="1000x1000"))
    assert body["param"] == "size"
    assert "multiples of 16" in body["message"]

    assert stack.upstream_calls() == 0


def test_bad_bodies_are_400_or_415_never_500_and_never_upstream(stack):
    # Multipart with only a prompt: no image at all.
    error = assert_openai_error(edit_multipart(stack, [("prompt", (None, "where is my picture?"))]), 400)
    assert (error["param"], error["code"]) == ("image", "missing_required_parameter")

    # An image sent as a text field, not a file.
    error = assert_openai_error(edit_multipart(stack, [("image", (None, "a.png")), ("prompt", (None, "p"))]), 400)
    assert error["param"] == "image"

    # A JSON body without images.
    response = httpx.post(stack.api_url + "/images/edits", json={"prompt": "p"}, headers=AUTH)
    error = assert_openai_error(response, 400)
    assert error["param"] == "images"

    # A truncated multipart body.
    good = httpx.Request(
        "POST",
        stack.api_url + "/images/edits",
        files=[("image", ("a.png", png(256, 256), "image/png")), ("prompt", (None, "p"))],
    )
    good.read()
    truncated = httpx.post(
        stack.api_url + "/images/edits",
        content=good.content[: len(good.content) // 2],
        headers={**AUTH, "Content-Type": good.headers["Content-Type"]},
    )
    assert truncated.status_code == 400, truncated.text

    # Garbage under a multipart content type, and a multipart content type without a boundary.
    for content_type in ("multipart/form-data; boundary=xyz", "multipart/form-data"):
        response = httpx.post(
            stack.api_url + "/images/edits",
            content=b"\x00\xffnot multipart at all" * 100,
            headers={**AUTH, "Content-Type": content_type},
        )
        assert_openai_error(response, 400)

    # Neither multipart nor JSON.
    response = httpx.post(
        stack.api_url + "/images/edits",
        content=b"prompt=hello",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_openai_error(response, 415)

    assert stack.upstream_calls() == 0


# --- 4. the upload flow -------------------------------------------------------------------------------------
def big_jpeg() -> bytes:
    """A 4000x3000 photo of pure grain at quality 100: about 20 MB, like a phone camera's largest JPEG."""
    noise = Image.effect_noise((4000, 3000), 80)
    rgb = Image.merge("RGB", (noise, noise.rotate(180), noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    data = encode(rgb, "JPEG", quality=100)
    assert 15 * 1024 * 1024 <= len(data) < 50 * 1024 * 1024, len(data)
    return data


def upload(stack: Any, data: bytes, content_type: str, filename: str, key: str = API_KEY) -> dict[str, Any]:
    response = httpx.post(
        stack.api_url + "/uploads",
        json={"content_type": content_type, "bytes": len(data), "filename": filename, "purpose": "image"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    ticket = response.json()
    assert ticket["object"] == "upload"
    assert ticket["id"].startswith("upl_")
    assert (ticket["content_type"], ticket["max_bytes"]) == (content_type, len(data))
    posted = httpx.post(
        ticket["url"], data=ticket["fields"], files={"file": (filename, data, content_type)}, timeout=120
    )
    assert posted.status_code in (200, 201, 204), posted.text
    return ticket


def test_upload_a_20_mb_jpeg_then_edit_it(stack):
    data = big_jpeg()
    ticket = upload(stack, data, "image/jpeg", "IMG_0001.jpg")
    assert stack.upstream_calls() == 0

    response = httpx.post(
        stack.api_url + "/images/edits",
        json={"images": [{"upload_id": ticket["id"]}], "prompt": "remove the grain", "size": "1536x1024"},
        headers=AUTH,
        timeout=120,
    )
    assert response.status_code == 200, response.text
    image = download(response.json()["data"][0]["url"])
    assert (image.format, image.size) == ("PNG", (1536, 1024))

    assert stack.upstream_calls() == 1
    [part] = upstream_request(stack)["files"]
    assert (part["name"], part["filename"], part["content_type"]) == ("image[]", "IMG_0001.jpg", "image/jpeg")
    assert (part["bytes"], part["sha256"]) == (len(data), sha256(data))
    record = stack.request_record(response.headers["x-amzn-requestid"])
    assert (record["operation"], record["images_in"], record["input_bytes"]) == ("edits", 1, len(data))

    # Another caller naming the same upload id: not found (not forbidden), and nothing goes upstream.
    other = httpx.post(
        stack.api_url + "/images/edits",
        json={"images": [{"upload_id": ticket["id"]}], "prompt": "steal it"},
        headers={"Authorization": f"Bearer {SECOND_KEY}"},
    )
    error = assert_openai_error(other, 404)
    assert (error["code"], error["param"]) == ("upload_not_found", "images[0]")
    assert stack.upstream_calls() == 1


def test_uploaded_image_and_mask_are_checked_like_inline_ones(stack):
    first = png(512, 512, seed=11)
    image_ticket = upload(stack, first, "image/png", "first.png")
    good_mask = rgba_mask((512, 512))
    mask_ticket = upload(stack, good_mask, "image/png", "mask.png")
    wrong_mask_ticket = upload(stack, rgba_mask((320, 320)), "image/png", "small-mask.png")

    def edit(mask_id: str) -> httpx.Response:
        return httpx.post(
            stack.api_url + "/images/edits",
            json={
                "images": [{"upload_id": image_ticket["id"]}],
                "mask": {"upload_id": mask_id},
                "prompt": "a door in the wall",
                "size": "1024x1024",
            },
            headers=AUTH,
            timeout=120,
        )

    error = assert_openai_error(edit(wrong_mask_ticket["id"]), 400)
    assert (error["param"], error["code"]) == ("mask", "invalid_mask")
    assert stack.upstream_calls() == 0

    response = edit(mask_ticket["id"])
    assert response.status_code == 200, response.text
    assert download(response.json()["data"][0]["url"]).size == (1024, 1024)
    received = upstream_request(stack)["files"]
    assert [(p["name"], p["sha256"]) for p in received] == [("image[]", sha256(first)), ("mask", sha256(good_mask))]


def test_unknown_upload_id_is_a_404_and_a_path_is_a_400(stack):
    response = httpx.post(
        stack.api_url + "/images/edits",
        json={"images": [{"upload_id": "upl_" + "0" * 32}], "prompt": "p"},
        headers=AUTH,
    )
    assert assert_openai_error(response, 404)["code"] == "upload_not_found"
    response = httpx.post(
        stack.api_url + "/images/edits",
        json={"images": [{"upload_id": "../../images/anything"}], "prompt": "p"},
        headers=AUTH,
    )
    assert assert_openai_error(response, 400)["param"].startswith("images")
    assert stack.upstream_calls() == 0


# --- 5. too large for API Gateway + Lambda ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("side", "low", "high"),
    [
        # ~6.3 MB of PNG: 8.4 MB once base64-encoded, over Lambda's 6 MB event (the gateway answers).
        (1500, 6_000_000, 7_000_000),
        # ~4.6 MB: 6.1 MB base64-encoded fits the 6 MB event, but is over the function's own 4.4 MB.
        (1275, 4_450_000, 4_650_000),
    ],
)
def test_inline_body_too_large_is_a_413_that_points_to_uploads(stack, side, low, high):
    data = noise_png(side)
    assert low <= len(data) <= high, len(data)
    response = edit_multipart(
        stack, [("image", ("big.png", data, "image/png")), ("prompt", (None, "p")), ("size", (None, "1024x1024"))]
    )
    error = assert_openai_error(response, 413)
    assert "/v1/uploads" in error["message"], error
    assert (error["type"], error["code"]) == ("invalid_request_error", "payload_too_large")
    assert stack.upstream_calls() == 0


# --- 6. auth on uploads -------------------------------------------------------------------------------------
def test_wrong_or_missing_key_on_uploads_is_a_401_in_the_openai_shape(stack):
    ask = {"content_type": "image/png", "bytes": 1000, "purpose": "image"}
    for headers in ({"Authorization": "Bearer isk-wrong"}, {}):
        response = httpx.post(stack.api_url + "/uploads", json=ask, headers=headers)
        error = assert_openai_error(response, 401)
        assert error["code"] == "invalid_api_key"


def test_upload_request_is_validated(stack):
    for ask, param in (
        ({"content_type": "image/gif", "bytes": 1000}, "content_type"),
        ({"content_type": "image/png", "bytes": 51 * 1024 * 1024}, "bytes"),
    ):
        response = httpx.post(stack.api_url + "/uploads", json=ask, headers=AUTH)
        error = assert_openai_error(response, 400)
        assert error["param"] == param
