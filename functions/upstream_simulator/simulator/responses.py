"""The simulator's ``POST /v1/responses``: a text model that always calls its ``image_generation`` tool once.

Strict like sub2api's stateless account pool: it keeps no conversation, so a ``previous_response_id`` is
refused (``previous_response_not_found``), as are a missing or foreign tool, a ``file_id`` (files uploaded to
this service mean nothing upstream), an ``input_image`` that is not a readable image and an image model as the
top-level ``model``. The prompt it draws is the last user text; each input image in the conversation changes
the picture (an edit) and counts 765 input tokens.

Answers a ``response`` object (an ``image_generation_call`` item with the image of the tool's size and format,
then an assistant ``message``) or, with ``stream``, the events of OpenAI's Responses stream, ``partial_images``
previews included. Faults queued on the simulator apply here too: a ``status`` entry answers that error, and
the ``cut`` (JSON cut halfway), ``sse_error`` / ``sse_cut`` (after ``after_partials`` previews) modes damage the
real answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import secrets
import time
from collections.abc import Iterator
from typing import Any

from PIL import Image
from werkzeug.wrappers import Request, Response

from .rendering import _TOKENS_1M, render_image
from .server import UpstreamSimulator, _cut_off, _error, _json, _sse

IMAGE_INPUT_TOKENS = 765


def _summary(body: Any) -> Any:
    """The request as remembered for /_simulator/stats: data URLs replaced by their length and digest."""
    if isinstance(body, dict):
        return {key: _summary(value) for key, value in body.items()}
    if isinstance(body, list):
        return [_summary(value) for value in body]
    if isinstance(body, str) and body.startswith("data:"):
        head = body[: body.find(",") + 1]
        return f"{head}({len(body)} chars, sha256 {hashlib.sha256(body.encode()).hexdigest()[:16]})"
    return body


def _refuse(message: str, param: str | None, code: str, status: int = 400) -> Response:
    error = _error(message, "invalid_request_error", code)
    error["error"]["param"] = param
    return _json(status, error)


def _image_refusal(part: dict[str, Any], param: str) -> Response | None:
    """Why the upstream could not use an input_image: a file id it does not know, unreadable data, a non-https URL."""
    if part.get("file_id"):
        return _refuse("No such file", f"{param}.file_id", "file_not_found")
    url = str(part.get("image_url") or "")
    if url.startswith("data:"):
        try:
            data = base64.b64decode(url.split(",", 1)[1], validate=True)
            Image.open(io.BytesIO(data)).verify()
        except (IndexError, binascii.Error, ValueError, OSError):
            return _refuse("Invalid image data", f"{param}.image_url", "invalid_image")
    elif not url.startswith("https://"):
        return _refuse("Invalid image URL", f"{param}.image_url", "invalid_value")
    return None


def _walk_input(body: dict[str, Any]) -> tuple[str, int, Response | None]:
    """The last user text, the number of input images, or a refusal."""
    raw = body.get("input")
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        return "", 0, _refuse("input is required", "input", "missing_required_parameter")
    prompt, images = "", 0
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            return "", 0, _refuse("input items must be objects", f"input[{i}]", "invalid_type")
        if item.get("type") not in (None, "message"):
            return "", 0, _refuse(f"Item '{item.get('id')}' not found.", f"input[{i}]", "item_not_found")
        content = item.get("content")
        parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else content
        for j, part in enumerate(parts if isinstance(parts, list) else []):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "output_text") and item.get("role") == "user":
                prompt = str(part.get("text") or "")
            elif kind == "input_image":
                refused = _image_refusal(part, f"input[{i}].content[{j}]")
                if refused is not None:
                    return "", 0, refused
                images += 1
    if not prompt.strip():
        return "", 0, _refuse("The conversation has no user text to act on", "input", "invalid_value")
    return prompt, images, None


def answer_responses(simulator: UpstreamSimulator, request: Request) -> Response:
    try:
        body = json.loads(request.get_data() or b"null")
    except ValueError:
        body = None
    early, damage = simulator._receive(request, {"json": _summary(body)})
    if early is not None:
        return early
    if not isinstance(body, dict):
        return _refuse("The body must be a JSON object", None, "invalid_json")
    if body.get("previous_response_id"):
        return _refuse(
            f"Previous response with id '{body['previous_response_id']}' not found.",
            "previous_response_id",
            "previous_response_not_found",
        )
    model = body.get("model")
    if not isinstance(model, str) or not model or model.startswith("gpt-image"):
        return _refuse("The model must be a text model", "model", "invalid_value")
    tools = body.get("tools")
    if not isinstance(tools, list) or [t.get("type") for t in tools if isinstance(t, dict)] != ["image_generation"]:
        return _refuse("This account offers exactly one tool: image_generation", "tools", "invalid_value")
    tool: dict[str, Any] = tools[0]
    prompt, input_images, refusal = _walk_input(body)
    if refusal is not None:
        return refusal
    size = str(tool.get("size") or "auto")
    width, height = (1024, 1024) if size == "auto" else map(int, size.split("x"))
    output_format = str(tool.get("output_format") or "png")
    quality = "medium" if tool.get("quality") in (None, "auto") else str(tool["quality"])
    compression = tool.get("output_compression")
    seed = f"{prompt}#{input_images}"
    image = render_image(width, height, output_format, compression, seed)
    partials = [
        render_image(width, height, output_format, compression, f"{seed}#partial{k}")
        for k in range(int(tool.get("partial_images") or 0))
    ]
    text_in = max(1, math.ceil(len(json.dumps(_summary(body.get("input")))) / 4))
    image_out = round(_TOKENS_1M.get(quality, _TOKENS_1M["medium"]) * width * height / (1024 * 1024))
    usage = {
        "input_tokens": text_in + IMAGE_INPUT_TOKENS * input_images,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 24 + image_out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": text_in + IMAGE_INPUT_TOKENS * input_images + 24 + image_out,
    }
    call = {
        "id": f"ig_{secrets.token_hex(16)}",
        "type": "image_generation_call",
        "status": "completed",
        "action": "edit" if input_images else "generate",
        "background": tool.get("background") or "opaque",
        "output_format": output_format,
        "quality": quality,
        "size": f"{width}x{height}",
        "revised_prompt": f"{prompt} (as drawn)",
        "result": base64.b64encode(image).decode("ascii"),
    }
    text = f"Here is the image: {prompt[:60]}."
    message = {
        "id": f"msg_{secrets.token_hex(16)}",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }
    response = {
        "id": f"resp_{secrets.token_hex(24)}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": [call, message],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": tools,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "metadata": body.get("metadata") or {},
    }
    headers = simulator._headers()
    options = simulator.options
    mode = (damage or {}).get("mode")
    if body.get("stream"):
        return _stream(response, partials, headers, options.latency_ms, damage or {})
    if mode == "cut":
        whole = json.dumps(response).encode()
        return _cut_off(
            whole[: int(len(whole) * float((damage or {}).get("fraction", 0.5)))], headers, "application/json"
        )
    return simulator._respond(200, response, headers, options.latency_ms, options.keepalive_ms)


def _stream(
    response: dict[str, Any], partials: list[bytes], headers: dict[str, str], latency_ms: int, damage: dict[str, Any]
) -> Response:
    call, message = response["output"]
    pause = latency_ms / 1000 / (len(partials) + 2)
    mode = damage.get("mode")
    stop_after = int(damage.get("after_partials", 0)) if mode in ("sse_error", "sse_cut") else None

    def stream() -> Iterator[bytes]:
        number = 0

        def event(kind: str, **fields: Any) -> bytes:
            nonlocal number
            number += 1
            return _sse({"type": kind, "sequence_number": number - 1, **fields})

        started = {**response, "status": "in_progress", "output": [], "usage": None}
        yield event("response.created", response=started)
        yield event("response.in_progress", response=started)
        pending = {key: call[key] for key in ("id", "type")} | {"status": "in_progress", "result": None}
        yield event("response.output_item.added", output_index=0, item=pending)
        yield event("response.image_generation_call.in_progress", output_index=0, item_id=call["id"])
        yield event("response.image_generation_call.generating", output_index=0, item_id=call["id"])
        for index, data in enumerate(partials):
            if index == stop_after:
                break
            time.sleep(pause)
            yield event(
                "response.image_generation_call.partial_image",
                output_index=0,
                item_id=call["id"],
                partial_image_index=index,
                partial_image_b64=base64.b64encode(data).decode("ascii"),
                size=call["size"],
                quality=call["quality"],
                output_format=call["output_format"],
                background=call["background"],
            )
        if mode == "sse_error":
            yield event("error", code="server_error", message="simulated failure while generating", param=None)
            return
        if mode == "sse_cut":
            raise ConnectionAbortedError("simulated cut after the partial images")
        time.sleep(pause)
        yield event("response.image_generation_call.completed", output_index=0, item_id=call["id"])
        yield event("response.output_item.done", output_index=0, item=call)
        text = message["content"][0]["text"]
        opened = {**message, "status": "in_progress", "content": []}
        yield event("response.output_item.added", output_index=1, item=opened)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield event("response.content_part.added", output_index=1, item_id=message["id"], content_index=0, part=part)
        for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
            yield event(
                "response.output_text.delta",
                output_index=1,
                item_id=message["id"],
                content_index=0,
                delta=piece,
                logprobs=[],
            )
        yield event(
            "response.output_text.done", output_index=1, item_id=message["id"], content_index=0, text=text, logprobs=[]
        )
        yield event(
            "response.content_part.done",
            output_index=1,
            item_id=message["id"],
            content_index=0,
            part={**part, "text": text},
        )
        yield event("response.output_item.done", output_index=1, item=message)
        time.sleep(pause)
        yield event("response.completed", response=response)

    return Response(stream(), status=200, headers=headers, content_type="text/event-stream")


UpstreamSimulator.ROUTES[("POST", "/responses")] = answer_responses
