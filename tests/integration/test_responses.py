"""POST /v1/responses through the real handler, with the simulator upstream and moto: images stored and opened,
conversations continued (and refused to other callers) with upstream calls counted, refusals before the
upstream is paid, the log line read."""

from __future__ import annotations

import base64
import io
import json
from typing import Any
from urllib.parse import urlparse

import pytest
from PIL import Image

from tests.integration.conftest import BUCKET, set_function_env

TOOL = {"type": "image_generation", "size": "1024x1536", "output_format": "jpeg", "quality": "low"}


@pytest.fixture
def responses(monkeypatch: pytest.MonkeyPatch, simulator: Any, aws: Any) -> Any:
    from functions.responses import app

    def apply(**overrides: str) -> Any:
        set_function_env(monkeypatch, simulator.url, function="ResponsesFunction", **overrides)
        app.runtime.cache_clear()
        return app

    yield apply
    app.runtime.cache_clear()


@pytest.fixture
def call(responses: Any, api_event: Any, lambda_context: Any):
    app = responses()

    def post(body: Any, **event_options: Any) -> tuple[int, dict[str, Any]]:
        event = api_event("responses", body=body, **event_options)
        answer = app.lambda_handler(event, lambda_context)
        return answer["statusCode"], json.loads(answer["body"])

    return post


def png(width: int, height: int, *, alpha: bool = False) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA" if alpha else "RGB", (width, height), (10, 200, 30, 0) if alpha else (10, 200, 30)).save(
        out, "PNG"
    )
    return out.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def stored(aws: Any, url: str) -> Image.Image:
    key = urlparse(url).path.lstrip("/")
    image = Image.open(io.BytesIO(aws.get_object(Bucket=BUCKET, Key=key)["Body"].read()))
    image.load()
    return image


def image_calls(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in body["output"] if item["type"] == "image_generation_call"]


def test_the_image_is_stored_linked_and_kept_inline(call, aws, simulator, log_tap):
    status, body = call({"model": "gpt-5", "input": "a lighthouse at dawn", "tools": [TOOL]})

    assert status == 200, body
    assert body["object"] == "response" and body["id"].startswith("resp_")
    (item,) = image_calls(body)
    image = stored(aws, item["url"])
    assert (image.format, image.size) == ("JPEG", (1024, 1536))
    assert (
        base64.b64decode(item["result"])
        == aws.get_object(Bucket=BUCKET, Key=urlparse(item["url"]).path.lstrip("/"))["Body"].read()
    )
    assert body["usage"]["total_tokens"] > 0
    assert simulator.calls == 1
    sent = simulator.last_request["json"]
    assert sent["store"] is False and "previous_response_id" not in sent
    (record,) = log_tap.records()
    line = record["request"]
    assert line["operation"] == "responses" and line["outcome"] == "success"
    assert line["responses"]["text_model"] == "gpt-5" and line["images_returned"] == 1
    assert "lighthouse" not in log_tap.text


def test_links_only_answers_result_null(call, aws):
    status, body = call(
        {"model": "gpt-5", "input": "a fox", "tools": [TOOL]},
        headers={"Content-Type": "application/json", "X-Image-Result": "url"},
    )
    assert status == 200, body
    (item,) = image_calls(body)
    assert item["result"] is None
    assert stored(aws, item["url"]).size == (1024, 1536)


def test_a_follow_up_sends_the_whole_conversation_and_a_stranger_gets_404(call, aws, simulator):
    _, first = call({"model": "gpt-5", "input": "draw a cat", "tools": [TOOL]})
    status, second = call(
        {"model": "gpt-5", "input": "now make it blue", "previous_response_id": first["id"], "tools": [TOOL]}
    )

    assert status == 200, second
    sent = simulator.last_request["json"]
    assert "previous_response_id" not in sent
    roles = [item["role"] for item in sent["input"]]
    assert roles == ["user", "assistant", "user"]
    last = sent["input"][-1]["content"]
    assert last[0]["type"] == "input_image" and last[0]["image_url"].startswith("data:")
    assert last[-1] == {"type": "input_text", "text": "now make it blue"}
    (item,) = image_calls(second)
    assert item["action"] == "edit"
    assert stored(aws, item["url"]).size == (1024, 1536)

    calls = simulator.calls
    status, refused = call(
        {"model": "gpt-5", "input": "mine now", "previous_response_id": second["id"], "tools": [TOOL]},
        key_id="key_someone_else",
    )
    assert status == 404
    assert refused["error"]["code"] == "previous_response_not_found"
    assert refused["error"]["param"] == "previous_response_id"
    assert simulator.calls == calls


def test_an_earlier_image_named_by_its_call_id_is_sent_as_that_image(call, aws, simulator):
    _, first = call({"model": "gpt-5", "input": "draw a cat", "tools": [TOOL]})
    (item,) = image_calls(first)
    status, _ = call(
        {
            "model": "gpt-5",
            "input": [
                {"type": "image_generation_call", "id": item["id"]},
                {"role": "user", "content": [{"type": "input_text", "text": "add a hat"}]},
            ],
            "tools": [TOOL],
        }
    )
    assert status == 200
    sent = simulator.last_request["json"]["input"]
    assert sent[0]["content"][0]["image_url"].startswith("data:image/jpeg;base64,")


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"tools": [{"type": "image_generation", "size": "1000x1000"}]}, "size", "invalid_value"),
        ({"tools": [{"type": "image_generation", "background": "transparent"}]}, "background", "invalid_value"),
        ({"tools": [{"type": "image_generation", "output_compression": 50}]}, "output_compression", "invalid_value"),
        ({"tools": [{"type": "image_generation", "partial_images": 4}]}, "partial_images", "invalid_value"),
        (
            {"tools": [{"type": "image_generation", "input_fidelity": "high"}]},
            "input_fidelity",
            "unsupported_parameter",
        ),
        ({"tools": [{"type": "image_generation", "model": "dall-e-3"}]}, "tools[0].model", "invalid_value"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_tool"),
        ({"tools": [TOOL, TOOL]}, "tools", "invalid_value"),
        ({"tools": []}, "tools", "missing_required_parameter"),
        ({"model": "gpt-image-2"}, "model", "invalid_value"),
        ({"background": True}, "background", "background_unsupported"),
        ({"n": 2}, "n", "unknown_parameter"),
        ({"tool_choice": {"type": "function", "name": "f"}}, "tool_choice", "invalid_value"),
        ({"tools": [{"type": "image_generation", "n": 2}]}, "n", "unknown_parameter"),
        ({"previous_response_id": "resp_" + "0" * 48}, "previous_response_id", "previous_response_not_found"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-abc"}]}]},
            "input[0].content[0].file_id",
            "invalid_file_id",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}
                ]
            },
            "input[0].content[0].image_url",
            "invalid_image_format",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x.test/a.png"}]}]},
            "input[0].content[0].image_url",
            "invalid_image_url",
        ),
    ],
)
def test_refused_before_the_upstream_is_paid(call, simulator, body, param, code):
    request = {"model": "gpt-5", "input": "draw", "tools": [TOOL], **body}
    status, answer = call(request)
    assert status in (400, 404), answer
    assert (answer["error"]["param"], answer["error"]["code"]) == (param, code)
    assert simulator.calls == 0


def test_the_mask_must_match_the_first_image(call, simulator):
    image = data_url(png(1024, 1024))
    content = [{"type": "input_image", "image_url": image}, {"type": "input_text", "text": "fill it"}]
    tool = {"type": "image_generation", "input_image_mask": {"image_url": data_url(png(512, 512, alpha=True))}}
    status, answer = call({"model": "gpt-5", "input": [{"role": "user", "content": content}], "tools": [tool]})
    assert status == 400 and answer["error"]["code"] == "invalid_mask"
    tool["input_image_mask"] = {"image_url": data_url(png(1024, 1024, alpha=True))}
    status, answer = call({"model": "gpt-5", "input": [{"role": "user", "content": content}], "tools": [tool]})
    assert status == 200, answer
    assert simulator.last_request["json"]["tools"][0]["input_image_mask"]["image_url"].startswith("data:")


def test_an_upload_of_the_caller_is_inlined(call, aws, simulator):
    from imagecore.storage.store import owner_prefix
    from tests.conftest import owner_of_key_id

    upload_id = "upl_" + "a" * 32
    key = owner_prefix(owner_of_key_id("key_test0000001")) + upload_id
    aws.put_object(Bucket=BUCKET, Key=key, Body=png(1024, 1024), ContentType="image/png")
    content = [{"type": "input_image", "file_id": upload_id}, {"type": "input_text", "text": "make it night"}]
    status, answer = call({"model": "gpt-5", "input": [{"role": "user", "content": content}], "tools": [TOOL]})
    assert status == 200, answer
    assert simulator.last_request["json"]["input"][0]["content"][0]["image_url"].startswith("data:image/png")
    status, answer = call(
        {"model": "gpt-5", "input": [{"role": "user", "content": content}], "tools": [TOOL]}, key_id="key_other"
    )
    assert status == 400 and answer["error"]["code"] == "invalid_file_id"


def test_allowed_models_restrict_the_text_model(responses, api_event, lambda_context, simulator):
    app = responses(RESPONSES_ALLOWED_MODELS="gpt-5,gpt-5-mini")
    event = api_event("responses", body={"model": "o3", "input": "x", "tools": [TOOL]})
    answer = app.lambda_handler(event, lambda_context)
    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["error"]["code"] == "model_not_allowed"
    assert simulator.calls == 0


def test_a_cut_answer_after_a_200_is_final(call, simulator):
    simulator.queue_faults({"mode": "cut"})
    status, answer = call({"model": "gpt-5", "input": "draw", "tools": [TOOL]})
    assert status == 502 and answer["error"]["code"] == "upstream_incomplete"
    assert simulator.calls == 1


def test_an_idempotency_key_answers_the_first_response_again(call, simulator):
    headers = {"Content-Type": "application/json", "Idempotency-Key": "order-42"}
    body = {"model": "gpt-5", "input": "draw a cat", "tools": [TOOL]}
    _, first = call(body, headers=headers)
    _, again = call(body, headers=headers)
    assert simulator.calls == 1
    assert again["id"] == first["id"]
    assert image_calls(again)[0]["result"] == image_calls(first)[0]["result"]


def test_images_and_tokens_count_in_the_key_budget(responses, api_event, lambda_context, simulator, aws):
    from imagecore.accounts.budgets import Budget
    from imagecore.accounts.ledger import UsageLedger
    from tests.conftest import owner_of_key_id
    from tests.integration.conftest import current_resources

    app = responses()

    def post() -> tuple[int, dict[str, Any]]:
        event = api_event("responses", body={"model": "gpt-5", "input": "a fox", "tools": [TOOL]})
        event["requestContext"]["authorizer"]["budget_images_per_day"] = 1
        answer = app.lambda_handler(event, lambda_context)
        return answer["statusCode"], json.loads(answer["body"])

    status, first = post()
    assert status == 200, first
    status, refused = post()
    assert status == 429 and refused["error"]["code"] == "budget_exceeded"
    assert simulator.calls == 1
    ledger = UsageLedger(current_resources().usage_table, region="us-east-1")
    report = ledger.usage(owner_of_key_id("key_test0000001"), Budget(images_per_day=1), 1)
    today = report["days"][0]
    assert today["images"] == 1
    assert today["input_tokens"] + today["output_tokens"] == first["usage"]["total_tokens"]


def test_a_client_token_s_max_images_holds(call, simulator):
    import time

    token = {"tokenId": "ctk_responses", "tokenExpiresAt": int(time.time()) + 600, "tokenMaxImages": 1}
    status, first = call({"model": "gpt-5", "input": "a fox", "tools": [TOOL]}, token=token)
    assert status == 200, first
    status, refused = call({"model": "gpt-5", "input": "a fox", "tools": [TOOL]}, token=token)
    assert status == 429 and refused["error"]["code"] == "token_budget_exceeded"
    assert simulator.calls == 1


def test_a_turn_with_store_false_cannot_be_continued(call, simulator):
    status, first = call({"model": "gpt-5", "input": "draw", "tools": [TOOL], "store": False})
    assert status == 200 and first["store"] is False
    status, refused = call({"model": "gpt-5", "input": "more", "tools": [TOOL], "previous_response_id": first["id"]})
    assert status == 404 and refused["error"]["code"] == "previous_response_not_found"
    assert simulator.calls == 1


def test_an_expired_conversation_is_not_found(aws_resources):
    import time

    from imagecore.storage.conversations import ConversationStore, Turn

    store = ConversationStore(aws_resources.conversations_table, region="us-east-1", ttl_seconds=60)
    store.save("own_a", "resp_1", [Turn("user", "hi")], {"ig_1": "images/x.png"})
    assert store.load("own_a", "resp_1") == [Turn("user", "hi")]
    assert store.load("own_b", "resp_1") is None
    assert store.image("own_a", "ig_1") == "images/x.png" and store.image("own_b", "ig_1") is None
    assert store.load("own_a", "resp_1", now=time.time() + 61) is None


def test_a_conversation_store_fault_loses_no_paid_image(
    responses, api_event, lambda_context, simulator, aws, aws_faults, log_tap
):
    aws_faults.fail("dynamodb", "PutItem", times=5)
    app = responses()
    event = api_event("responses", body={"model": "gpt-5", "input": "a fox", "tools": [TOOL]})
    answer = app.lambda_handler(event, lambda_context)
    body = json.loads(answer["body"])
    assert answer["statusCode"] == 200, body
    (item,) = image_calls(body)
    assert stored(aws, item["url"]).size == (1024, 1536)
    assert simulator.calls == 1
    assert log_tap.records("conversation not kept")


def test_an_output_item_sent_back_whole_is_taken_as_its_image(call, simulator):
    _, first = call({"model": "gpt-5", "input": "draw a cat", "tools": [TOOL]})
    (item,) = image_calls(first)
    foreign = {**item, "id": "ig_not_kept_here"}
    message = {"role": "user", "content": [{"type": "input_text", "text": "add a hat"}]}
    status, answer = call({"model": "gpt-5", "input": [foreign, message], "tools": [TOOL]}, key_id="key_other")
    assert status == 200, answer
    sent = simulator.last_request["json"]["input"]
    assert sent[0]["content"][0]["image_url"].startswith("data:image/jpeg;base64,")
