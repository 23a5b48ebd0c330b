"""The S3 image store: the only code that touches S3 for images."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from imagecore.domain.images import ImageOnDisk, ImageSource
from imagecore.domain.models import CONTENT_TYPES, EXTENSIONS
from imagecore.platform import aws
from imagecore.storage.spool import InputFiles, SpoolTooLarge

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from imagecore.platform.settings import ImageSettings
else:
    S3Client = Any

# S3 user metadata travels as x-amz-meta-* headers: keep it short and ASCII.
_MAX_METADATA_VALUE = 256
# An object copied to local disk is read from S3 this much at a time.
_CHUNK_BYTES = 1024 * 1024


class StorageError(Exception):
    """S3 did not take the images, after botocore's own retries."""


@dataclass(frozen=True)
class ImageToStore:
    data: bytes
    output_format: str  # png | jpeg | webp, decided from the bytes


@dataclass(frozen=True)
class StoredImage:
    key: str
    content_type: str


def new_image_id() -> str:
    """128 random bits, URL-safe: keys cannot be guessed or enumerated."""
    return secrets.token_hex(16)


def image_folder(created: datetime, image_id: str) -> str:
    return f"images/{created:%Y/%m/%d}/{image_id}"


def make_s3_client(region: str, endpoint_url: object | None = None, max_attempts: int = 5) -> S3Client:
    """SigV4 always (botocore would otherwise presign with SigV2), the regional endpoint in AWS,
    path-style addressing against a local endpoint (``endpoint_url``, a string or the settings' URL).

    Every PUT carries a CRC32 of its body (``when_supported``, botocore's default since 1.36, pinned here): S3
    checks it, and over HTTPS botocore sends it as an unsigned-payload trailer, so the CRC32 (10-20 ms for a 4K
    image) is the only pass over the bytes. ``when_required`` would be slower, not faster: without a checksum
    botocore SHA-256-signs the payload instead (over twice the CRC32's cost), and a Content-MD5 costs more
    still. Payload signing is off explicitly, so a plain-HTTP endpoint (the local S3) sees the same PUT as S3
    does over TLS instead of botocore hashing every body a second time with SHA-256.
    ``max_pool_connections`` covers a worker's parallel saves (up to 8) besides the documents written
    alongside, so a connection is always reused."""
    endpoint = str(endpoint_url) if endpoint_url else None
    config = Config(
        signature_version="s3v4",
        request_checksum_calculation="when_supported",
        response_checksum_validation="when_supported",
        max_pool_connections=16,
        region_name=region,
        retries={"mode": "standard", "max_attempts": max_attempts},
        s3={"addressing_style": "path" if endpoint else "virtual", "payload_signing_enabled": False},
        connect_timeout=5,
        read_timeout=30,
    )
    client: S3Client = aws.client(
        "s3",
        region_name=region,
        endpoint_url=endpoint or f"https://s3.{region}.amazonaws.com",
        config=config,
    )
    return client


class ImageStore:
    def __init__(self, s3: S3Client, bucket: str, presign_expiry_seconds: int = 3600) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._expiry = presign_expiry_seconds

    @classmethod
    def from_settings(cls, settings: ImageSettings) -> ImageStore:
        """The function's images bucket, its links presigned for the configured time."""
        s3 = make_s3_client(settings.aws_region, settings.s3_endpoint_url)
        return cls(s3, settings.images_bucket, settings.presign_expiry_seconds)

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def s3(self) -> S3Client:
        return self._s3

    def save(
        self,
        images: Sequence[ImageToStore],
        *,
        created: datetime | None = None,
        metadata: dict[str, str] | None = None,
        folder: str | None = None,
    ) -> list[StoredImage]:
        """Write every image (in parallel when there are several) into ``folder``, by default
        ``images/<yyyy>/<mm>/<dd>/<new random id>``."""
        created = created or datetime.now(UTC)
        folder = folder or image_folder(created, new_image_id())

        def put(pair: tuple[int, ImageToStore]) -> StoredImage:
            return self.save_one(folder, str(pair[0]), pair[1], metadata)

        if len(images) == 1:
            return [put((0, images[0]))]
        with ThreadPoolExecutor(max_workers=min(len(images), 8)) as pool:
            return list(pool.map(put, enumerate(images)))

    def save_one(
        self, folder: str, name: str, image: ImageToStore, metadata: dict[str, str] | None = None
    ) -> StoredImage:
        """Write one image as ``<folder>/<name>.<ext>``: images read from a streamed answer are stored one by
        one as they arrive, so only one is ever held in memory."""
        stored = StoredImage(f"{folder}/{name}.{EXTENSIONS[image.output_format]}", CONTENT_TYPES[image.output_format])
        meta = {k: _ascii(v) for k, v in (metadata or {}).items() if v is not None}
        self._put(stored.key, image.data, stored.content_type, meta)
        return stored

    def _put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> None:
        try:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                Metadata=metadata,
                CacheControl="private, max-age=31536000, immutable",
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"put {key} failed: {type(exc).__name__}") from exc

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """An object as it is (an async edit's request body, kept for the worker)."""
        try:
            self._s3.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType=content_type)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"put {key} failed: {type(exc).__name__}") from exc

    def read(self, key: str) -> bytes:
        try:
            return self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"get {key} failed: {type(exc).__name__}") from exc

    def read_to(self, key: str, into: InputFiles) -> ImageOnDisk:
        """The object copied to a file of ``into`` a block at a time (never whole in memory); ``StorageError``
        when S3 cannot give it."""
        try:
            body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"]
            return into.write(body.iter_chunks(_CHUNK_BYTES))
        except (BotoCoreError, ClientError, OSError) as exc:  # OSError: the local disk refused the copy
            raise StorageError(f"get {key} failed: {type(exc).__name__}") from exc

    def write_json(self, key: str, document: dict[str, Any]) -> None:
        self._put(key, json.dumps(document).encode("utf-8"), "application/json", {})

    def read_json(self, key: str) -> dict[str, Any] | None:
        """The JSON document at ``key``, or None when there is none."""
        try:
            body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except ClientError as exc:
            # Without s3:ListBucket S3 answers a missing key with 403, not 404: both mean "nothing there" here.
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound", "403", "AccessDenied"):
                return None
            raise StorageError(f"get {key} failed: {type(exc).__name__}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"get {key} failed: {type(exc).__name__}") from exc
        document: dict[str, Any] = json.loads(body)
        return document

    def list_folder(self, folder: str) -> list[str]:
        """Every key under ``<folder>/`` (a job's own folder holds a few dozen at most), in key order; ``StorageError``
        when S3 cannot say (never taken for "nothing there")."""
        keys: list[str] = []
        more: dict[str, str] = {}
        try:
            while True:
                page = self._s3.list_objects_v2(Bucket=self._bucket, Prefix=f"{folder}/", **more)  # type: ignore[arg-type]
                keys.extend(str(item["Key"]) for item in page.get("Contents", []))
                if not page.get("IsTruncated"):
                    return sorted(keys)
                more = {"ContinuationToken": str(page["NextContinuationToken"])}
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"list {folder} failed: {type(exc).__name__}") from exc

    def presign(self, key: str) -> str:
        """A SigV4 presigned GET; it also dies when the signing credentials expire (Lambda role: hours)."""
        return self._s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": key},
            ExpiresIn=self._expiry,
        )


def _ascii(value: str) -> str:
    return str(value).encode("ascii", "replace").decode("ascii")[:_MAX_METADATA_VALUE]


class UploadNotFound(Exception):
    """No upload with that id under the caller's prefix (whether it exists elsewhere is not said)."""


class UploadTooLarge(Exception):
    pass


@dataclass(frozen=True)
class UploadTicket:
    upload_id: str
    url: str
    fields: dict[str, str]
    expires_at: int
    max_bytes: int


@dataclass(frozen=True)
class UploadedFile:
    upload_id: str
    data: ImageSource  # a file on local disk when read ``into`` a request's ``InputFiles``
    content_type: str
    filename: str


def new_upload_id() -> str:
    return "upl_" + secrets.token_hex(16)


def owner_prefix(owner: str) -> str:
    """The caller's folder: a hash of its owner id, so no id can reach outside it or name another caller's."""
    return "uploads/" + hashlib.sha256(owner.encode("utf-8")).hexdigest()[:32] + "/"


def _safe_filename(name: str | None, upload_id: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", (name or "").strip())[:100].strip("._")
    return cleaned or upload_id


class UploadStore:
    """Large edit inputs: the caller POSTs them straight to S3, then names them by upload id."""

    def __init__(self, s3: S3Client, bucket: str, expiry_seconds: int = 900) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._expiry = expiry_seconds

    def presign(
        self, owner: str, *, content_type: str, max_bytes: int, filename: str | None, purpose: str
    ) -> UploadTicket:
        upload_id = new_upload_id()
        key = owner_prefix(owner) + upload_id
        meta = {"x-amz-meta-filename": _safe_filename(filename, upload_id), "x-amz-meta-purpose": purpose}
        fields = {"Content-Type": content_type, **meta}
        conditions: list[Any] = [
            {"Content-Type": content_type},
            ["content-length-range", 1, max_bytes],
            *({name: value} for name, value in meta.items()),
        ]
        post = self._s3.generate_presigned_post(
            Bucket=self._bucket, Key=key, Fields=fields, Conditions=conditions, ExpiresIn=self._expiry
        )
        return UploadTicket(
            upload_id=upload_id,
            url=post["url"],
            fields={k: str(v) for k, v in post["fields"].items()},
            expires_at=int(datetime.now(UTC).timestamp()) + self._expiry,
            max_bytes=max_bytes,
        )

    def keep_inputs(self, owner: str, task_id: str, files: Any) -> list[dict[str, str]]:
        """Keep an edit task's checked inputs (``edit.files()``) under the caller's prefix for the worker."""
        kept = []
        for index, (role, image) in enumerate(files):
            key = f"{owner_prefix(owner)}{task_id}/{index}-{role}"
            try:
                self._s3.put_object(Bucket=self._bucket, Key=key, Body=image.data, ContentType=image.content_type)
            except (BotoCoreError, ClientError) as exc:
                raise StorageError(f"put {key} failed: {type(exc).__name__}") from exc
            kept.append({"key": key, "filename": image.filename, "role": role})
        return kept

    def read(self, owner: str, upload_id: str, *, max_bytes: int, into: InputFiles | None = None) -> UploadedFile:
        """The caller's upload: in memory, or, with ``into``, copied to a file of it a block at a time."""
        key = owner_prefix(owner) + upload_id
        data: ImageSource
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=key)
            if head["ContentLength"] > max_bytes:
                raise UploadTooLarge(upload_id)
            obj = self._s3.get_object(Bucket=self._bucket, Key=key)
            if into is None:
                data = obj["Body"].read()
            else:
                data = into.write(obj["Body"].iter_chunks(_CHUNK_BYTES), max_bytes=max_bytes)
        except SpoolTooLarge:  # the object was replaced by a larger one since its head was read
            raise UploadTooLarge(upload_id) from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound", "403", "AccessDenied"):
                raise UploadNotFound(upload_id) from None
            raise StorageError(f"get {key} failed: {code}") from exc
        except (BotoCoreError, OSError) as exc:  # OSError: the local disk refused the copy
            raise StorageError(f"get {key} failed: {type(exc).__name__}") from exc
        metadata = obj.get("Metadata") or {}
        return UploadedFile(
            upload_id=upload_id,
            data=data,
            content_type=str(obj.get("ContentType") or "application/octet-stream"),
            filename=_safe_filename(metadata.get("filename"), upload_id),
        )
