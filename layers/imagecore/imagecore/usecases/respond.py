"""``POST /v1/responses``: one use case, read top to bottom.

checks -> the caller's conversation (404 ``previous_response_not_found`` before anything is paid) -> this turn's
inputs checked -> admission (one image reserved in the key's budget and the client token's count, settled with
what was made) -> the upstream, its events relayed as they come with every image stored on the way -> the turn
kept -> the answer.

Every image an ``image_generation_call`` returns is checked and written to S3 under the response's folder, and
its item gains a presigned ``url`` beside ``result`` (``result`` is null when the caller asked ``X-Image-Result:
url``); partial images are stored as previews and their events carry ``url`` too. The response id the caller
sees is the service's own: it names the conversation kept here, not anything upstream.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from imagecore.accounts.admission import Admission
from imagecore.accounts.budgets import Cost, Spent, estimated_cost
from imagecore.accounts.caller import Caller
from imagecore.domain.deadline import Deadline
from imagecore.domain.errors import InvalidRequest, NotFound, UpstreamFailed
from imagecore.domain.images import ImageInfo, NotAnImage, inspect_image
from imagecore.domain.models import MAX_PIXELS
from imagecore.domain.responses import ImageGenerationTool, ResponsesRequest
from imagecore.platform.observability import RequestRecord, current_record, logger
from imagecore.storage.conversations import ConversationStore, Turn, bounded
from imagecore.storage.store import StorageError
from imagecore.upstream.client import CallTrace
from imagecore.usecases.idempotency import Idempotency, Once
from imagecore.usecases.respond_inputs import InputSources, NewImage, PreparedInput, prepare_input
from imagecore.usecases.response_codec import EventSink, ResponseCodec, is_image_call
from imagecore.usecases.service import ImageService

# Passed through to the upstream as they came (the text model's own options).
PASSED_THROUGH = (
    "tool_choice",
    "instructions",
    "metadata",
    "temperature",
    "top_p",
    "max_output_tokens",
    "max_tool_calls",
    "parallel_tool_calls",
    "reasoning",
    "text",
    "truncation",
    "include",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "service_tier",
    "stream_options",
)


@dataclass
class Responder:
    """What the use case needs, built once per execution environment."""

    service: ImageService
    conversations: ConversationStore | None
    read_upload: Callable[[str, str], Any]  # (owner, upload id) -> UploadedFile
    admission: Admission
    idempotency: Idempotency
    allowed_models: tuple[str, ...] = ()
    max_image_bytes: int = 50 * 1024 * 1024
    log_prompts: bool = False


@dataclass(frozen=True)
class RespondCommand:
    caller: Caller
    request: ResponsesRequest
    deadline: Deadline
    once: Once  # the POST as idempotency sees it
    links_only: bool = False  # X-Image-Result: url
    events: EventSink | None = None  # stream: where the relayed events go


@dataclass
class _Turn:
    """What one request is building: its id, its folder, the images stored so far."""

    response_id: str
    folder: str
    previous_id: str | None
    links_only: bool
    kept: bool  # whether the turn is kept (store is not false): whether its id can be continued
    stored: dict[str, str]  # call id -> S3 key of its image (shared with the answer's codec)
    partials: int = 0


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(24)


def respond(command: RespondCommand, deps: Responder) -> dict[str, Any]:
    """The response object (stored, linked), once per Idempotency-Key (a replay: the first answer, with fresh
    links); with ``command.events`` its events went out as they came."""
    codec = ResponseCodec(deps.service.store, command.links_only, command.events)
    return deps.idempotency.once(command.once, codec, lambda: _respond(command, deps, codec.stored))


def _respond(command: RespondCommand, deps: Responder, stored: dict[str, str]) -> dict[str, Any]:
    request, record, owner = command.request, current_record(), command.caller.owner_id
    tool = request.checked_tool()
    if deps.allowed_models and request.model not in deps.allowed_models:
        raise InvalidRequest(
            f"Invalid value for 'model': this service offers the text models {', '.join(deps.allowed_models)}.",
            param="model",
            code="model_not_allowed",
        )
    describe(record, request, tool)
    history = _history(owner, request.previous_response_id, deps)
    prepared = prepare_input(request, tool, history, _sources(owner, deps))
    record.images_in, record.input_bytes, record.mask = prepared.images_in, prepared.input_bytes, prepared.mask
    record.describe_prompt(prepared.user_text, include_text=deps.log_prompts)
    response_id = new_response_id()
    created = datetime.fromtimestamp(time.time(), UTC)
    turn = _Turn(
        response_id,
        f"images/responses/{created:%Y/%m/%d}/{response_id}",
        request.previous_response_id,
        command.links_only,
        kept=deps.conversations is not None and request.store is not False,
        stored=stored,
    )
    body = upstream_body(request, prepared)
    # One image reserved (the text model decides how many it draws; almost always one), settled with what was made.
    cost = Cost(images=1, tokens=estimated_cost(tool, reference_images=prepared.images_in).tokens)
    with deps.admission.hold(command.caller, cost, images=1, record=record, deadline=command.deadline) as hold:
        answer = _call_upstream(command, deps, turn, body, record)
        hold.settle(Spent.from_record(record), images=_images_made(answer))
    _keep(owner, request, deps, turn, history, prepared, answer, record)
    return answer


def _images_made(answer: dict[str, Any]) -> int:
    return min(1, sum(1 for item in answer.get("output", []) if _made_image(item)))


def _made_image(item: Any) -> bool:
    """An image_generation_call that brought an image (a failed one brings none)."""
    return is_image_call(item) and bool(item.get("url") or item.get("result"))


def _history(owner: str, previous: str | None, deps: Responder) -> list[Turn]:
    if previous is None:
        return []
    turns = deps.conversations.load(owner, previous) if deps.conversations is not None else None
    if turns is None:
        raise NotFound(
            f"Previous response with id '{previous[:64]}' not found (conversations are yours only, and are kept "
            f"{_days(deps)} days).",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return turns


def _days(deps: Responder) -> int:
    return deps.conversations.ttl_seconds // 86400 if deps.conversations is not None else 0


def _sources(owner: str, deps: Responder) -> InputSources:
    store, conversations = deps.service.store, deps.conversations

    def find_call(call_id: str) -> str | None:
        return conversations.image(owner, call_id) if conversations is not None else None

    return InputSources(
        read_upload=lambda upload_id: deps.read_upload(owner, upload_id),
        read_image=store.read,
        find_call=find_call,
        max_image_bytes=deps.max_image_bytes,
    )


def upstream_body(request: ResponsesRequest, prepared: PreparedInput) -> dict[str, Any]:
    """The whole conversation in ``input``, no ``previous_response_id``, ``store: false`` (the upstream keeps
    nothing; this service keeps the conversation)."""
    body: dict[str, Any] = {"model": request.model, "input": prepared.items, "tools": [prepared.tool], "store": False}
    body.update(request.model_dump(include=set(PASSED_THROUGH), exclude_none=True))
    if request.stream:
        body["stream"] = True
    return body


def _call_upstream(
    command: RespondCommand, deps: Responder, turn: _Turn, body: dict[str, Any], record: RequestRecord
) -> dict[str, Any]:
    trace = CallTrace()
    relay = None if command.events is None else (lambda event: _relay(command, deps, turn, event))
    try:
        result = deps.service.upstream.respond(
            body,
            timeout=deps.service.settings.upstream_large_timeout_seconds,
            deadline=command.deadline,
            trace=trace,
            on_event=relay,
        )
    finally:
        record.attempts, record.attempt_errors = trace.attempts, trace.errors
        record.upstream_request_id, record.account_id = trace.request_id, trace.account_id
        record.upstream_latency_ms = trace.latency_ms
        record.images_returned = len(turn.stored)
        record.partial_images_stored = turn.partials or None
    answer = _finished(deps, turn, result.body)
    record.usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else None
    record.images_returned = sum(1 for item in answer["output"] if _made_image(item))
    return answer


def _relay(command: RespondCommand, deps: Responder, turn: _Turn, event: dict[str, Any]) -> None:
    """One upstream event, its images stored and linked, then sent on."""
    assert command.events is not None
    kind = event["type"]
    if isinstance(event.get("response"), dict):
        event = {
            **event,
            "response": _finished(deps, turn, event["response"])
            if kind == "response.completed"
            else _renamed(turn, event["response"]),
        }
    elif kind == "response.image_generation_call.partial_image":
        event = _partial(deps, turn, event)
    elif kind == "response.output_item.done" and is_image_call(event.get("item")):
        event = {**event, "item": _stored_item(deps, turn, event["item"])}
    command.events(kind, event)


def _renamed(turn: _Turn, response: dict[str, Any]) -> dict[str, Any]:
    return {**response, "id": turn.response_id, "previous_response_id": turn.previous_id, "store": turn.kept}


def _finished(deps: Responder, turn: _Turn, response: dict[str, Any]) -> dict[str, Any]:
    output = response.get("output")
    items = [_stored_item(deps, turn, item) if is_image_call(item) else item for item in output or []]
    return {**_renamed(turn, response), "output": items}


def _decoded(value: Any, what: str) -> tuple[bytes, ImageInfo]:
    try:
        data = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
        return data, inspect_image(data, max_pixels=MAX_PIXELS)
    except (binascii.Error, ValueError, NotAnImage):
        raise UpstreamFailed(
            f"The upstream answered {what} that is not a readable image.", code="upstream_bad_image"
        ) from None


def _stored_item(deps: Responder, turn: _Turn, item: dict[str, Any]) -> dict[str, Any]:
    """An image_generation_call with its image in S3 (once, whichever event brings it first) and a fresh link."""
    call_id = str(item.get("id") or f"ig_{len(turn.stored)}")
    result = item.get("result")
    if call_id not in turn.stored and result:
        data, info = _decoded(result, "an image")
        key = _put(deps, turn, f"{call_id[:64]}", data, info.format)
        if key is None:
            return item  # S3 refused it: the base64 stays in the answer, whatever was asked
        turn.stored[call_id] = key
    key = turn.stored.get(call_id)
    if key is None:
        return item
    linked = {**item, "url": deps.service.store.presign(key)}
    if turn.links_only:
        linked["result"] = None
    return linked


def _partial(deps: Responder, turn: _Turn, event: dict[str, Any]) -> dict[str, Any]:
    data, info = _decoded(event.get("partial_image_b64"), "a partial image")
    name = f"{str(event.get('item_id') or 'ig')[:64]}-partial-{int(event.get('partial_image_index') or 0)}"
    key = _put(deps, turn, name, data, info.format)
    if key is None:
        return event
    turn.partials += 1
    linked = {**event, "url": deps.service.store.presign(key)}
    if turn.links_only:
        linked["partial_image_b64"] = ""
    return linked


def _put(deps: Responder, turn: _Turn, name: str, data: bytes, output_format: str) -> str | None:
    try:
        return deps.service.put_image(turn.folder, name, data, output_format, {"response-id": turn.response_id})
    except StorageError:
        logger.warning("responses image not stored: answered inline", extra={"response_id": turn.response_id})
        return None


def _keep(
    owner: str,
    request: ResponsesRequest,
    deps: Responder,
    turn: _Turn,
    history: list[Turn],
    prepared: PreparedInput,
    answer: dict[str, Any],
    record: RequestRecord,
) -> None:
    """The turn, kept for a follow-up (unless ``store: false``): its input's new images stored beside the
    answer's, both turns' text, and the answer's images by call id. A failure here loses no image: it is logged,
    and the answer goes out (its id then cannot be continued)."""
    if deps.conversations is None or request.store is False:
        return
    try:
        user_images = [
            ref if isinstance(ref, str) else _input_key(deps, turn, index, ref)
            for index, ref in enumerate(prepared.user_images)
        ]
        text = "\n".join(
            part.get("text", "")
            for item in answer.get("output", [])
            if isinstance(item, dict) and item.get("type") == "message"
            for part in item.get("content") or []
            if isinstance(part, dict) and part.get("type") == "output_text"
        )
        made = [turn.stored[call] for call in turn.stored]
        turns, dropped = bounded(
            [*history, Turn("user", prepared.user_text, user_images), Turn("assistant", text, made)]
        )
        deps.conversations.save(owner, turn.response_id, turns, dict(turn.stored))
        record.responses = {**(record.responses or {}), "turns": len(turns), "images_dropped": dropped}
    except Exception:
        logger.exception("conversation not kept", extra={"response_id": turn.response_id})


def _input_key(deps: Responder, turn: _Turn, index: int, new: NewImage) -> str:
    key = _put(deps, turn, f"input-{index}", new.image.content(), new.image.info.format)
    if key is None:
        raise StorageError("input image not stored")
    return key


def describe(record: RequestRecord, request: ResponsesRequest, tool: ImageGenerationTool) -> None:
    """The request line's view of the request: the text model and the tool's options, never the input text."""
    record.model = request.model
    record.size = tool.size or "auto"
    record.quality = tool.quality or "auto"
    record.output_format = tool.output_format or "png"
    record.responses = {
        "text_model": request.model,
        "image_model": tool.model or "gpt-image-2",
        "tool": tool.model_dump(exclude_none=True, exclude={"input_image_mask", "type"}),
        "stream": request.stream,
        "previous_response_id": request.previous_response_id,
        "input_items": 1 if isinstance(request.input, str) else len(request.input),
    }
