"""Reading an edit request, multipart or JSON-with-uploads, and checking its images for real before anything
is sent upstream. Every failure is a 400 naming the field.

Images that arrive in the request (a multipart body or data URLs, a few MB at most) stay in memory; uploads and
an edit task's kept inputs (up to 16 of up to 50 MB and a mask) are copied from S3 to the request's
``InputFiles`` on local disk a block at a time, checked from there and sent to the upstream from there, so no
more than one input's decoded pixels (while it is checked) is ever in memory."""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from pydantic import ValidationError

from imagecore.domain.errors import InvalidRequest, NotFound
from imagecore.domain.images import (
    ImageInfo,
    ImageSource,
    ImageTooLarge,
    NotAnImage,
    open_source,
    source_bytes,
    source_sha256,
    source_size,
    verify_image,
)
from imagecore.domain.jsonbody import parse_json_body
from imagecore.domain.models import (
    CONTENT_TYPES,
    EXTENSIONS,
    FILENAME_MAX_CHARS,
    EditParameters,
    EditUploadRequest,
    UploadRef,
)
from imagecore.domain.validation import validation_error
from imagecore.storage.spool import InputFiles
from imagecore.storage.store import ImageStore, UploadedFile, UploadNotFound, UploadStore, UploadTooLarge

if TYPE_CHECKING:  # werkzeug's multipart parser is imported by the edits function only, when it parses a body
    from werkzeug.datastructures import FileStorage, MultiDict

MAX_IMAGES = 16
MULTIPART = "multipart/form-data"
_INDEXED_IMAGE = re.compile(r"image\[(\d{1,2})\]\Z")
_MAX_FORM_PARTS = 64
_MAX_TEXT_FIELD_BYTES = 256 * 1024  # the prompt is at most 32,000 characters


@dataclass(frozen=True)
class InputImage:
    """An image the caller sent, as it will be forwarded: original bytes (in memory or on local disk), its name,
    and its real type."""

    data: ImageSource
    filename: str
    info: ImageInfo

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.info.format]

    def content(self) -> bytes:
        """The bytes themselves, for a route that inlines its inputs (read whole from a file on disk)."""
        return source_bytes(self.data)

    def open(self) -> BinaryIO:
        """The bytes to send, as a file object read a block at a time (the caller closes it)."""
        return open_source(self.data)


@dataclass(frozen=True)
class EditInput:
    parameters: EditParameters
    images: list[InputImage]
    mask: InputImage | None

    @property
    def input_bytes(self) -> int:
        return sum(source_size(image.data) for _, image in self.files())

    def files(self) -> list[tuple[str, InputImage]]:
        """(role, image) for every input: the references in order, then the mask."""
        return [("image", image) for image in self.images] + ([("mask", self.mask)] if self.mask else [])


def edit_fingerprint(edit: EditInput) -> dict[str, Any]:
    """What makes two edit requests the same: the parameters and the bytes of every input (not the multipart
    boundary, which a client draws anew on each retry, nor whether inputs came inline or as uploads)."""
    return {
        "parameters": edit.parameters.model_dump(exclude={"images", "mask"}),
        "inputs": [(role, source_sha256(image.data)) for role, image in edit.files()],
    }


def edit_from_kept(
    parameters: dict[str, Any],
    inputs: list[dict[str, str]],
    store: ImageStore,
    files: InputFiles,
    *,
    max_image_bytes: int,
) -> EditInput:
    """An edit task's inputs, as its submission kept them in S3, copied to ``files`` and checked again."""
    raw = [RawFile(f"{entry['role']}", store.read_to(entry["key"], files), entry.get("filename")) for entry in inputs]
    images = [item for item, entry in zip(raw, inputs, strict=True) if entry["role"] == "image"]
    masks = [item for item, entry in zip(raw, inputs, strict=True) if entry["role"] == "mask"]
    checked, mask = check_images(images, masks[0] if masks else None, max_image_bytes=max_image_bytes)
    return EditInput(EditParameters.model_validate(parameters), checked, mask)


@dataclass(frozen=True)
class RawFile:
    param: str
    data: ImageSource
    filename: str | None


def edit_from_multipart(body: bytes, content_type: str, *, max_image_bytes: int) -> EditInput:
    fields, images, mask = _form_of(body, content_type)
    parameters = _parameters(fields)
    checked, checked_mask = check_images(images, mask, max_image_bytes=max_image_bytes)
    return EditInput(parameters, checked, checked_mask)


class UploadReader(Protocol):
    def read(self, upload_id: str) -> UploadedFile:
        """The caller's upload ``upload_id``; ``UploadNotFound`` or ``UploadTooLarge`` when it cannot be used."""


@dataclass(frozen=True)
class OwnUploads:
    """The uploads of one caller, each read up to the size an input image may have, into ``files`` on local
    disk (in memory without it)."""

    store: UploadStore
    owner: str
    max_bytes: int
    files: InputFiles | None = None

    def read(self, upload_id: str) -> UploadedFile:
        return self.store.read(self.owner, upload_id, max_bytes=self.max_bytes, into=self.files)


def multipart_form(body: bytes, content_type: str) -> tuple[dict[str, str], list[tuple[str, ImageSource]]]:
    """A multipart edit's text fields and its files as (role, bytes), read but not checked."""
    fields, images, mask = _form_of(body, content_type)
    return fields, [("image", raw.data) for raw in images] + ([("mask", mask.data)] if mask else [])


def _form_of(body: bytes, content_type: str) -> tuple[dict[str, str], list[RawFile], RawFile | None]:
    form, files = _parse_multipart(body, content_type)
    fields: dict[str, str] = {}
    for name in form:
        values = form.getlist(name)
        if name in ("image", "image[]", "mask") or _INDEXED_IMAGE.match(name):
            raise InvalidRequest(f"'{name}' must be a file upload, not a text field.", param=name, code="invalid_type")
        if len(values) > 1:
            raise InvalidRequest(f"'{name}' was sent {len(values)} times; send it once.", param=name)
        fields[name] = values[0]
    images, mask = _files_of(files)
    return fields, images, mask


def edit_from_uploads(body: str | bytes, uploads: UploadReader, *, max_image_bytes: int) -> EditInput:
    try:
        request = EditUploadRequest.model_validate(parse_json_body(body))
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False)) from None
    refs = [(f"images[{i}]", ref) for i, ref in enumerate(request.images)]
    if request.mask is not None:
        refs.append(("mask", request.mask))

    def fetch(named: tuple[str, UploadRef]) -> RawFile:
        param, ref = named
        if ref.image_url is not None:
            return RawFile(param, _data_url_bytes(param, ref.image_url), None)
        upload_id = str(ref.upload_id)
        try:
            upload = uploads.read(upload_id)
        except UploadNotFound:
            raise NotFound(
                f"No upload '{upload_id}' for this API key (uploads expire after about a day).",
                param=param,
                code="upload_not_found",
            ) from None
        except UploadTooLarge:
            raise _too_large(param, max_image_bytes) from None
        return RawFile(param, upload.data, upload.filename)

    with ThreadPoolExecutor(max_workers=min(len(refs), 8)) as pool:
        raw = list(pool.map(fetch, refs))
    mask = raw.pop() if request.mask is not None else None
    checked, checked_mask = check_images(raw, mask, max_image_bytes=max_image_bytes)
    return EditInput(request, checked, checked_mask)


def _data_url_bytes(param: str, url: str) -> bytes:
    """The image in a ``data:image/...;base64,`` URL (its form was checked by the request model)."""
    try:
        return base64.b64decode(url.partition(",")[2], validate=True)
    except binascii.Error:
        raise InvalidRequest(
            f"'{param}' is not valid base64 (data:image/png;base64,...).", param=param, code="invalid_image_format"
        ) from None


def check_images(
    images: Sequence[RawFile], mask: RawFile | None, *, max_image_bytes: int
) -> tuple[list[InputImage], InputImage | None]:
    """The contract's rules for edit inputs, each decided from the bytes (never the name or declared type)."""
    if not images:
        raise InvalidRequest(
            "At least one image is required: send it as a file part named image, image[] or image[N].",
            param="image",
            code="missing_required_parameter",
        )
    if len(images) > MAX_IMAGES:
        raise InvalidRequest(
            f"At most {MAX_IMAGES} images can be edited together; {len(images)} were sent.",
            param="image",
            code="too_many_images",
        )
    checked = [_checked(raw, max_image_bytes) for raw in images]
    if mask is None:
        return checked, None
    checked_mask = _checked(mask, max_image_bytes)
    first = checked[0].info
    if checked_mask.info.format != first.format:
        raise InvalidRequest(
            f"The mask must have the same format as the first image ({first.format}), not {checked_mask.info.format}.",
            param="mask",
            code="invalid_mask",
        )
    if (checked_mask.info.width, checked_mask.info.height) != (first.width, first.height):
        raise InvalidRequest(
            f"The mask must have the same size as the first image ({first.size}), not {checked_mask.info.size}.",
            param="mask",
            code="invalid_mask",
        )
    if not checked_mask.info.has_alpha:
        raise InvalidRequest(
            "The mask must have an alpha channel: transparent pixels mark where to edit.",
            param="mask",
            code="invalid_mask",
        )
    return checked, checked_mask


def _checked(raw: RawFile, max_image_bytes: int) -> InputImage:
    if source_size(raw.data) > max_image_bytes:
        raise _too_large(raw.param, max_image_bytes)
    if raw.filename is not None and len(raw.filename) > FILENAME_MAX_CHARS:
        raise InvalidRequest(
            f"The file name of '{raw.param}' is {len(raw.filename):,} characters long; at most "
            f"{FILENAME_MAX_CHARS} are taken.",
            param=raw.param,
            code="invalid_filename",
        )
    try:
        info = verify_image(raw.data)
    except ImageTooLarge as exc:
        raise InvalidRequest(
            f"'{raw.param}' is too large: {exc}. Scale it down and send it again.",
            param=raw.param,
            code="image_too_large",
        ) from None
    except NotAnImage:
        raise InvalidRequest(
            f"'{raw.param}' is not a readable PNG, JPEG or WebP image.", param=raw.param, code="invalid_image_format"
        ) from None
    name = raw.filename or f"{raw.param.replace('[', '-').rstrip(']')}.{EXTENSIONS[info.format]}"
    return InputImage(raw.data, name, info)


def _too_large(param: str, max_image_bytes: int) -> InvalidRequest:
    return InvalidRequest(
        f"'{param}' is over the {max_image_bytes / (1024 * 1024):g} MB limit for an image.",
        param=param,
        code="image_too_large",
    )


def _parse_multipart(body: bytes, content_type: str) -> tuple[MultiDict[str, str], MultiDict[str, FileStorage]]:
    from werkzeug.formparser import MultiPartParser
    from werkzeug.http import parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get("boundary")
    if not boundary:
        raise InvalidRequest(
            "The multipart body has no boundary in its Content-Type header.", param=None, code="invalid_multipart"
        )
    parser = MultiPartParser(max_form_memory_size=_MAX_TEXT_FIELD_BYTES, max_form_parts=_MAX_FORM_PARTS)
    try:
        form, files = parser.parse(io.BytesIO(body), boundary.encode("latin-1"), len(body))
    except Exception as exc:  # werkzeug raises ValueError, or RequestEntityTooLarge past the part limits
        raise InvalidRequest(
            "The multipart body could not be read: it is truncated or malformed.", code="invalid_multipart"
        ) from exc
    if None in form or None in files:
        raise InvalidRequest(
            "Every part of the multipart body needs a name (Content-Disposition: form-data; name=...).",
            code="invalid_multipart",
        )
    return form, files


def _files_of(files: MultiDict[str, FileStorage]) -> tuple[list[RawFile], RawFile | None]:
    plain: list[RawFile] = []
    indexed: list[tuple[int, RawFile]] = []
    mask = None
    for name, storage in files.items(multi=True):
        if name == "mask":
            if mask is not None:
                raise InvalidRequest("Send at most one mask.", param="mask")
            mask = RawFile("mask", storage.read(), storage.filename)
        elif name in ("image", "image[]"):
            plain.append(RawFile(f"image[{len(plain)}]", storage.read(), storage.filename))
        elif match := _INDEXED_IMAGE.match(name):
            indexed.append((int(match.group(1)), RawFile(name, storage.read(), storage.filename)))
        else:
            raise InvalidRequest(
                f"Unrecognized file field: {name} (images go in image, image[] or image[N]; the mask in mask).",
                param=name,
                code="unknown_parameter",
            )
    return plain + [raw for _, raw in sorted(indexed, key=lambda pair: pair[0])], mask


def _parameters(fields: dict[str, str]) -> EditParameters:
    """Form fields are text: ``n=2`` and ``stream=false`` are read leniently, as their JSON equivalents."""
    try:
        return EditParameters.model_validate(fields, strict=False)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False)) from None
