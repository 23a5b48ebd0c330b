"""The rules of POST /v1/responses without AWS or the upstream: the request's checks (the Images routes'
messages and params), the translation of a conversation into the upstream's input, and its bounds."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from imagecore.domain.errors import InvalidRequest
from imagecore.domain.responses import ResponsesRequest
from imagecore.storage.conversations import MAX_IMAGES, Turn, bounded
from imagecore.storage.store import UploadNotFound
from imagecore.usecases.respond import upstream_body
from imagecore.usecases.respond_inputs import InputSources, history_items, prepare_input


def png(size: tuple[int, int] = (64, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


def request(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate(
        {"model": "gpt-5", "input": "draw", "tools": [{"type": "image_generation"}], **fields}
    )


def refusal(**fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as refused:
        request(**fields).checked_tool()
    return refused.value


def test_the_tool_s_size_is_refused_with_the_images_routes_message() -> None:
    error = refusal(tools=[{"type": "image_generation", "size": "1000x1000"}])
    assert error.param == "size"
    assert error.message == ("Invalid value for 'size': size 1000x1000: both edges must be multiples of 16 pixels.")


def test_transparency_and_compression_rules_are_the_images_routes() -> None:
    assert "transparent" in refusal(tools=[{"type": "image_generation", "background": "transparent"}]).message
    error = refusal(tools=[{"type": "image_generation", "output_compression": 10}])
    assert error.param == "output_compression" and "'jpeg' or 'webp'" in error.message


def test_background_mode_points_at_the_async_routes() -> None:
    error = refusal(background=True)
    assert error.code == "background_unsupported" and "/v1/images/generations/async" in error.message


sources = InputSources(
    read_upload=lambda upload_id: (_ for _ in ()).throw(UploadNotFound(upload_id)),
    read_image=lambda key: png(),
    find_call=lambda call_id: "images/responses/x/ig_1.png" if call_id == "ig_1" else None,
    max_image_bytes=1 << 20,
)


def test_a_follow_up_carries_the_conversation_and_no_previous_id() -> None:
    history = [Turn("user", "draw a cat", []), Turn("assistant", "Here it is", ["images/responses/a/ig_1.png"])]
    req = request(input="make it blue", previous_response_id="resp_" + "0" * 48)
    prepared = prepare_input(req, req.checked_tool(), history, sources)
    body = upstream_body(req, prepared)

    assert "previous_response_id" not in body and body["store"] is False
    user, assistant, follow_up = body["input"]
    assert user == {"role": "user", "content": [{"type": "input_text", "text": "draw a cat"}]}
    assert assistant["role"] == "assistant"
    image, text = follow_up["content"]
    assert base64.b64decode(image["image_url"].split(",", 1)[1]) == png()
    assert text == {"type": "input_text", "text": "make it blue"}


def test_an_input_image_is_checked_and_forwarded_as_it_came() -> None:
    url = "data:image/png;base64," + base64.b64encode(png()).decode()
    content = [{"type": "input_image", "image_url": url}, {"type": "input_text", "text": "x"}]
    req = request(input=[{"role": "user", "content": content}])
    prepared = prepare_input(req, req.checked_tool(), [], sources)
    assert prepared.items[0]["content"][0]["image_url"] == url
    assert prepared.images_in == 1


def test_a_foreign_file_id_and_an_unknown_call_are_400s() -> None:
    part = [{"type": "input_image", "file_id": "upl_" + "b" * 32}]
    req = request(input=[{"role": "user", "content": part}])
    with pytest.raises(InvalidRequest) as refused:
        prepare_input(req, req.checked_tool(), [], sources)
    assert refused.value.code == "invalid_file_id"
    req = request(input=[{"type": "image_generation_call", "id": "ig_unknown"}])
    with pytest.raises(InvalidRequest) as refused:
        prepare_input(req, req.checked_tool(), [], sources)
    assert refused.value.code == "item_not_found"


def test_history_keeps_the_newest_images() -> None:
    turns = [Turn("assistant", f"turn {i}", [f"images/{i}.png"]) for i in range(MAX_IMAGES + 3)]
    kept, dropped = bounded(turns)
    assert dropped == 3
    assert [t.images for t in kept][:3] == [[], [], []]
    assert kept[-1].images == [f"images/{MAX_IMAGES + 2}.png"]
    items, carried = history_items(kept, lambda key: png())
    assert len(carried) == 1 and len(items) == len(kept) + MAX_IMAGES - 1


def test_more_input_images_than_one_request_may_carry_is_a_400_naming_input() -> None:
    url = "data:image/png;base64," + base64.b64encode(png()).decode()
    content = [{"type": "input_image", "image_url": url}] * 17 + [{"type": "input_text", "text": "x"}]
    req = request(input=[{"role": "user", "content": content}])
    with pytest.raises(InvalidRequest) as refused:
        prepare_input(req, req.checked_tool(), [], sources)
    assert refused.value.code == "input_too_large" and refused.value.param == "input"
    assert "at most 16 images" in refused.value.message
    # sixteen are taken
    req = request(input=[{"role": "user", "content": content[1:]}])
    assert prepare_input(req, req.checked_tool(), [], sources).images_in == 16
