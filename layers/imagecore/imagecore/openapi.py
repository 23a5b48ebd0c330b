"""The service's OpenAPI 3.1 document, merged from every function's own resolver.

Each function only knows its own routes, and in AWS no function can import another's code, so the merged
document is built ahead of time (``make openapi``, checked by a test) and shipped in this package as
``openapi.json``; the health function serves it, and its Swagger UI page (``imagecore.pages``).
"""

from __future__ import annotations

import importlib
import json
from importlib import resources
from typing import Any

from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer, Server

import imagecore
from imagecore.models import EditParameters, EditUploadRequest, UploadRef

FUNCTION_MODULES = (
    "functions.generations.app",
    "functions.edits.app",
    "functions.uploads.app",
    "functions.tasks.app",
    "functions.health.app",
)
TITLE = "image-service"
DESCRIPTION = (
    "OpenAI-compatible image generation (gpt-image-2 through sub2api). Images are stored in S3 and returned as "
    "presigned URLs. Every error has the shape {error: {message, type, param, code}}."
)
PUBLIC_PATHS = ("/v1/health", "/v1/openapi.json", "/v1/docs", "/v1/playground")


def build_document(modules: tuple[str, ...] = FUNCTION_MODULES) -> dict[str, Any]:
    merge = OpenAPIMerge(
        title=TITLE,
        version=imagecore.__version__,
        description=DESCRIPTION,
        servers=[Server(url="/")],
        security_schemes={"bearer": HTTPBearer(description="An API key of this service: Authorization: Bearer <key>")},
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
    return document


def _document_edit_bodies(document: dict[str, Any]) -> None:
    """The edits route reads its body itself (repeated and indexed file fields do not fit a function signature),
    so its two request bodies are described here, from the same models that validate them."""
    operation = document.get("paths", {}).get("/v1/images/edits", {}).get("post")
    if operation is None:
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
    schemas["EditForm"] = form
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
    return resources.files(imagecore).joinpath("openapi.json").read_text(encoding="utf-8")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    target = Path(imagecore.__file__).with_name("openapi.json")
    text = render(build_document())
    if "--check" in sys.argv:
        sys.exit(0 if target.read_text() == text else "openapi.json is stale: run make openapi")
    target.write_text(text)
    print(f"wrote {target}")
