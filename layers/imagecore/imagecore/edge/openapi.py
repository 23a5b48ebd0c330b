"""The service's OpenAPI 3.1 document, merged from every function's own resolver.

Each function only knows its own routes, and in AWS no function can import another's code, so the merged
document is built ahead of time (``make openapi``, checked by a test) and shipped in this package as
``openapi.json``; the health function serves it, and its Swagger UI page (``imagecore.edge.pages``).
"""

from __future__ import annotations

import importlib
import json
from importlib import resources
from typing import Any

from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer, Server

import imagecore.edge
from imagecore.domain.models import TASK_ID, EditParameters, EditUploadRequest, UploadRef

FUNCTION_MODULES = (
    "functions.generations.app",
    "functions.generations_async.app",
    "functions.edits.app",
    "functions.edits_async.app",
    "functions.responses.app",
    "functions.uploads.app",
    "functions.tasks.app",
    "functions.usage.app",
    "functions.client_tokens.app",
    "functions.webhook_secrets.app",
    "functions.health.app",
)
TITLE = "image-service"
DESCRIPTION = (
    "OpenAI-compatible image generation (gpt-image-2 through sub2api). Images are stored in S3 and returned as "
    "presigned URLs. Every error has the shape {error: {message, type, param, code}}."
)
PUBLIC_PATHS = ("/v1", "/v1/health", "/v1/openapi.json", "/v1/docs", "/v1/playground")


def build_document(modules: tuple[str, ...] = FUNCTION_MODULES) -> dict[str, Any]:
    merge = OpenAPIMerge(
        title=TITLE,
        version=imagecore.__version__,
        description=DESCRIPTION,
        servers=[Server(url="/")],
        security_schemes={
            "bearer": HTTPBearer(
                description="An API key of this service, or a client token minted with one (POST /v1/client_tokens): "
                "Authorization: Bearer <key or token>"
            )
        },
        security=[{"bearer": []}],
        on_conflict="error",
    )
    for name in modules:
        merge.add_schema(importlib.import_module(name).app.get_openapi_schema())
    document: dict[str, Any] = json.loads(merge.get_openapi_json_schema())
    # Powertools documents its default 422; this API answers validation errors as OpenAI-style 400s.
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    schemas = document.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    _document_edit_bodies(document)
    for path in PUBLIC_PATHS:
        for operation in document.get("paths", {}).get(path, {}).values():
            operation["security"] = []
    _document_shared_answers(document)
    _document_task_id(document)
    _document_model_id(document)
    _document_client_tokens(document)
    _document_secret_rotation(document)
    _document_examples(document)
    return document


# One request body per JSON operation that the service takes as it is (small and cheap: one low-quality
# 1024x1024 image), so Swagger UI's "Try it out" sends something that works instead of a body it made up from
# the schema (which combined output_compression with png, and partial_images without stream). An edit's JSON
# example carries its input inline (a 256x256 sky-blue PNG as a data URL); larger inputs are uploaded first.
GENERATION_EXAMPLE: dict[str, Any] = {
    "model": "gpt-image-2",
    "prompt": "A lighthouse on a rocky coast at dawn, soft watercolor",
    "size": "1024x1024",
    "quality": "low",
    "output_format": "png",
    "n": 1,
}
EDIT_PROMPT = "Add a red kite flying in the sky"
EXAMPLE_INPUT = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAQAAAAEACAIAAADTED8xAAAB/0lEQVR42u3TQREAMAjAsDHzuMIQJnijgURC7xpZ/eCq"
    "LwEGAAOAAcAAYAAwABgADAAGAAOAAcAAYAAwABgADAAGAAOAAcAAYAAwABgADAAGAAOAAcAAYAAwABgADAAGAAOAAcAAYAAwABgADAAGAAOAAcAAYAAw"
    "ABgADAAGAAOAATAAGAAMAAYAA4ABwABgADAAGAAMAAYAA4ABwABgADAAGAAMAAYAA4ABwABgADAAGAAMAAYAA4ABwABgADAAGAAMAAYAA4ABwABgADAA"
    "GAAMAAYAA4ABwABgADAAGAAMAAbAAGAAMAAYAAwABgADgAHAAGAAMAAYAAwABgADgAHAAGAAMAAYAAwABgADgAHAAGAAMAAYAAwABgADgAHAAGAAMAAY"
    "AAwABgADgAHAAGAAMAAYAAwABgADgAHAAGAAMAAGAAOAAcAAYAAwABgADAAGAAOAAcAAYAAwABgADAAGAAOAAcAAYAAwABgADAAGAAOAAcAAYAAwABgA"
    "DAAGAAOAAcAAYAAwABgADAAGAAOAAcAAYAAwABgADAAGAAOAAcAAGAAMAAYAA4ABwABgADAAGAAMAAYAA4ABwABgADAAGAAMAAYAA4ABwABgADAAGAAM"
    "AAYAA4ABwABgADAAGAAMAAYAA4ABwABgADAAGAAMAAYAA4ABwABgADAAbAO8BgQwXqtQPQAAAABJRU5ErkJggg=="
)
JSON_EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/images/generations", "post"): GENERATION_EXAMPLE,
    ("/v1/images/generations/async", "post"): GENERATION_EXAMPLE,
    ("/v1/images/edits", "post"): {
        "images": [{"image_url": EXAMPLE_INPUT}],
        "prompt": EDIT_PROMPT,
        "size": "1024x1024",
        "quality": "low",
        "n": 1,
    },
    ("/v1/uploads", "post"): {
        "content_type": "image/png",
        "bytes": 1048576,
        "filename": "input.png",
        "purpose": "image",
    },
    ("/v1/client_tokens", "post"): {"expires_in": 900, "scope": ["generations", "tasks"], "max_images": 4},
    ("/v1/responses", "post"): {
        "model": "gpt-5",
        "input": "Draw a red fox sitting in fresh snow, watercolour.",
        "tools": [{"type": "image_generation", "size": "1024x1024", "quality": "low"}],
    },
}
JSON_EXAMPLES[("/v1/images/edits/async", "post")] = JSON_EXAMPLES[("/v1/images/edits", "post")]
# The edit form's text fields, filled in: "Try it out" then needs only a file.
FORM_EXAMPLES = {"prompt": EDIT_PROMPT, "size": "1024x1024", "quality": "low", "n": 1}


def _document_examples(document: dict[str, Any]) -> None:
    for (path, method), example in JSON_EXAMPLES.items():
        operation = document.get("paths", {}).get(path, {}).get(method)
        if operation is None:
            continue
        content = operation.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            content["application/json"]["example"] = json.loads(json.dumps(example))
        if "multipart/form-data" in content:
            operation["requestBody"]["description"] = (
                "multipart/form-data: the images themselves (choose the files; the other fields are filled in). "
                "application/json: each image inline as a base64 data URL (image_url, small images), or uploaded "
                "first with POST /v1/uploads and named by its upload_id."
            )
    form = document.get("components", {}).get("schemas", {}).get("EditForm")
    if form is not None:
        for name, value in FORM_EXAMPLES.items():
            form["properties"][name]["example"] = value


def _document_client_tokens(document: dict[str, Any]) -> None:
    """Minting a client token checks an Idempotency-Key like every POST but never remembers the answer (a
    credential is not stored): a retry mints another token."""
    operation = document.get("paths", {}).get("/v1/client_tokens", {}).get("post")
    for parameter in (operation or {}).get("parameters", []):
        if parameter.get("name") == IDEMPOTENCY_KEY["name"]:
            parameter["description"] = "Checked, not remembered: a retry mints a new token (none is ever stored)."


def _document_secret_rotation(document: dict[str, Any]) -> None:
    """Rotating the webhook secret checks an Idempotency-Key but never remembers the answer (a secret)."""
    operation = document.get("paths", {}).get("/v1/webhooks/secret/rotate", {}).get("post")
    for parameter in (operation or {}).get("parameters", []):
        if parameter.get("name") == IDEMPOTENCY_KEY["name"]:
            parameter["description"] = "Checked, not remembered: a retry rotates again (a secret is never stored)."


def _document_task_id(document: dict[str, Any]) -> None:
    """What a task id looks like (any other id is answered 404, like an unknown one)."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter.get("name") == "task_id":
                    parameter["schema"] = {
                        **parameter.get("schema", {}),
                        "pattern": f"^(?:{TASK_ID})$",
                        "maxLength": 37,
                        "description": "The task's id, as the submission answered it.",
                    }


# What a model id looks like (the names the template's ResponsesAllowedModels accepts); any other is a 404.
MODEL_ID = r"[A-Za-z0-9._:-]{1,128}"


def _document_model_id(document: dict[str, Any]) -> None:
    operation = document.get("paths", {}).get("/v1/models/{model}", {}).get("get")
    for parameter in (operation or {}).get("parameters", []):
        if parameter.get("in") == "path" and parameter.get("name") == "model":
            parameter["schema"] = {
                **parameter.get("schema", {}),
                "pattern": f"^(?:{MODEL_ID})$",
                "maxLength": 128,
                "description": "A model id, as GET /v1/models lists them (any other: 404 model_not_found).",
            }


def _error(description: str, **headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    if headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
        }
    return answer


# What API Gateway itself answers (the template's GatewayResponses), before or around any function.
_GATEWAY_ANSWERS = {
    "429": _error("Throttled by the API's rate limit", **{"Retry-After": "Seconds to wait"}),
    "504": _error("The API's integration timeout passed before the answer"),
}
_AUTHORIZED_ANSWERS = {
    "401": _error("Missing or unknown API key", **{"WWW-Authenticate": "Bearer"}),
    "403": _error("This API key may not call this route"),
}
# Every POST: its body (JSON read strictly, media types matched case-insensitively) and its Idempotency-Key.
_POST_ANSWERS = {
    "400": _error("Invalid request: the error's param names the field"),
    "409": _error("A request with this Idempotency-Key is still running"),
    "413": _error("The body is larger than API Gateway and Lambda take (use /v1/uploads for large images)"),
    "415": _error("A Content-Type this route does not take"),
    "422": _error("This Idempotency-Key was used for a different request"),
    "503": _error("Idempotency-Key records or tasks cannot be reached right now: nothing was run; try again"),
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key (same API key and route, within 24 h) gets the first answer back.",
    "schema": {"type": "string", "maxLength": 255},
}


def _document_shared_answers(document: dict[str, Any]) -> None:
    """The answers every operation of a kind can give, declared once here rather than on each route: API
    Gateway's own (throttling, timeout, and the authorizer's on protected routes), and every POST's."""
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            answers = dict(_GATEWAY_ANSWERS)
            if path not in PUBLIC_PATHS:
                answers.update(_AUTHORIZED_ANSWERS)
            if method == "post":
                answers.update(_POST_ANSWERS)
                parameters = operation.setdefault("parameters", [])
                if not any(p.get("name") == IDEMPOTENCY_KEY["name"] for p in parameters):
                    parameters.append(json.loads(json.dumps(IDEMPOTENCY_KEY)))
            responses = operation.setdefault("responses", {})
            for status, answer in answers.items():
                responses.setdefault(status, json.loads(json.dumps(answer)))


def _document_edit_bodies(document: dict[str, Any]) -> None:
    """The edits route reads its body itself (repeated and indexed file fields do not fit a function signature),
    so its two request bodies are described here, from the same models that validate them."""
    operations = [
        operation
        for path in ("/v1/images/edits", "/v1/images/edits/async")
        if (operation := document.get("paths", {}).get(path, {}).get("post")) is not None
    ]
    if not operations:
        return
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (EditParameters, EditUploadRequest, UploadRef):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    form = json.loads(json.dumps(schemas["EditParameters"]))
    form["title"] = "EditForm"
    binary = {"type": "string", "format": "binary"}
    form["properties"] = {
        "image[]": {
            "type": "array",
            "items": binary,
            "minItems": 1,
            "maxItems": 16,
            "description": "1 to 16 PNG, JPEG or WebP images, each under 50 MB (also: image, image[N]).",
        },
        "mask": {**binary, "description": "Optional: same format and size as the first image, with alpha."},
        **form["properties"],
    }
    form["required"] = ["image[]", *form.get("required", [])]
    for name, field in form["properties"].items():
        # A form field is text or a file: it cannot be null (leave it out instead).
        variants = field.get("anyOf")
        if variants and {"type": "null"} in variants:
            kept = [variant for variant in variants if variant != {"type": "null"}]
            form["properties"][name] = {**{k: v for k, v in field.items() if k not in ("anyOf", "default")}, **kept[0]}
    schemas["EditForm"] = form
    for operation in operations:
        operation["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"$ref": "#/components/schemas/EditForm"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/EditUploadRequest"}},
            },
        }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def packaged_document() -> str:
    return resources.files(imagecore.edge).joinpath("openapi.json").read_text(encoding="utf-8")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    target = Path(__file__).with_name("openapi.json")
    text = render(build_document())
    if "--check" in sys.argv:
        sys.exit(0 if target.read_text() == text else "openapi.json is stale: run make openapi")
    target.write_text(text)
    print(f"wrote {target}")
