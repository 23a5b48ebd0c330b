"""The S3 image store: the only code that touches S3 for images."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from imagecore.models import CONTENT_TYPES, EXTENSIONS

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

# S3 user metadata travels as x-amz-meta-* headers: keep it short and ASCII.
_MAX_METADATA_VALUE = 256


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
    size_bytes: int


def new_image_id() -> str:
    """128 random bits, URL-safe: keys cannot be guessed or enumerated."""
    return secrets.token_hex(16)


def image_key(created: datetime, image_id: str, index: int, output_format: str) -> str:
    return f"images/{created:%Y/%m/%d}/{image_id}/{index}.{EXTENSIONS[output_format]}"


def make_s3_client(region: str, endpoint_url: str | None = None, max_attempts: int = 5) -> S3Client:
    """SigV4 always (botocore would otherwise presign with SigV2), the regional endpoint in AWS,
    path-style addressing against a local endpoint."""
    config = Config(
        signature_version="s3v4",
        region_name=region,
        retries={"mode": "standard", "max_attempts": max_attempts},
        s3={"addressing_style": "path" if endpoint_url else "virtual"},
        connect_timeout=5,
        read_timeout=30,
    )
    return boto3.client(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url or f"https://s3.{region}.amazonaws.com",
        config=config,
    )


class ImageStore:
    def __init__(self, s3: S3Client, bucket: str, presign_expiry_seconds: int = 3600) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._expiry = presign_expiry_seconds

    @property
    def bucket(self) -> str:
        return self._bucket

    def save(
        self,
        images: Sequence[ImageToStore],
        *,
        created: datetime | None = None,
        metadata: dict[str, str] | None = None,
    ) -> list[StoredImage]:
        """Write every image (in parallel when there are several) under one new id."""
        created = created or datetime.now(UTC)
        image_id = new_image_id()
        meta = {k: _ascii(v) for k, v in (metadata or {}).items() if v is not None}
        jobs = [
            StoredImage(
                image_key(created, image_id, index, image.output_format),
                CONTENT_TYPES[image.output_format],
                len(image.data),
            )
            for index, image in enumerate(images)
        ]

        def put(pair: tuple[StoredImage, ImageToStore]) -> StoredImage:
            stored, image = pair
            self._put(stored.key, image.data, stored.content_type, meta)
            return stored

        if len(jobs) == 1:
            return [put((jobs[0], images[0]))]
        with ThreadPoolExecutor(max_workers=min(len(jobs), 8)) as pool:
            return list(pool.map(put, zip(jobs, images, strict=True)))

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

    def presign(self, key: str) -> str:
        """A SigV4 presigned GET; it also dies when the signing credentials expire (Lambda role: hours)."""
        return self._s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": key},
            ExpiresIn=self._expiry,
        )


def _ascii(value: str) -> str:
    return str(value).encode("ascii", "replace").decode("ascii")[:_MAX_METADATA_VALUE]
