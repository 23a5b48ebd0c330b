"""How a request that fails its model's validation is described to the client: one OpenAI-style error naming
the first bad field. Used by the HTTP edges and by the worker (for queued requests), so it knows no HTTP."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from imagecore.domain.errors import ImageServiceError, InvalidRequest, UnsupportedMediaType

# OpenAI's own wording and codes for the common validation failures.
_PYDANTIC_CODES = {
    "missing": "missing_required_parameter",
    "extra_forbidden": "unknown_parameter",
    "literal_error": "invalid_value",
    "enum": "invalid_value",
    "string_type": "invalid_type",
    "int_type": "invalid_type",
    "bool_type": "invalid_type",
    "model_attributes_type": "invalid_type",
    "dict_type": "invalid_type",
}


def validation_error(errors: Iterable[Any]) -> ImageServiceError:
    """Turn pydantic/Powertools validation errors into one OpenAI-style error naming the first bad field."""
    errors = list(errors)
    first: dict[str, Any] = errors[0] if errors else {"type": "value_error", "loc": ("body",), "msg": "invalid request"}
    kind = first.get("type", "")
    loc = list(first.get("loc", ()))
    loc = loc[1:] if loc and loc[0] in ("body", "query") else loc  # where it came from: not part of the name
    loc = [part for part in loc if part != "body"]
    param = _param_path(loc)
    if kind == "unsupported_content_type":
        return UnsupportedMediaType(
            "Content-Type must be application/json for this route "
            "(for example: curl -H 'Content-Type: application/json').",
        )
    if kind == "json_invalid":
        return InvalidRequest(
            "The request body is not valid JSON. Send a JSON object with Content-Type: application/json.",
            code="invalid_json",
        )
    if param is None:
        return InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    if kind == "missing":
        message = f"Missing required parameter: '{param}'."
    elif kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    else:
        message = f"Invalid value for '{param}': {first.get('msg', 'invalid value')}."
    code = _PYDANTIC_CODES.get(kind, "invalid_value")
    return InvalidRequest(message, param=param, code=code)


def _param_path(loc: list[Any]) -> str | None:
    """('images', 0, 'upload_id') -> 'images[0].upload_id', the way the fields are written in requests."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str):
            path += f".{part}" if path else part
    return path or None
