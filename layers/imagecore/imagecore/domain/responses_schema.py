"""What the OpenAPI document says of ``POST /v1/responses``: the request's ``input``, ``tools`` and ``tool_choice``
as precisely as JSON Schema can say them (the code checks them itself, with the Images routes' messages), and the
answer's ``response`` object."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imagecore.domain.models import MODELS, SIZE_MAX_CHARS


def _optional(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


IMAGE_TOOL: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "image_generation"},
        "model": _optional({"enum": list(MODELS)}),
        "size": _optional(
            {
                "type": "string",
                "maxLength": SIZE_MAX_CHARS,
                "description": "'auto' or WIDTHxHEIGHT, with the rules of /v1/images/generations.",
            }
        ),
        "quality": _optional({"enum": ["low", "medium", "high", "auto"]}),
        "output_format": _optional({"enum": ["png", "jpeg", "webp"]}),
        "output_compression": _optional({"type": "integer", "minimum": 0, "maximum": 100}),
        "background": _optional({"enum": ["auto", "opaque"]}),
        "moderation": _optional({"enum": ["auto", "low"]}),
        "partial_images": _optional({"type": "integer", "minimum": 0, "maximum": 3}),
        "action": _optional({"enum": ["generate", "edit", "auto"]}),
        "input_image_mask": _optional(
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {"image_url": _optional({"type": "string"}), "file_id": _optional({"type": "string"})},
                "description": "A PNG with alpha, the size of the first input image: a data: URL or an upload id.",
            }
        ),
    },
}
TOOLS: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "maxItems": 1,
    "items": IMAGE_TOOL,
    "description": "Exactly one tool: the image_generation tool.",
}
TOOL_CHOICE: dict[str, Any] = {
    "anyOf": [
        {"enum": ["auto", "required", "none"]},
        {
            "type": "object",
            "required": ["type"],
            "additionalProperties": False,
            "properties": {"type": {"const": "image_generation"}},
        },
        {"type": "null"},
    ]
}
_TEXT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"enum": ["input_text", "output_text"]}, "text": {"type": "string"}},
}
_IMAGE_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"const": "input_image"},
        "image_url": {"type": "string", "description": "A data: URL (checked here) or an https URL."},
        "file_id": {"type": "string", "description": "An upload id of yours (POST /v1/uploads)."},
        "detail": {"enum": ["auto", "low", "high"]},
    },
}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "type": {"const": "message"},
        "role": {"enum": ["user", "system", "developer", "assistant"]},
        "content": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "minItems": 1, "items": {"anyOf": [_TEXT_PART, _IMAGE_PART]}},
            ]
        },
    },
}
_IMAGE_REFERENCE = {
    "type": "object",
    "required": ["type", "id"],
    "properties": {
        "type": {"enum": ["image_generation_call", "item_reference"]},
        "id": {"type": "string", "description": "The id of an image_generation_call this service made for you."},
    },
}
INPUT: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1, "pattern": r"\S"},
        {"type": "array", "minItems": 1, "items": {"anyOf": [_MESSAGE, _IMAGE_REFERENCE]}},
    ],
    "description": (
        "A string, or items: messages whose content holds input_text and input_image parts, and "
        "{type: image_generation_call, id} naming an earlier image of yours."
    ),
}


class ResponseObject(BaseModel):
    """OpenAI's ``response`` object as this service answers it: each ``image_generation_call`` in ``output`` has
    ``result`` (base64, or null with ``X-Image-Result: url``) and ``url`` (a presigned link of the stored image)."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    id: str
    object: str = "response"
    created_at: int | float
    status: str | None = None
    model: str
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    error: dict[str, Any] | None = Field(default=None)
