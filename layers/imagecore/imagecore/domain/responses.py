"""``POST /v1/responses`` with the ``image_generation`` tool: the request model and its rules.

The text model is passed through; the image tool follows the very rules of the Images routes: its options are
checked by ``ImageRequest`` itself, so a bad ``size`` or a ``transparent`` background gets the same message and
``param`` here as there. What the Responses API has and this service does not offer (other tools, background
mode, an image model as the text model, fields it does not know) is a 400 before the upstream is paid.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from imagecore.domain.errors import InvalidRequest
from imagecore.domain.models import MODELS, PROMPT_MAX_CHARS, ImageRequest, OutputFormat, Quality
from imagecore.domain.responses_schema import INPUT, TOOL_CHOICE, TOOLS
from imagecore.domain.validation import validation_error

# The tool's options that are the Images routes' own parameters, checked by ImageRequest.
IMAGE_OPTIONS = ("size", "quality", "output_format", "output_compression", "background", "moderation", "partial_images")
TEXT_MAX_CHARS = 256_000


class InputImageMask(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    image_url: Annotated[
        str | None, Field(description="A data: URL (PNG with alpha, same size as the first image).")
    ] = None
    file_id: Annotated[str | None, Field(description="An upload id of yours (POST /v1/uploads).")] = None


class ImageGenerationTool(BaseModel):
    """The one tool this route offers. Its options follow the Images routes' gpt-image-2 rules."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    type: Literal["image_generation"]
    model: Annotated[str | None, Field(description="gpt-image-2 or gpt-image-2-2026-04-21.")] = None
    size: Annotated[str | None, Field(description="'auto' or WIDTHxHEIGHT, as on /v1/images/generations.")] = None
    quality: Quality | None = None
    output_format: OutputFormat | None = None
    output_compression: Annotated[int | None, Field(description="0-100, only with jpeg or webp.")] = None
    background: Annotated[str | None, Field(description="'auto' or 'opaque' (no transparency).")] = None
    moderation: Annotated[str | None, Field(description="'auto' or 'low'.")] = None
    partial_images: Annotated[int | None, Field(description="0-3 previews, sent as events with stream.")] = None
    input_image_mask: InputImageMask | None = None
    action: Literal["generate", "edit", "auto"] | None = None
    input_fidelity: Annotated[Any, Field(description="Refused: gpt-image-2 does not take it.")] = None

    def upstream(self, *, stream: bool) -> dict[str, Any]:
        """The tool as sent upstream (the mask travels separately, checked and inlined)."""
        tool = self.model_dump(exclude_none=True, exclude={"input_image_mask", "input_fidelity"})
        if not stream:
            tool.pop("partial_images", None)
        return tool


class ResponsesRequest(BaseModel):
    """Body of ``POST /v1/responses`` (OpenAI's Responses API, with one ``image_generation`` tool)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        defer_build=True,
        json_schema_extra={
            "examples": [
                {
                    "model": "gpt-5",
                    "input": "Draw a red fox sitting in fresh snow, watercolour.",
                    "tools": [{"type": "image_generation", "size": "1024x1024", "quality": "low"}],
                }
            ]
        },
    )

    model: Annotated[str, Field(min_length=1, max_length=128, description="The text model (for example gpt-5).")]
    input: Annotated[str | list[dict[str, Any]], WithJsonSchema(INPUT)]
    tools: Annotated[list[dict[str, Any]], WithJsonSchema(TOOLS)]
    tool_choice: Annotated[str | dict[str, Any] | None, WithJsonSchema(TOOL_CHOICE)] = None
    previous_response_id: Annotated[
        str | None, Field(max_length=64, description="Continue a conversation this service answered you.")
    ] = None
    instructions: Annotated[str | None, Field(max_length=TEXT_MAX_CHARS)] = None
    stream: bool = False
    store: Annotated[bool | None, Field(description="false: the turn is not kept (cannot be continued).")] = None
    background: Annotated[
        bool | None,
        Field(description="Not offered (true is refused): use the async image routes."),
        WithJsonSchema({"anyOf": [{"const": False}, {"type": "null"}]}),
    ] = None
    metadata: dict[str, str] | None = None
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    top_p: Annotated[float | None, Field(ge=0, le=1)] = None
    max_output_tokens: Annotated[int | None, Field(ge=16, le=1_000_000)] = None
    max_tool_calls: Annotated[int | None, Field(ge=1, le=100)] = None
    parallel_tool_calls: bool | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    truncation: str | None = None
    include: list[str] | None = None
    user: Annotated[str | None, Field(max_length=256)] = None
    safety_identifier: Annotated[str | None, Field(max_length=256)] = None
    prompt_cache_key: Annotated[str | None, Field(max_length=256)] = None
    service_tier: str | None = None
    stream_options: dict[str, Any] | None = None

    def checked_tool(self) -> ImageGenerationTool:
        """The request's rules beyond its fields' types; returns its image tool."""
        if self.model.startswith(("gpt-image", "dall-e")) or self.model in MODELS:
            raise InvalidRequest(
                f"Invalid value for 'model': '{self.model}' is an image model. model is the text model that talks "
                "and calls the image_generation tool (for example gpt-5); name the image model in the tool: "
                'tools: [{"type": "image_generation", "model": "gpt-image-2"}].',
                param="model",
            )
        if self.background:
            raise InvalidRequest(
                "Invalid value for 'background': background responses are not offered here; use the async image "
                "routes (POST /v1/images/generations/async, /v1/images/edits/async) and poll the task.",
                param="background",
                code="background_unsupported",
            )
        if not _offered_choice(self.tool_choice):
            raise InvalidRequest(
                "Invalid value for 'tool_choice': 'auto', 'required', 'none' or {\"type\": \"image_generation\"} "
                "(the image_generation tool is the only one offered here).",
                param="tool_choice",
            )
        if isinstance(self.input, str) and not self.input.strip():
            raise InvalidRequest("Invalid value for 'input': it must not be empty.", param="input")
        if isinstance(self.input, list) and not self.input:
            raise InvalidRequest("Invalid value for 'input': it must hold at least one item.", param="input")
        if len(self.input) > PROMPT_MAX_CHARS * 8:
            raise InvalidRequest("Invalid value for 'input': it is too long.", param="input")
        return image_tool(self.tools)


def _offered_choice(choice: str | dict[str, Any] | None) -> bool:
    return choice is None or choice in ("auto", "required", "none") or choice == {"type": "image_generation"}


def image_tool(tools: list[dict[str, Any]]) -> ImageGenerationTool:
    """Exactly one ``image_generation`` tool, its options checked like the Images routes' parameters."""
    for index, tool in enumerate(tools):
        kind = tool.get("type")
        if kind != "image_generation":
            raise InvalidRequest(
                f"Invalid value for 'tools[{index}].type': only the image_generation tool is offered here, not "
                f"{str(kind)[:64]!r}.",
                param=f"tools[{index}].type",
                code="unsupported_tool",
            )
    if len(tools) != 1:
        raise InvalidRequest(
            'Invalid value for \'tools\': send exactly one tool, {"type": "image_generation"}'
            f" ({len(tools)} were sent).",
            param="tools",
            code="missing_required_parameter" if not tools else "invalid_value",
        )
    options = tools[0]
    if options.get("input_fidelity") is not None:
        raise InvalidRequest(
            "Invalid value for 'input_fidelity': gpt-image-2 does not take input_fidelity.",
            param="input_fidelity",
            code="unsupported_parameter",
        )
    model = options.get("model")
    if model is not None and model not in MODELS:
        raise InvalidRequest(
            f"Invalid value for 'tools[0].model': the image model must be one of {', '.join(MODELS)}.",
            param="tools[0].model",
        )
    try:
        ImageRequest.model_validate(
            {"prompt": "-", **{k: options[k] for k in IMAGE_OPTIONS if options.get(k) is not None}}
        )
        return ImageGenerationTool.model_validate(options)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise validation_error(errors) from None
