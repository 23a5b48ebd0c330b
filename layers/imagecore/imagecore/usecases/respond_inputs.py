"""What a ``POST /v1/responses`` request sends upstream: the conversation so far (the service's own record of it)
and this turn's input, every image checked like an edit input before the upstream is paid.

- ``input_image`` parts: a ``data:`` URL is decoded and checked (format, size limit, no decompression bomb) and
  forwarded as it came; an https URL is forwarded for the upstream to fetch; a ``file_id`` naming an upload of
  this caller (``POST /v1/uploads``) is read from S3, checked and inlined; any other ``file_id`` is a 400.
- ``{"type": "image_generation_call", "id": ...}`` (or an ``item_reference`` to one) becomes the image that call
  made for this caller, inlined from S3.
- the tool's ``input_image_mask`` is checked like an edit mask (PNG with alpha, the size of the first image).
- earlier turns become messages; earlier images become ``input_image`` parts (the assistant's at the head of the
  next user message: assistant messages carry only text).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imagecore.domain.errors import InvalidRequest
from imagecore.domain.images import source_size
from imagecore.domain.models import CONTENT_TYPES, UPLOAD_ID, matches
from imagecore.domain.responses import ImageGenerationTool, ResponsesRequest
from imagecore.storage.conversations import Turn
from imagecore.storage.store import UploadedFile, UploadNotFound, UploadTooLarge
from imagecore.usecases.edits import InputImage, RawFile, check_images

_DATA_URL = re.compile(r"data:([\w/+.-]+)?(;[\w=.+-]+)*;base64,", re.ASCII)
_ROLES = ("user", "system", "developer", "assistant")
_TEXT_PARTS = ("input_text", "output_text")


@dataclass
class NewImage:
    """An image of this turn's input that the service keeps with the conversation."""

    image: InputImage


@dataclass
class PreparedInput:
    items: list[dict[str, Any]]
    tool: dict[str, Any]
    user_text: str
    user_images: list[NewImage | str] = field(default_factory=list)  # new images, or kept references
    images_in: int = 0
    input_bytes: int = 0
    mask: bool = False


# What one request may send upstream in images, all told (its own and its conversation's): they travel inline as
# base64 in one JSON body, held in memory while it is sent, and the function runs in 512 MB.
MAX_INPUT_IMAGES = 16
MAX_INPUT_TOTAL_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class InputSources:
    """Where referenced images come from: the caller's uploads, the stored images, the caller's earlier calls."""

    read_upload: Callable[[str], UploadedFile]
    read_image: Callable[[str], bytes]
    find_call: Callable[[str], str | None]
    max_image_bytes: int


def data_url(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def _image_part(url: str) -> dict[str, Any]:
    return {"type": "input_image", "image_url": url, "detail": "auto"}


class _Builder:
    def __init__(self, sources: InputSources) -> None:
        self.sources = sources
        self.first: RawFile | None = None
        self.prepared = PreparedInput(items=[], tool={}, user_text="")

    def decoded(self, param: str, url: str) -> RawFile:
        match = _DATA_URL.match(url)
        if match is None:
            raise InvalidRequest(
                f"Invalid value for '{param}': a data: URL must be 'data:image/<type>;base64,<data>'.",
                param=param,
                code="invalid_image_url",
            )
        if len(url) > self.sources.max_image_bytes * 4 // 3 + 256:
            raise InvalidRequest(f"'{param}' is over the image size limit.", param=param, code="image_too_large")
        try:
            data = base64.b64decode(url[match.end() :], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(
                f"Invalid value for '{param}': its data is not base64.", param=param, code="invalid_image_url"
            ) from None
        return RawFile(param, data, None)

    def uploaded(self, param: str, file_id: str) -> RawFile:
        if not matches(UPLOAD_ID, file_id):
            raise InvalidRequest(
                f"Invalid value for '{param}': a file_id must be an upload of yours (POST /v1/uploads).",
                param=param,
                code="invalid_file_id",
            )
        try:
            upload = self.sources.read_upload(file_id)
        except UploadNotFound:
            raise InvalidRequest(
                f"Invalid value for '{param}': no upload '{file_id}' for this API key (uploads expire after about "
                "a day).",
                param=param,
                code="invalid_file_id",
            ) from None
        except UploadTooLarge:
            raise InvalidRequest(
                f"'{param}' is over the image size limit.", param=param, code="image_too_large"
            ) from None
        return RawFile(param, upload.data, None)

    def checked(self, raw: RawFile) -> InputImage:
        (image,), _ = check_images([raw], None, max_image_bytes=self.sources.max_image_bytes)
        if self.first is None:
            self.first = raw
        self.prepared.images_in += 1
        self.prepared.input_bytes += source_size(raw.data)
        if self.prepared.images_in > MAX_INPUT_IMAGES or self.prepared.input_bytes > MAX_INPUT_TOTAL_BYTES:
            raise InvalidRequest(
                f"Too many input images: one request (its conversation included) takes at most {MAX_INPUT_IMAGES} "
                f"images of {MAX_INPUT_TOTAL_BYTES // (1024 * 1024)} MB in all. Start a new conversation or send "
                "fewer or smaller images.",
                param="input",
                code="input_too_large",
            )
        return image

    def part(self, param: str, part: Any, role: str, keep: bool) -> dict[str, Any]:
        if not isinstance(part, dict):
            raise InvalidRequest(f"Invalid value for '{param}': a content part is an object.", param=param)
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(f"Missing required parameter: '{param}.text'.", param=f"{param}.text")
            if keep:
                self.prepared.user_text += ("\n" if self.prepared.user_text else "") + text
            return {"type": "output_text" if role == "assistant" else "input_text", "text": text}
        if kind != "input_image" or role == "assistant":
            raise InvalidRequest(
                f"Invalid value for '{param}.type': content parts are input_text and input_image here.",
                param=f"{param}.type",
            )
        file_id, url = part.get("file_id"), part.get("image_url")
        if isinstance(file_id, str) and file_id:
            image = self.checked(self.uploaded(f"{param}.file_id", file_id))
        elif isinstance(url, str) and url.startswith("data:"):
            image = self.checked(self.decoded(f"{param}.image_url", url))
        elif isinstance(url, str) and url.startswith("https://") and len(url) <= 8192:
            self.prepared.images_in += 1
            if keep:
                self.prepared.user_images.append(url)
            return _image_part(url)
        else:
            raise InvalidRequest(
                f"Invalid value for '{param}': an input_image needs image_url (a data: or https URL) or file_id.",
                param=f"{param}.image_url",
                code="invalid_image_url",
            )
        if keep:
            self.prepared.user_images.append(NewImage(image))
        return _image_part(data_url(image.content(), image.content_type))

    def referenced(self, param: str, call_id: Any, result: Any = None) -> dict[str, Any]:
        """The image an earlier call of this caller made; an output item sent back whole (``result`` included)
        that this service does not know is taken as the image it carries, checked like any input."""
        key = self.sources.find_call(call_id) if isinstance(call_id, str) and len(call_id) <= 128 else None
        if key is None and isinstance(result, str) and result:
            carried = self.checked(self.decoded(f"{param[: -len('.id')]}.result", "data:image/png;base64," + result))
            self.prepared.user_images.append(NewImage(carried))
            return _image_part(data_url(carried.content(), carried.content_type))
        if key is None:
            raise InvalidRequest(
                f"Invalid value for '{param}': no image_generation_call '{str(call_id)[:128]}' of yours "
                "(conversations are kept 30 days).",
                param=param,
                code="item_not_found",
            )
        image = self.checked(RawFile(param, self.sources.read_image(key), None))
        self.prepared.user_images.append(key)
        return _image_part(data_url(image.content(), image.content_type))

    def item(self, index: int, item: Any) -> dict[str, Any]:
        param = f"input[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"Invalid value for '{param}': an input item is an object.", param=param)
        kind = item.get("type")
        if kind in ("image_generation_call", "item_reference"):
            return {"role": "user", "content": [self.referenced(f"{param}.id", item.get("id"), item.get("result"))]}
        if kind not in (None, "message"):
            raise InvalidRequest(
                f"Invalid value for '{param}.type': input items are messages and image_generation_call references "
                "here.",
                param=f"{param}.type",
            )
        role = item.get("role")
        if role not in _ROLES:
            raise InvalidRequest(
                f"Invalid value for '{param}.role': one of {', '.join(_ROLES)}.", param=f"{param}.role"
            )
        content = item.get("content")
        keep = role == "user"
        if isinstance(content, str):
            if keep:
                self.prepared.user_text += ("\n" if self.prepared.user_text else "") + content
            return {"role": role, "content": content}
        if not isinstance(content, list) or not content:
            raise InvalidRequest(f"Missing required parameter: '{param}.content'.", param=f"{param}.content")
        return {
            "role": role,
            "content": [self.part(f"{param}.content[{j}]", p, role, keep) for j, p in enumerate(content)],
        }


def history_items(
    turns: list[Turn], read_image: Callable[[str], bytes]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Earlier turns as messages; their images as input_image parts (stored ones inlined from S3). The last
    answer's images are handed back apart, for the head of this turn's user message."""
    items: list[dict[str, Any]] = []
    carried: list[dict[str, Any]] = []
    for turn in turns:
        parts = [_image_part(ref if ref.startswith("https://") else _stored(ref, read_image)) for ref in turn.images]
        if turn.role == "assistant":
            if carried:
                items.append({"role": "user", "content": carried})
            items.append({"role": "assistant", "content": [{"type": "output_text", "text": turn.text or "(image)"}]})
            carried = parts
            continue
        content = [*carried, *parts, *([{"type": "input_text", "text": turn.text}] if turn.text else [])]
        carried = []
        if content:
            items.append({"role": "user", "content": content})
    return items, carried


def _stored(key: str, read_image: Callable[[str], bytes]) -> str:
    extension = key.rsplit(".", 1)[-1]
    content_type = {"jpg": CONTENT_TYPES["jpeg"], "webp": CONTENT_TYPES["webp"]}.get(extension, CONTENT_TYPES["png"])
    return data_url(read_image(key), content_type)


def prepare_input(
    request: ResponsesRequest, tool: ImageGenerationTool, history: list[Turn], sources: InputSources
) -> PreparedInput:
    """The upstream ``input`` (history, then this turn) and tool, every image of this turn checked."""
    builder = _Builder(sources)
    prepared = builder.prepared
    current: list[dict[str, Any]]
    if isinstance(request.input, str):
        prepared.user_text = request.input
        current = [{"role": "user", "content": request.input}]
    else:
        current = [builder.item(i, item) for i, item in enumerate(request.input)]
    prepared.tool = tool.upstream(stream=request.stream)
    mask = tool.input_image_mask
    if mask is not None:
        if mask.file_id:
            raw_mask = builder.uploaded("input_image_mask.file_id", mask.file_id)
        elif mask.image_url:
            raw_mask = builder.decoded("input_image_mask.image_url", mask.image_url)
        else:
            raise InvalidRequest(
                "Missing required parameter: 'input_image_mask.image_url'.", param="input_image_mask.image_url"
            )
        raw_mask = RawFile("input_image_mask", raw_mask.data, None)
        if builder.first is not None:
            _, checked_mask = check_images([builder.first], raw_mask, max_image_bytes=sources.max_image_bytes)
        else:
            (checked_mask,), _ = check_images([raw_mask], None, max_image_bytes=sources.max_image_bytes)
            if not checked_mask.info.has_alpha:
                raise InvalidRequest(
                    "The mask must have an alpha channel: transparent pixels mark where to edit.",
                    param="input_image_mask",
                    code="invalid_mask",
                )
        assert checked_mask is not None
        prepared.tool["input_image_mask"] = {"image_url": data_url(checked_mask.content(), checked_mask.content_type)}
        prepared.mask = True
    earlier, carried = history_items(history, sources.read_image)
    if carried and current[0]["role"] == "user":
        first = current[0]["content"]
        text = [{"type": "input_text", "text": first}] if isinstance(first, str) else first
        current[0] = {**current[0], "content": [*carried, *text]}
    elif carried:
        earlier.append({"role": "user", "content": carried})
    prepared.items = [*earlier, *current]
    return prepared
