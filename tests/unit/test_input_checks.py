"""Input checks that need no AWS: the strict JSON reader, the image checks (bombs, forged and cut-off files),
identifiers anchored at the very end, and the poll URL built from trusted values only."""

from __future__ import annotations

import io
import json
import random
import struct
import subprocess
import sys
import textwrap
import zlib
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from imagecore.domain.errors import InvalidRequest, UnsupportedMediaType
from imagecore.domain.images import MAX_INPUT_PIXELS, ImageTooLarge, NotAnImage, inspect_image, verify_image
from imagecore.domain.jsonbody import parse_json_body
from imagecore.domain.models import (
    TASK_ID,
    UPLOAD_ID,
    EditUploadRequest,
    GenerationRequest,
    matches,
)
from imagecore.domain.route_models import UploadRequest
from imagecore.edge.request_body import require_content_type
from imagecore.edge.task_answers import poll_url
from imagecore.jobs.messages import BadJob, parse_job
from imagecore.usecases.edits import _INDEXED_IMAGE, RawFile, check_images

# --- image bytes -------------------------------------------------------------------------------------------


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def declared_png(width: int, height: int, *, color_type: int = 2) -> bytes:
    """A well-formed PNG (valid CRCs, IEND) whose header declares width x height, with one row of data: what a
    decompression bomb looks like before anyone inflates it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def noisy(size: tuple[int, int], fmt: str = "PNG", mode: str = "RGB", seed: int = 7) -> bytes:
    rng = random.Random(seed)
    channels = len(mode)
    image = Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * channels))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def chunks_of(data: bytes) -> list[tuple[bytes, bytes]]:
    found, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        found.append((data[at + 4 : at + 8], data[at + 8 : at + 8 + length]))
        at += 12 + length
    return found


def cut_png_keeping_iend(data: bytes) -> bytes:
    """Half of the compressed pixels gone, every chunk re-framed with a correct length and CRC, IEND kept: the
    header, the trailer and every checksum are right; only decoding shows the image is not whole."""
    kept = b"".join(chunk(kind, body[: len(body) // 2] if kind == b"IDAT" else body) for kind, body in chunks_of(data))
    return b"\x89PNG\r\n\x1a\n" + kept


# --- the strict JSON reader --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code", "param"),
    [
        ('{"prompt": "x", "n": ' + "9" * 5000 + "}", "invalid_json", None),
        ('{"prompt": "x", "n": 1e999}', "invalid_json", None),
        ('{"prompt": "x", "n": -1e999}', "invalid_json", None),
        ('{"prompt": "x", "n": NaN}', "invalid_json", None),
        ('{"prompt": "x", "n": Infinity}', "invalid_json", None),
        ('{"prompt": "x", "n": -Infinity}', "invalid_json", None),
        ('{"prompt": "x", "prompt": "y"}', "duplicate_parameter", "prompt"),
        ('{"images": [{"upload_id": "a", "upload_id": "b"}]}', "duplicate_parameter", "upload_id"),
        ('{"prompt": "x", "user": ' + "[" * 1000 + "]" * 1000 + "}", "invalid_json", None),
        ('{"prompt": "x", "user": ' + "[" * 40 + "]" * 40 + "}", "invalid_json", None),
        ('{"prompt": "\\ud800"}', "invalid_json", None),
        ('{"prompt": "x"', "invalid_json", None),
        ("", "invalid_json", None),
    ],
    ids=[
        "5000 digits",
        "1e999",
        "-1e999",
        "NaN",
        "Infinity",
        "-Infinity",
        "duplicate key",
        "nested duplicate key",
        "1000 deep",
        "40 deep",
        "lone surrogate",
        "cut",
        "empty",
    ],
)
def test_odd_json_is_a_400_naming_why(raw, code, param):
    with pytest.raises(InvalidRequest) as refused:
        parse_json_body(raw)
    assert refused.value.status == 400
    assert (refused.value.code, refused.value.param) == (code, param)


def test_a_body_that_is_not_utf8_is_a_400():
    with pytest.raises(InvalidRequest) as refused:
        parse_json_body(b'{"prompt": "\xff\xfe"}')
    assert refused.value.code == "invalid_json"
    assert "UTF-8" in refused.value.message


def test_plain_json_reads_as_json():
    body = {"prompt": "un phare 🌅", "n": 2, "images": [{"upload_id": "upl_x"}], "ratio": 1.5, "ok": None}
    assert parse_json_body(json.dumps(body)) == body
    assert parse_json_body(json.dumps(body).encode()) == body
    assert parse_json_body("[1, 2]") == [1, 2]  # not an object: the models say so, naming the body
    assert parse_json_body('{"emoji": "\\ud83c\\udf05"}') == {"emoji": "🌅"}  # a whole surrogate pair is fine


# --- content types -----------------------------------------------------------------------------------------


def event_with(content_type: str, body: str = '{"prompt": "x"}', **extra: Any) -> dict[str, Any]:
    return {
        "httpMethod": "POST",
        "headers": {"content-TYPE": content_type},
        "multiValueHeaders": {"content-TYPE": [content_type]},
        "body": body,
        **extra,
    }


@pytest.mark.parametrize("content_type", ["APPLICATION/JSON", "Application/Json; charset=UTF-8", "application/json"])
def test_media_types_are_case_insensitive_and_rewritten_for_the_parsers(content_type):
    event = event_with(content_type)
    require_content_type(event, ("application/json",))
    parameters = content_type.partition(";")[2]
    expected = "application/json" + (f";{parameters}" if parameters else "")
    assert event["headers"] == {"Content-Type": expected}
    assert event["multiValueHeaders"] == {"Content-Type": [expected]}


def test_a_base64_json_body_is_decoded_once_and_must_be_utf8():
    import base64

    event = event_with("application/json", base64.b64encode(b'{"prompt": "x"}').decode(), isBase64Encoded=True)
    require_content_type(event, ("application/json",))
    assert (event["body"], event["isBase64Encoded"]) == ('{"prompt": "x"}', False)
    bad = event_with("application/json", base64.b64encode(b'{"prompt": "\xff"}').decode(), isBase64Encoded=True)
    with pytest.raises(InvalidRequest):
        require_content_type(bad, ("application/json",))


def test_other_types_stay_415():
    with pytest.raises(UnsupportedMediaType):
        require_content_type(event_with("application/jsonp"), ("application/json",))
    with pytest.raises(UnsupportedMediaType):
        require_content_type(event_with("text/plain"), ("application/json",))


# --- field bounds ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "body", "param"),
    [
        (GenerationRequest, {"prompt": "x" * 32_001}, "prompt"),
        (GenerationRequest, {"prompt": "x", "user": "u" * 257}, "user"),
        (GenerationRequest, {"prompt": "x", "user": "u" * 500_000}, "user"),
        (GenerationRequest, {"prompt": "x", "size": "1" * 5000}, "size"),
        (UploadRequest, {"content_type": "image/png", "bytes": 10, "filename": "f" * 256}, "filename"),
        (UploadRequest, {"content_type": "image/png", "bytes": 50 * 1024 * 1024 + 1}, "bytes"),
        (EditUploadRequest, {"prompt": "x", "images": [{"upload_id": "upl_" + "a" * 65}]}, "images.0.upload_id"),
    ],
)
def test_every_free_field_has_an_upper_bound(model, body, param):
    with pytest.raises(ValidationError) as refused:
        model.model_validate(body)
    assert ".".join(str(part) for part in refused.value.errors()[0]["loc"]) == param


def test_a_prompt_at_its_bound_fits_a_dynamodb_item_as_utf8():
    """32,000 emoji are 128,000 bytes of UTF-8: the task item stores them as UTF-8 (DynamoDB counts bytes)."""
    from imagecore.jobs.tasks import Task

    request = GenerationRequest(prompt="🌅" * 32_000, user="👤" * 256)
    task = Task(
        id="task_" + "0" * 32,
        owner="key_x",
        kind="edit",
        request=request.model_dump(exclude_none=True),
        folder="images/2026/01/01/" + "0" * 32,
        created_at=1,
        updated_at=1,
        inputs=[{"key": "uploads/" + "0" * 32 + "/x", "filename": "名" * 255, "role": "image"}] * 17,
    )
    size = sum(len(str(name).encode()) + len(str(value).encode()) for name, value in task.to_item().items())
    assert size < 200_000, size  # DynamoDB's item limit is 400 KB, with room left for the result


# --- images ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(50_000, 50_000), (12_000, 12_000), (4097, 4097), (1, MAX_INPUT_PIXELS + 1)])
def test_a_declared_size_over_the_limit_is_image_too_large_before_any_decoding(size):
    data = declared_png(*size)
    for look in (inspect_image, verify_image):
        with pytest.raises(ImageTooLarge) as refused:
            look(data)
        assert isinstance(refused.value, NotAnImage)  # callers that only know NotAnImage still refuse it
        assert refused.value.limit == MAX_INPUT_PIXELS


def test_pillow_never_decides_the_limit_itself():
    assert Image.MAX_IMAGE_PIXELS == MAX_INPUT_PIXELS


def test_a_png_cut_short_but_keeping_iend_passes_the_header_and_fails_the_decode():
    whole = noisy((300, 200))
    cut = cut_png_keeping_iend(whole)
    assert cut.endswith(b"IEND\xaeB`\x82") and len(cut) < len(whole)
    assert inspect_image(cut).size == "300x200"  # the header and trailer are fine
    with pytest.raises(NotAnImage):
        verify_image(cut)
    assert verify_image(whole).size == "300x200"


def test_a_png_with_bytes_missing_in_the_middle_fails():
    whole = noisy((300, 200))
    middle = len(whole) // 2
    with pytest.raises(NotAnImage):
        verify_image(whole[:middle] + whole[middle + 500 :])


def test_cut_jpeg_and_webp_fail():
    jpeg, webp = noisy((320, 240), "JPEG"), noisy((320, 240), "WEBP")
    assert (verify_image(jpeg).format, verify_image(webp).format) == ("jpeg", "webp")
    with pytest.raises(NotAnImage):
        verify_image(jpeg[: len(jpeg) // 2])  # no end marker
    cut = webp[: len(webp) // 2]
    with pytest.raises(NotAnImage):
        verify_image(cut[:4] + struct.pack("<I", len(cut) - 8) + cut[8:])  # the RIFF size forged to match
    # (libjpeg pads a scan that ends early at a forged end marker with grey and only warns: a JPEG cut and
    # re-terminated still decodes, and is forwarded as the image it now is.)


def test_alpha_is_still_read():
    assert verify_image(noisy((64, 64), mode="RGBA")).has_alpha is True
    assert verify_image(noisy((64, 64))).has_alpha is False


def test_decoding_a_4k_input_holds_its_pixels_only_while_checking(tmp_path):
    """Checking a 3840x2160 RGBA PNG, in a fresh interpreter that holds only its bytes: the peak grows by about
    one decoded copy (33 MB), every block Pillow allocated is freed after the check, and checking it twice
    more does not grow the peak again."""
    rng = random.Random(3)
    tile = Image.frombytes("RGBA", (480, 270), rng.randbytes(480 * 270 * 4))
    image = Image.new("RGBA", (3840, 2160))
    for x in range(0, 3840, 480):
        for y in range(0, 2160, 270):
            image.paste(tile, (x, y))
    path = tmp_path / "4k.png"
    image.save(path, "PNG", compress_level=1)
    script = textwrap.dedent(
        """
        import json, resource, sys
        from PIL import Image
        from imagecore.domain.images import verify_image

        data = open(sys.argv[1], "rb").read()

        def peak():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        def live_blocks():
            stats = Image.core.get_stats()
            return stats["allocated_blocks"] - stats["freed_blocks"]

        before = peak()
        size = verify_image(data).size
        first, live = peak(), live_blocks()
        verify_image(data)
        verify_image(data)
        print(json.dumps({"size": size, "before": before, "first": first, "again": peak(), "live": live}))
        """
    )
    result = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True, timeout=60
    )
    figures = json.loads(result.stdout)
    decoded = 3840 * 2160 * 4
    assert figures["size"] == "3840x2160"
    assert figures["first"] - figures["before"] < 1.5 * decoded, figures  # one decoded copy, never two
    assert figures["live"] == 0, figures  # nothing of the decoded image outlives the check
    assert figures["again"] - figures["first"] < decoded / 4, figures


def test_edit_inputs_name_the_bad_part():
    good = noisy((64, 64))
    cases = [
        ([RawFile("image[0]", good, None), RawFile("image[1]", declared_png(50_000, 50_000), None)], None),
        ([RawFile("image[0]", good, None)], RawFile("mask", declared_png(50_000, 50_000), None)),
    ]
    for images, mask in cases:
        with pytest.raises(InvalidRequest) as refused:
            check_images(images, mask, max_image_bytes=10_000_000)
        assert refused.value.code == "image_too_large"
        assert refused.value.param == ("mask" if mask else "image[1]")
    with pytest.raises(InvalidRequest) as refused:
        check_images([RawFile("image[0]", cut_png_keeping_iend(noisy((300, 200))), None)], None, max_image_bytes=10**7)
    assert (refused.value.code, refused.value.param) == ("invalid_image_format", "image[0]")
    with pytest.raises(InvalidRequest) as refused:
        check_images([RawFile("image[0]", good, "n" * 256 + ".png")], None, max_image_bytes=10**7)
    assert (refused.value.code, refused.value.param) == ("invalid_filename", "image[0]")


# --- identifiers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "good"),
    [(UPLOAD_ID, "upl_" + "a1" * 16), (TASK_ID, "task_" + "0f" * 16)],
)
def test_identifiers_refuse_a_trailing_newline(body, good):
    assert matches(body, good)
    for bad in (good + "\n", "\n" + good, good + "\r", good + " ", good[:-1] + "\n", None, 42):
        assert not matches(body, bad)


def test_an_upload_id_with_a_trailing_newline_is_refused_by_the_model():
    good = "upl_" + "a" * 32
    EditUploadRequest.model_validate({"prompt": "x", "images": [{"upload_id": good}]})
    with pytest.raises(ValidationError):
        EditUploadRequest.model_validate({"prompt": "x", "images": [{"upload_id": good + "\n"}]})


def test_an_indexed_image_field_with_a_trailing_newline_is_not_an_image_field():
    assert _INDEXED_IMAGE.match("image[3]")
    assert not _INDEXED_IMAGE.match("image[3]\n")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"prompt": "x", "output_prefix": "team/run-1\n"}, "output_prefix"),
        ({"prompt": "x", "output_prefix": "team/../x"}, "output_prefix"),
        ({"prompt": "x", "correlation_id": "c" * 257}, "correlation_id"),
    ],
)
def test_event_fields_with_a_trailing_newline_or_over_their_bound_go_to_the_dead_letter_queue(message, reason):
    with pytest.raises(BadJob, match=reason):
        parse_job(json.dumps(message), "4f1c7a52-0000-4000-8000-000000000001")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"prompt": "x", "n": ' + "9" * 5000 + "}", "not acceptable JSON"),
        ('{"prompt": "x", "user": ' + "[" * 1000 + "]" * 1000 + "}", "not acceptable JSON"),
        ('{"prompt": "x", "prompt": "y"}', "not acceptable JSON"),
        ('{"prompt": "x", "n": NaN}', "not acceptable JSON"),
        ("{not json", "the message is not JSON"),
    ],
    ids=["5000 digits", "1000 deep", "duplicate key", "NaN", "not JSON"],
)
def test_odd_json_on_the_queue_goes_to_the_dead_letter_queue_with_why(body, reason):
    with pytest.raises(BadJob, match=reason):
        parse_job(body, "m-1")


def test_an_event_id_with_a_trailing_newline_is_refused():
    event = {"detail-type": "ImageGenerationRequested", "id": "ab-12\n", "detail": {"prompt": "x"}}
    with pytest.raises(BadJob, match="event id"):
        parse_job(json.dumps(event), "m-1")
    event["id"] = "ab-12"
    assert parse_job(json.dumps(event), "m-1").job_id == "ab-12"


# --- the poll URL ------------------------------------------------------------------------------------------


def api_event(**headers: str) -> dict[str, Any]:
    return {
        "path": "/v1/images/generations/async",
        "headers": headers,
        "requestContext": {"domainName": "api.example.com", "path": "/prod/v1/images/generations/async"},
    }


@pytest.mark.parametrize("proto", ["javascript:alert(1)//", "http", "ftp", "https"])
def test_the_poll_url_scheme_never_comes_from_the_request(proto):
    url = poll_url(api_event(**{"X-Forwarded-Proto": proto}), "task_1")
    assert url == "https://api.example.com/prod/v1/images/tasks/task_1"


def test_the_local_stack_configures_http():
    url = poll_url(api_event(**{"X-Forwarded-Proto": "https"}), "task_1", scheme="http")
    assert url == "http://api.example.com/prod/v1/images/tasks/task_1"
    with pytest.raises(ValueError):
        poll_url(api_event(), "task_1", scheme="javascript")


@pytest.mark.parametrize(
    "domain", ["evil.com/x?", "a b", "evil.com\n", "javascript:alert(1)", "", "@evil.com", "h:99999999"]
)
def test_an_odd_host_gives_a_relative_url(domain):
    event = api_event()
    event["requestContext"]["domainName"] = domain
    event["headers"] = {"Host": "evil.com"}
    assert poll_url(event, "task_1") == "/prod/v1/images/tasks/task_1"


def test_an_odd_base_path_is_dropped():
    event = api_event()
    event["requestContext"]["path"] = "//evil.com/v1/images/generations/async"
    assert poll_url(event, "task_1") == "https://api.example.com/v1/images/tasks/task_1"
