"""An async edit as it is submitted: recorded and queued at once, whatever its inputs (up to 16 of up to 50 MB),
so ``POST /v1/images/edits/async`` answers in well under 2 s. Its parameters are validated now; its images are
not read: a multipart body is kept in S3 as it came, uploads are kept as references, and the worker reads and
checks them (``kept_edit``) exactly as the synchronous route would, a bad input ending the task as failed with
the same error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from imagecore.domain.errors import InvalidRequest
from imagecore.domain.images import source_sha256
from imagecore.domain.jsonbody import parse_json_body
from imagecore.domain.models import EditParameters, EditUploadRequest
from imagecore.domain.validation import validation_error
from imagecore.storage.spool import InputFiles
from imagecore.storage.store import ImageStore, UploadStore, owner_prefix
from imagecore.usecases.edits import (
    MAX_IMAGES,
    EditInput,
    OwnUploads,
    edit_from_kept,
    edit_from_multipart,
    edit_from_uploads,
    multipart_form,
)

MULTIPART_ROLE = "multipart"
JSON_ROLE = "json"


@dataclass(frozen=True)
class PendingEdit:
    """An edit task's request before its images are read: its parameters, how many reference images it names,
    what makes it the same request as a retry (``fingerprint``), and its inputs as they will be kept."""

    parameters: EditParameters
    images: int
    fingerprint: dict[str, Any]
    body: bytes  # the request body, kept as it came
    content_type: str
    role: str = MULTIPART_ROLE

    def keep(self, store: ImageStore, owner: str, task_id: str) -> list[dict[str, str]]:
        """The task's inputs, for the worker: the body written under the caller's prefix (a JSON body names
        uploads, which the worker reads under the same prefix: nobody else's can be named)."""
        key = f"{owner_prefix(owner)}{task_id}/request.{self.role}"
        # stored as opaque bytes: its Content-Type (a multipart boundary) travels in the task's input entry
        store.put_bytes(key, self.body, "application/octet-stream")
        return [{"role": self.role, "key": key, "content_type": self.content_type}]


def pending_from_multipart(body: bytes, content_type: str) -> PendingEdit:
    """The form's fields validated and its files counted and hashed (not decoded)."""
    fields, files = multipart_form(body, content_type)
    parameters = _parameters(fields)
    images = sum(1 for role, _ in files if role == "image")
    _check_count(images)
    fingerprint = {
        "parameters": parameters.model_dump(exclude={"images", "mask"}),
        "inputs": [(role, source_sha256(data)) for role, data in files],
    }
    return PendingEdit(parameters, images, fingerprint, body, content_type)


def pending_from_uploads(body: str | bytes) -> PendingEdit:
    """The JSON body validated; the uploads (or data URLs) it names are read and checked by the worker."""
    try:
        request = EditUploadRequest.model_validate(parse_json_body(body))
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False)) from None
    refs = [("image", ref) for ref in request.images] + ([("mask", request.mask)] if request.mask else [])
    fingerprint = {
        "parameters": request.model_dump(exclude={"images", "mask"}),
        "inputs": [
            (role, ref.upload_id or hashlib.sha256(str(ref.image_url).encode()).hexdigest()) for role, ref in refs
        ],
    }
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return PendingEdit(request, len(request.images), fingerprint, raw, "application/json", JSON_ROLE)


def kept_edit(
    parameters: dict[str, Any],
    inputs: list[dict[str, str]],
    store: ImageStore,
    uploads: UploadStore,
    owner: str,
    files: InputFiles,
    *,
    max_image_bytes: int,
) -> EditInput:
    """An edit task's inputs read and checked as the synchronous route checks them (the same errors); uploads
    and kept inputs are copied to ``files`` on local disk, which the caller removes when the task ends."""
    if inputs and inputs[0]["role"] == MULTIPART_ROLE:
        body = store.read(inputs[0]["key"])
        return edit_from_multipart(body, inputs[0].get("content_type") or "", max_image_bytes=max_image_bytes)
    if inputs and inputs[0]["role"] == JSON_ROLE:
        own = OwnUploads(uploads, owner, max_image_bytes, files)
        return edit_from_uploads(store.read(inputs[0]["key"]), own, max_image_bytes=max_image_bytes)
    return edit_from_kept(parameters, inputs, store, files, max_image_bytes=max_image_bytes)


def _parameters(fields: dict[str, str]) -> EditParameters:
    try:
        return EditParameters.model_validate(fields, strict=False)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False)) from None


def _check_count(images: int) -> None:
    if not images:
        raise InvalidRequest(
            "At least one image is required: send it as a file part named image, image[] or image[N].",
            param="image",
            code="missing_required_parameter",
        )
    if images > MAX_IMAGES:
        raise InvalidRequest(
            f"At most {MAX_IMAGES} images can be edited together; {images} were sent.",
            param="image",
            code="too_many_images",
        )
