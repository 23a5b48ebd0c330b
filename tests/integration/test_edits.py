"""POST /v1/images/edits (and POST /v1/uploads) through the real handlers in-process: moto for S3, the upstream
simulator on a real HTTP port. Multipart bodies come from a real encoder (httpx, as the openai SDK sends them)
and reach the handler base64-encoded, as API Gateway delivers the multipart/form-data binary media type."""

from __future__ import annotations

import base64
import io
import json
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
from PIL import Image

from imagecore.storage.store import owner_prefix
from tests.conftest import UPSTREAM_KEY, owner_of_key_id
from tests.helpers import multipart, rgba_mask, sha256
from tests.integration.conftest import BUCKET, set_function_env

KEY_ID = "key_test0000001"
OTHER_KEY_ID = "key_other000002"


# --- images ------------------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def picture(size: tuple[int, int] = (256, 256), color: tuple[int, ...] = (200, 80, 40), fmt: str = "PNG") -> bytes:
    return encode(Image.new("RGB", size, color), fmt)


def noisy_png(size: tuple[int, int], seed: int = 1) -> bytes:
    """Random pixels: a PNG that stays big (about 3 bytes a pixel)."""
    rng = random.Random(seed)
    return encode(Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3)))


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture
def configure_edits(monkeypatch: pytest.MonkeyPatch, simulator: Any, aws: Any) -> Iterator[Any]:
    """The edits and uploads functions' environment (as the template sets it), both started cold."""
    from functions.edits import app as edits
    from functions.uploads import app as uploads

    def clear() -> None:
        edits.deps.cache_clear()
        edits.upload_store.cache_clear()
        uploads.settings.cache_clear()
        uploads.upload_store.cache_clear()

    def apply(**overrides: str) -> Any:
        set_function_env(monkeypatch, simulator.url, **overrides)
        clear()
        return edits

    yield apply
    clear()


@pytest.fixture
def edits(configure_edits: Any) -> Any:
    return configure_edits()


@pytest.fixture
def edit_event(api_event: Any):
    """An API Gateway event for POST /v1/images/edits: multipart base64-encoded (binary media type), or JSON."""

    def build(
        *,
        body: bytes | str = b"",
        content_type: str = "multipart/form-data",
        base64_encoded: bool | None = None,
        key_id: str | None = KEY_ID,
        path: str = "/v1/images/edits",
    ) -> dict[str, Any]:
        headers = {
            "Authorization": "Bearer isk-example-not-a-real-key",
            "Content-Type": content_type,
            "Host": "abcdef1234.execute-api.us-east-1.amazonaws.com",
            "User-Agent": "OpenAI/Python 3.51.0",
        }
        binary = content_type.lower().startswith("multipart/form-data") if base64_encoded is None else base64_encoded
        if isinstance(body, bytes):
            raw = base64.b64encode(body).decode("ascii") if binary else body.decode("utf-8")
        else:
            raw = body
        event = api_event("generations", raw_body=raw, headers=headers, key_id=key_id)
        event["path"] = event["resource"] = path
        event["requestContext"]["resourcePath"] = path
        event["requestContext"]["path"] = "/prod" + path
        event["isBase64Encoded"] = bool(raw) and binary
        return event

    return build


def result_of(response: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return response["statusCode"], json.loads(response["body"]) if response.get("body") else {}


@pytest.fixture
def send_multipart(edits: Any, edit_event: Any, lambda_context: Any):
    """Encode fields + files with httpx and POST them through the edits handler; returns (status, json)."""

    def call(
        fields: dict[str, Any], files: list[tuple[str, tuple[str, bytes, str]]], **options: Any
    ) -> tuple[int, dict[str, Any]]:
        body, content_type = multipart(fields, files)
        return result_of(
            edits.lambda_handler(edit_event(body=body, content_type=content_type, **options), lambda_context)
        )

    return call


@pytest.fixture
def send_json(edits: Any, edit_event: Any, lambda_context: Any):
    def call(payload: Any, **options: Any) -> tuple[int, dict[str, Any]]:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        event = edit_event(body=body, content_type="application/json", **options)
        return result_of(edits.lambda_handler(event, lambda_context))

    return call


def open_stored(s3: Any, url: str) -> tuple[Image.Image, dict[str, Any]]:
    obj = s3.get_object(Bucket=BUCKET, Key=urlparse(url).path.lstrip("/"))
    image = Image.open(io.BytesIO(obj["Body"].read()))
    image.load()
    return image, obj


def stored_count(s3: Any) -> int:
    return len([o for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) if o["Key"].startswith("images/")])


# --- 1. the SDK's edit: two images and a mask ----------------------------------------------------------------


def test_two_images_and_a_mask_are_forwarded_intact_and_the_result_stored(send_multipart, aws, simulator, log_tap):
    first, second, mask = picture(), picture((320, 200), (10, 160, 90)), rgba_mask()
    fields = {
        "prompt": "put the two objects on one table",
        "model": "gpt-image-2",
        "size": "1024x1536",
        "quality": "low",
        "n": "1",
        "input_fidelity": "high",
        "response_format": "url",
    }
    files = [
        ("image[]", ("first.png", first, "image/png")),
        ("image[]", ("second.png", second, "image/png")),
        ("mask", ("mask.png", mask, "image/png")),
    ]

    status, body = send_multipart(fields, files)

    assert status == 200, body
    assert (body["size"], body["quality"], body["output_format"], body["model"]) == (
        "1024x1536",
        "low",
        "png",
        "gpt-image-2",
    )
    (item,) = body["data"]
    image, obj = open_stored(aws, item["url"])
    assert (image.format, image.size) == ("PNG", (1024, 1536))
    assert obj["ContentType"] == "image/png"

    # What the upstream received: 2 image[] parts and a mask with the original names, types and bytes.
    assert simulator.calls == 1
    sent = simulator.last_request
    assert sent["path"].endswith("/images/edits")
    assert sent["authorization_ok"] is True
    assert sent["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    parts = [(p["name"], p["filename"], p["content_type"], p["bytes"], p["sha256"]) for p in sent["files"]]
    assert parts == [
        ("image[]", "first.png", "image/png", len(first), sha256(first)),
        ("image[]", "second.png", "image/png", len(second), sha256(second)),
        ("mask", "mask.png", "image/png", len(mask), sha256(mask)),
    ]
    assert sent["form"] == {
        "prompt": "put the two objects on one table",
        "model": "gpt-image-2",
        "n": "1",
        "size": "1024x1536",
        "quality": "low",
        "output_format": "png",
    }

    (record,) = log_tap.records()
    line = record["request"]
    assert line["operation"] == "edits"
    assert (line["images_in"], line["mask"], line["dropped_params"]) == (2, True, ["input_fidelity"])
    assert line["input_bytes"] == len(first) + len(second) + len(mask)
    assert line["usage"] == body["usage"]
    assert line["usage"]["input_tokens_details"]["image_tokens"] > 0
    assert (line["attempts"], line["status"], line["outcome"]) == (1, 200, "success")
    assert line["api_key_id"] == KEY_ID
    assert "put the two objects" not in log_tap.text
    assert UPSTREAM_KEY not in log_tap.text


def test_without_input_fidelity_nothing_is_said_dropped(send_multipart, simulator, log_tap):
    status, body = send_multipart({"prompt": "p", "size": "1024x1024"}, [("image", ("a.png", picture(), "image/png"))])
    assert status == 200, body
    line = log_tap.records()[0]["request"]
    assert (line["images_in"], line["mask"], line["dropped_params"]) == (1, False, None)
    assert [p["name"] for p in simulator.last_request["files"]] == ["image[]"]


def test_indexed_parts_are_forwarded_in_index_order(send_multipart, simulator):
    images = {i: picture((64 + 16 * i, 64)) for i in range(3)}
    files = [(f"image[{i}]", (f"{i}.png", images[i], "image/png")) for i in (2, 0, 1)]
    status, body = send_multipart({"prompt": "p", "size": "1024x1024"}, files)
    assert status == 200, body
    sent = simulator.last_request["files"]
    assert [(p["name"], p["filename"], p["sha256"]) for p in sent] == [
        ("image[]", f"{i}.png", sha256(images[i])) for i in range(3)
    ]


def test_a_jpeg_named_png_is_forwarded_with_its_real_type(send_multipart, simulator):
    jpeg = picture(fmt="JPEG")
    status, body = send_multipart({"prompt": "p", "size": "1024x1024"}, [("image[]", ("photo.png", jpeg, "image/png"))])
    assert status == 200, body
    (part,) = simulator.last_request["files"]
    assert (part["filename"], part["content_type"], part["sha256"]) == ("photo.png", "image/jpeg", sha256(jpeg))


def test_b64_json_edit_answers_inline(send_multipart, aws):
    status, body = send_multipart(
        {"prompt": "p", "size": "1024x1024", "response_format": "b64_json", "output_format": "webp"},
        [("image[]", ("a.png", picture(), "image/png"))],
    )
    assert status == 200, body
    image = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    assert (image.format, image.size) == ("WEBP", (1024, 1024))
    assert stored_count(aws) == 1


# --- 2. every bad input is a 400 naming the field, with no upstream call --------------------------------------

GOOD = ("image[]", ("a.png", picture(), "image/png"))

BAD_MULTIPART = [
    (
        "no-image",
        {"prompt": "p"},
        [("mask", ("m.png", rgba_mask(), "image/png"))],
        "image",
        "missing_required_parameter",
    ),
    ("not-an-image", {"prompt": "p"}, [("image[]", ("a.png", b"hello, I am text", "image/png"))], "image[0]", None),
    ("gif", {"prompt": "p"}, [("image[]", ("a.png", picture(fmt="GIF"), "image/png"))], "image[0]", None),
    (
        "truncated-png",
        {"prompt": "p"},
        [("image[]", ("a.png", noisy_png((64, 64))[:-100], "image/png"))],
        "image[0]",
        None,
    ),
    (
        "mask-size",
        {"prompt": "p"},
        [GOOD, ("mask", ("m.png", rgba_mask((128, 128)), "image/png"))],
        "mask",
        "invalid_mask",
    ),
    ("mask-no-alpha", {"prompt": "p"}, [GOOD, ("mask", ("m.png", picture(), "image/png"))], "mask", "invalid_mask"),
    (
        "mask-format",
        {"prompt": "p"},
        [GOOD, ("mask", ("m.jpg", picture(fmt="JPEG"), "image/jpeg"))],
        "mask",
        "invalid_mask",
    ),
    ("bad-size", {"prompt": "p", "size": "1000x1000"}, [GOOD], "size", None),
    ("transparent", {"prompt": "p", "background": "transparent"}, [GOOD], "background", None),
    ("bad-n", {"prompt": "p", "n": "abc"}, [GOOD], "n", None),
    ("no-prompt", {"size": "1024x1024"}, [GOOD], "prompt", "missing_required_parameter"),
    ("unknown-field", {"prompt": "p", "style": "vivid"}, [GOOD], "style", "unknown_parameter"),
    (
        "unknown-file",
        {"prompt": "p"},
        [GOOD, ("picture", ("p.png", picture(), "image/png"))],
        "picture",
        "unknown_parameter",
    ),
    ("image-as-text", {"prompt": "p", "image": "a.png"}, [GOOD], "image", "invalid_type"),
    ("too-many", {"prompt": "p"}, [GOOD] * 17, "image", "too_many_images"),
]


@pytest.mark.parametrize(
    ("fields", "files", "param", "code"), [case[1:] for case in BAD_MULTIPART], ids=[case[0] for case in BAD_MULTIPART]
)
def test_each_bad_multipart_input_is_a_400_naming_the_field(send_multipart, simulator, aws, fields, files, param, code):
    status, body = send_multipart(fields, files)

    assert status == 400, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert param in error["message"]
    if code:
        assert error["code"] == code
    assert simulator.calls == 0
    assert stored_count(aws) == 0


def test_an_image_over_the_configured_limit_is_a_400(configure_edits, edit_event, lambda_context, simulator):
    edits = configure_edits(MAX_INPUT_IMAGE_BYTES="2000")
    body, content_type = multipart({"prompt": "p"}, [GOOD, ("image[]", ("big.png", noisy_png((64, 64)), "image/png"))])
    status, payload = result_of(edits.lambda_handler(edit_event(body=body, content_type=content_type), lambda_context))
    assert status == 400
    assert (payload["error"]["param"], payload["error"]["code"]) == ("image[1]", "image_too_large")
    assert simulator.calls == 0


def good_body() -> tuple[bytes, str]:
    return multipart({"prompt": "p", "size": "1024x1024"}, [GOOD, ("mask", ("m.png", rgba_mask(), "image/png"))])


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9])
def test_a_truncated_multipart_body_is_a_400(edits, edit_event, lambda_context, simulator, log_tap, cut):
    body, content_type = good_body()
    response = edits.lambda_handler(
        edit_event(body=body[: int(len(body) * cut)], content_type=content_type), lambda_context
    )
    status, payload = result_of(response)
    assert status == 400, payload
    assert payload["error"]["code"] == "invalid_multipart"
    assert simulator.calls == 0
    assert log_tap.records()[0]["request"]["outcome"] == "rejected"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", None),  # no boundary
        ("multipart/form-data; boundary=not-the-one", None),
        ("multipart/form-data; boundary=B", b""),
        ("multipart/form-data; boundary=B", b"\x00\xff garbage \r\n--B\r\n"),
        ("multipart/form-data; boundary=B", b"--B\r\nContent-Disposition: form-data\r\n\r\nx\r\n--B--\r\n"),
        (
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; filename="a.png"\r\n\r\nx\r\n--B--\r\n',
        ),
    ],
    ids=["no-boundary", "boundary-mismatch", "empty", "garbage", "nameless-part", "nameless-file"],
)
def test_garbage_multipart_is_a_400_never_a_500(edits, edit_event, lambda_context, simulator, content_type, body):
    if body is None:
        body, _ = good_body()
    status, payload = result_of(edits.lambda_handler(edit_event(body=body, content_type=content_type), lambda_context))
    assert status == 400, payload
    assert payload["error"]["code"] in ("invalid_multipart", "missing_required_parameter")
    assert simulator.calls == 0


def test_a_body_that_is_not_base64_is_a_400(edits, edit_event, lambda_context, simulator):
    event = edit_event(body=b"x", content_type="multipart/form-data; boundary=B")
    event["body"] = "@@@ not base64 @@@"
    status, payload = result_of(edits.lambda_handler(event, lambda_context))
    assert (status, payload["error"]["code"], simulator.calls) == (400, "invalid_body", 0)


def test_an_edit_without_the_authorizer_context_is_refused(send_multipart, simulator):
    status, body = send_multipart({"prompt": "p"}, [GOOD], key_id=None)
    assert (status, body["error"]["code"], simulator.calls) == (401, "unauthenticated", 0)


# --- 3. content types ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"prompt=hello&size=1024x1024"),
        ("text/plain", b'{"prompt": "p"}'),
        ("image/png", picture()),
    ],
)
def test_other_content_types_are_415(edits, edit_event, lambda_context, simulator, content_type, body):
    event = edit_event(body=body, content_type=content_type, base64_encoded=content_type == "image/png")
    status, payload = result_of(edits.lambda_handler(event, lambda_context))
    assert status == 415, payload
    assert payload["error"]["code"] == "unsupported_media_type"
    assert "multipart/form-data" in payload["error"]["message"]
    assert simulator.calls == 0


def test_a_json_body_without_images_is_a_400_naming_images(send_json, simulator):
    status, body = send_json({"prompt": "p", "size": "1024x1024"})
    assert status == 400, body
    assert (body["error"]["param"], body["error"]["code"]) == ("images", "missing_required_parameter")
    assert simulator.calls == 0


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ('{"prompt": "p", "images": [', "invalid_json"),
        ("not json", "invalid_json"),
        ("[1]", "invalid_type"),
        ("", None),
    ],
)
def test_unparseable_json_is_a_400(send_json, simulator, raw, code):
    status, body = send_json(raw)
    assert status == 400, body
    if code:
        assert body["error"]["code"] == code
    assert simulator.calls == 0


def test_json_with_inline_image_data_is_refused(send_json, simulator):
    status, body = send_json({"prompt": "p", "images": [{"image_url": "data:image/png;base64,AAAA"}]})
    assert status == 400, body
    assert body["error"]["param"].startswith("images[0]")
    assert simulator.calls == 0


# --- 4. too large for API Gateway + Lambda -------------------------------------------------------------------


def test_a_multipart_body_over_the_inline_limit_is_a_413_pointing_at_uploads(
    configure_edits, edit_event, lambda_context, simulator, log_tap
):
    edits = configure_edits(MAX_REQUEST_BYTES="50000")
    big = noisy_png((160, 160))
    assert len(big) > 50_000
    body, content_type = multipart({"prompt": "p"}, [("image[]", ("big.png", big, "image/png"))])

    status, payload = result_of(edits.lambda_handler(edit_event(body=body, content_type=content_type), lambda_context))

    assert status == 413, payload
    error = payload["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "payload_too_large")
    assert "/v1/uploads" in error["message"]
    assert "upload_id" in error["message"]
    assert simulator.calls == 0
    assert log_tap.records()[0]["request"]["status"] == 413


def test_a_body_just_under_the_limit_passes(configure_edits, edit_event, lambda_context, simulator):
    body, content_type = multipart({"prompt": "p", "size": "1024x1024"}, [GOOD])
    edits = configure_edits(MAX_REQUEST_BYTES=str(len(body)))
    status, payload = result_of(edits.lambda_handler(edit_event(body=body, content_type=content_type), lambda_context))
    assert status == 200, payload
    assert simulator.calls == 1


# --- 5. large inputs through /v1/uploads ---------------------------------------------------------------------


@pytest.fixture
def request_upload(edits: Any, edit_event: Any, lambda_context: Any):
    """POST /v1/uploads through the uploads handler; returns (status, json)."""
    from functions.uploads import app as uploads

    def call(payload: dict[str, Any], key_id: str = KEY_ID) -> tuple[int, dict[str, Any]]:
        event = edit_event(body=json.dumps(payload), content_type="application/json", key_id=key_id, path="/v1/uploads")
        return result_of(uploads.lambda_handler(event, lambda_context))

    return call


def put_upload(s3: Any, ticket: dict[str, Any], data: bytes, filename: str, content_type: str = "image/png") -> None:
    """What S3 does with the presigned POST (moto cannot be reached over HTTP): the object, at the ticket's key."""
    s3.put_object(
        Bucket=BUCKET, Key=ticket["fields"]["key"], Body=data, ContentType=content_type, Metadata={"filename": filename}
    )


def test_upload_then_edit_by_upload_id(request_upload, send_json, aws, simulator, log_tap):
    big = noisy_png((300, 300))
    status, ticket = request_upload({"content_type": "image/png", "bytes": len(big), "filename": "big.png"})

    assert status == 200, ticket
    assert ticket["object"] == "upload"
    assert ticket["id"].startswith("upl_")
    assert ticket["content_type"] == "image/png"
    assert ticket["max_bytes"] == len(big)
    fields = ticket["fields"]
    assert fields["key"] == owner_prefix(owner_of_key_id(KEY_ID)) + ticket["id"]
    assert fields["key"].startswith("uploads/")
    assert fields["Content-Type"] == "image/png"
    assert fields["x-amz-meta-filename"] == "big.png"
    policy = json.loads(base64.b64decode(fields["policy"]))
    conditions = policy["conditions"]
    assert {"Content-Type": "image/png"} in conditions
    assert ["content-length-range", 1, len(big)] in conditions
    assert {"bucket": BUCKET} in conditions
    assert {"key": fields["key"]} in conditions
    assert BUCKET in ticket["url"]

    put_upload(aws, ticket, big, "big.png")
    status, body = send_json({"images": [{"upload_id": ticket["id"]}], "prompt": "sharpen it", "size": "1024x1024"})

    assert status == 200, body
    image, _ = open_stored(aws, body["data"][0]["url"])
    assert image.size == (1024, 1024)
    assert simulator.calls == 1
    (part,) = simulator.last_request["files"]
    assert (part["name"], part["filename"], part["content_type"]) == ("image[]", "big.png", "image/png")
    assert (part["bytes"], part["sha256"]) == (len(big), sha256(big))
    assert simulator.last_request["form"]["prompt"] == "sharpen it"
    line = log_tap.records()[-1]["request"]
    assert (line["operation"], line["images_in"], line["input_bytes"]) == ("edits", 1, len(big))


def test_uploaded_image_and_mask_by_upload_id(request_upload, send_json, aws, simulator):
    image, mask = picture((512, 512)), rgba_mask((512, 512))
    ids = []
    for data, name, purpose in ((image, "photo.png", "image"), (mask, "mask.png", "mask")):
        status, ticket = request_upload(
            {"content_type": "image/png", "bytes": len(data), "filename": name, "purpose": purpose}
        )
        assert status == 200, ticket
        put_upload(aws, ticket, data, name)
        ids.append(ticket["id"])

    status, body = send_json({"images": [{"upload_id": ids[0]}], "mask": {"upload_id": ids[1]}, "prompt": "p"})

    assert status == 200, body
    parts = [(p["name"], p["filename"], p["sha256"]) for p in simulator.last_request["files"]]
    assert parts == [("image[]", "photo.png", sha256(image)), ("mask", "mask.png", sha256(mask))]


def test_an_uploaded_object_is_checked_like_a_multipart_one(request_upload, send_json, aws, simulator):
    status, ticket = request_upload({"content_type": "image/png", "bytes": 100, "filename": "fake.png"})
    assert status == 200
    put_upload(aws, ticket, b"this is not a png at all", "fake.png")
    status, body = send_json({"images": [{"upload_id": ticket["id"]}], "prompt": "p"})
    assert status == 400, body
    assert (body["error"]["param"], body["error"]["code"]) == ("images[0]", "invalid_image_format")
    assert simulator.calls == 0


@pytest.fixture
def spool_seen(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> dict[str, Any]:
    """Lambda's /tmp for the request (``tempfile.tempdir``), and what each request's ``InputFiles`` held just
    before it was removed."""
    import tempfile

    from imagecore.storage.spool import InputFiles

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: dict[str, Any] = {"root": tmp_path, "files": []}
    close = InputFiles.close

    def looked_at_then_closed(self: InputFiles) -> None:
        if self.directory is not None:
            seen["files"].append(sorted((f.name, f.stat().st_size) for f in self.directory.iterdir()))
        close(self)

    monkeypatch.setattr(InputFiles, "close", looked_at_then_closed)
    return seen


def test_uploads_go_to_the_upstream_from_local_disk_which_is_emptied_after(
    request_upload, send_json, aws, simulator, spool_seen
):
    image, mask = noisy_png((400, 300)), rgba_mask((400, 300))
    ids = []
    for data, name in ((image, "photo.png"), (mask, "mask.png")):
        _, ticket = request_upload({"content_type": "image/png", "bytes": len(data), "filename": name})
        put_upload(aws, ticket, data, name)
        ids.append(ticket["id"])
    simulator.queue_faults({"status": 503})  # the retry sends every file again, from its start

    status, body = send_json({"images": [{"upload_id": ids[0]}], "mask": {"upload_id": ids[1]}, "prompt": "p"})

    assert status == 200, body
    assert simulator.calls == 2
    parts = [(p["name"], p["bytes"], p["sha256"]) for p in simulator.last_request["files"]]
    assert parts == [("image[]", len(image), sha256(image)), ("mask", len(mask), sha256(mask))]
    assert sorted(size for _, size in spool_seen["files"][-1]) == sorted([len(image), len(mask)])
    assert list(spool_seen["root"].iterdir()) == []  # removed once the answer was made


def test_local_disk_is_emptied_when_an_upload_is_refused(request_upload, send_json, aws, simulator, spool_seen):
    good = picture()
    _, first = request_upload({"content_type": "image/png", "bytes": len(good), "filename": "a.png"})
    put_upload(aws, first, good, "a.png")
    _, second = request_upload({"content_type": "image/png", "bytes": 100, "filename": "fake.png"})
    put_upload(aws, second, b"this is not a png at all", "fake.png")

    status, body = send_json({"images": [{"upload_id": first["id"]}, {"upload_id": second["id"]}], "prompt": "p"})

    assert (status, body["error"]["param"], body["error"]["code"]) == (400, "images[1]", "invalid_image_format")
    assert simulator.calls == 0
    assert len(spool_seen["files"][-1]) == 2  # both were on disk when the second was refused
    assert list(spool_seen["root"].iterdir()) == []


def test_an_upload_s3_cannot_give_is_a_503_and_local_disk_is_emptied(
    request_upload, send_json, aws, simulator, spool_seen, aws_faults
):
    good = picture()
    _, ticket = request_upload({"content_type": "image/png", "bytes": len(good), "filename": "a.png"})
    put_upload(aws, ticket, good, "a.png")
    aws_faults.fail("s3", "GetObject", times=20)

    status, body = send_json({"images": [{"upload_id": ticket["id"]}, {"upload_id": ticket["id"]}], "prompt": "p"})

    assert (status, body["error"]["code"], body["error"]["type"]) == (503, "storage_unavailable", "server_error")
    assert simulator.calls == 0
    assert list(spool_seen["root"].iterdir()) == []


def test_another_callers_upload_is_a_404(request_upload, send_json, aws, simulator):
    status, ticket = request_upload({"content_type": "image/png", "bytes": 1000, "filename": "mine.png"})
    assert status == 200
    put_upload(aws, ticket, picture(), "mine.png")

    status, body = send_json({"images": [{"upload_id": ticket["id"]}], "prompt": "p"}, key_id=OTHER_KEY_ID)

    assert status == 404, body
    assert (body["error"]["code"], body["error"]["param"]) == ("upload_not_found", "images[0]")
    assert simulator.calls == 0
    # The owner still can.
    assert send_json({"images": [{"upload_id": ticket["id"]}], "prompt": "p"})[0] == 200


def test_an_unknown_well_formed_upload_id_is_a_404(send_json, simulator):
    status, body = send_json({"images": [{"upload_id": "upl_" + "0" * 32}], "prompt": "p"})
    assert status == 404, body
    assert body["error"]["code"] == "upload_not_found"
    assert simulator.calls == 0


def test_an_unknown_mask_upload_is_a_404_naming_the_mask(request_upload, send_json, aws, simulator):
    _, ticket = request_upload({"content_type": "image/png", "bytes": 1000})
    put_upload(aws, ticket, picture(), "a.png")
    status, body = send_json(
        {"images": [{"upload_id": ticket["id"]}], "mask": {"upload_id": "upl_" + "1" * 32}, "prompt": "p"}
    )
    assert (status, body["error"]["param"], body["error"]["code"]) == (404, "mask", "upload_not_found")
    assert simulator.calls == 0


@pytest.mark.parametrize(
    "upload_id",
    ["../../images/x", "upl_short", f"{owner_prefix(owner_of_key_id(KEY_ID))}upl_{'a' * 32}", "img_" + "a" * 32],
)
def test_a_malformed_upload_id_is_a_400(send_json, aws, simulator, upload_id):
    status, body = send_json({"images": [{"upload_id": upload_id}], "prompt": "p"})
    assert status == 400, body
    assert body["error"]["param"] == "images[0].upload_id"
    assert simulator.calls == 0


def test_an_object_outside_the_upload_prefix_cannot_be_named(send_json, aws, simulator):
    # An object that exists at the bucket's top level under a well-formed id is still not the caller's.
    upload_id = "upl_" + "c" * 32
    aws.put_object(Bucket=BUCKET, Key=upload_id, Body=picture(), ContentType="image/png")
    aws.put_object(Bucket=BUCKET, Key=f"uploads/{upload_id}", Body=picture(), ContentType="image/png")
    status, body = send_json({"images": [{"upload_id": upload_id}], "prompt": "p"})
    assert (status, body["error"]["code"], simulator.calls) == (404, "upload_not_found", 0)


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"content_type": "image/gif", "bytes": 10}, "content_type"),
        ({"content_type": "image/png", "bytes": 0}, "bytes"),
        ({"content_type": "image/png", "bytes": 50 * 1024 * 1024 + 1}, "bytes"),
        ({"content_type": "image/png"}, "bytes"),
        ({"content_type": "image/png", "bytes": 10, "key": "uploads/x"}, "key"),
    ],
)
def test_bad_upload_requests_are_400s(request_upload, payload, param):
    status, body = request_upload(payload)
    assert status == 400, body
    assert body["error"]["param"] == param


def test_an_upload_without_the_authorizer_context_is_refused(request_upload):
    status, body = request_upload({"content_type": "image/png", "bytes": 10}, key_id=None)
    assert (status, body["error"]["code"]) == (401, "unauthenticated")


# --- 6. upstream failures on an edit -------------------------------------------------------------------------


def test_a_5xx_on_an_edit_is_retried_with_the_whole_body(send_multipart, simulator, aws, log_tap):
    first, second = picture(), picture((128, 128), (1, 2, 3))
    simulator.queue_faults({"status": 503})
    files = [("image[]", ("first.png", first, "image/png")), ("image[]", ("second.png", second, "image/png"))]

    status, body = send_multipart({"prompt": "p", "size": "1024x1024"}, files)

    assert status == 200, body
    assert simulator.calls == 2
    sent = simulator.last_request  # the second attempt
    assert [(p["name"], p["filename"], p["bytes"], p["sha256"]) for p in sent["files"]] == [
        ("image[]", "first.png", len(first), sha256(first)),
        ("image[]", "second.png", len(second), sha256(second)),
    ]
    assert sent["form"]["prompt"] == "p"
    assert stored_count(aws) == 1
    line = log_tap.records()[0]["request"]
    assert (line["attempts"], line["attempt_errors"], line["outcome"]) == (2, ["503"], "success")


def test_exhausted_5xx_on_an_edit_is_a_502(send_multipart, simulator, aws):
    simulator.queue_faults({"status": 500}, {"status": 502}, {"status": 503})
    status, body = send_multipart({"prompt": "p", "size": "1024x1024"}, [GOOD])
    assert (status, body["error"]["type"], simulator.calls) == (502, "upstream_error", 3)
    assert stored_count(aws) == 0


def test_a_policy_block_on_an_edit_is_relayed_once(send_multipart, simulator, log_tap):
    simulator.queue_faults(
        {
            "status": 400,
            "error": {
                "message": "Your request was rejected by the safety system.",
                "type": "image_generation_user_error",
                "code": "moderation_blocked",
            },
        }
    )
    status, body = send_multipart({"prompt": "something forbidden", "size": "1024x1024"}, [GOOD])

    assert status == 400
    assert body["error"]["code"] == "moderation_blocked"
    assert body["error"]["message"] == "Your request was rejected by the safety system."
    assert simulator.calls == 1
    line = log_tap.records()[0]["request"]
    assert (line["outcome"], line["error_code"], line["attempts"]) == ("upstream_rejected", "moderation_blocked", 1)
