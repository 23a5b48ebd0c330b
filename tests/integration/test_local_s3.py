"""The local stack's S3 checks presigned POSTs and presigned URLs like S3 does, so the upload limits of
``POST /v1/uploads`` are real and a download link that was altered or has expired fails locally as it would in
AWS: the tickets and links come from the service's own ``UploadStore`` and ``ImageStore`` and go over HTTP to
moto's server behind ``local.s3.PresignedUrlCheck`` and ``local.s3.PresignedPostPolicy``."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.config
import httpx
import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from imagecore.platform import aws
from imagecore.storage.store import ImageStore, ImageToStore, UploadStore, make_s3_client
from local.s3 import PresignedPostPolicy, PresignedUrlCheck
from tests.conftest import ServedApp

BUCKET = "local-s3-policy-tests"
KEY_ID = "key_s3policy0001"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 2  # 10 bytes: what the tests' tickets allow


class Clock:
    def __init__(self) -> None:
        self.shift = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # A session keeps the credentials it first resolved; these tests sign with the local ones (and leave no
    # session holding them behind).
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    aws.session.cache_clear()
    moto = DomainDispatcherApplication(create_backend_app)
    credentials = {"local": "local"}
    app = PresignedUrlCheck(
        PresignedPostPolicy(moto, credentials=credentials, clock=clock), credentials=credentials, clock=clock
    )
    served = ServedApp(app)
    client = make_s3_client("us-east-1", served.url)
    client.create_bucket(Bucket=BUCKET)
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)
    served.close()
    aws.session.cache_clear()


@pytest.fixture
def ticket(s3: Any) -> Any:
    """What POST /v1/uploads answers for a 10-byte PNG."""
    return UploadStore(s3, BUCKET, 900).presign(
        KEY_ID, content_type="image/png", max_bytes=len(PNG), filename="cat.png", purpose="image"
    )


def post(ticket: Any, data: bytes = PNG, content_type: str = "image/png", **changes: str | None) -> httpx.Response:
    fields = {**ticket.fields, **changes}
    fields = {name: value for name, value in fields.items() if value is not None}
    return httpx.post(ticket.url, data=fields, files={"file": ("cat.png", data, content_type)}, timeout=30)


def s3_error(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/xml")
    document = ET.fromstring(response.content)  # noqa: S314 - the local stack's own answer
    return {child.tag: child.text or "" for child in document}


def stored_keys(s3: Any) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_a_valid_post_is_a_204_and_stores_the_bytes_under_the_ticket_key(s3, ticket):
    response = post(ticket)

    assert response.status_code == 204, response.text
    stored = s3.get_object(Bucket=BUCKET, Key=ticket.fields["key"])
    assert stored["Body"].read() == PNG
    assert stored["ContentType"] == "image/png"
    assert stored["Metadata"] == {"filename": "cat.png", "purpose": "image"}


def test_another_key_is_refused(s3, ticket):
    other = ticket.fields["key"].replace(ticket.upload_id, "upl_someone_else")

    error = s3_error(post(ticket, key=other), 403)

    assert error["Code"] == "AccessDenied"
    assert "Policy Condition failed" in error["Message"] and '"$key"' in error["Message"]
    assert stored_keys(s3) == []


def test_another_content_type_is_refused(s3, ticket):
    error = s3_error(post(ticket, content_type="text/html", **{"Content-Type": "text/html"}), 403)

    assert error["Code"] == "AccessDenied"
    assert '"$content-type"' in error["Message"] and "image/png" in error["Message"]
    assert stored_keys(s3) == []


def test_a_file_over_the_ticket_limit_is_entity_too_large(s3, ticket):
    error = s3_error(post(ticket, data=b"\x00" * 100_000), 400)

    assert (error["Code"], error["ProposedSize"], error["MaxSizeAllowed"]) == ("EntityTooLarge", "100000", "10")
    assert stored_keys(s3) == []


def test_an_empty_file_is_entity_too_small(s3, ticket):
    error = s3_error(post(ticket, data=b""), 400)

    assert (error["Code"], error["ProposedSize"], error["MinSizeAllowed"]) == ("EntityTooSmall", "0", "1")


def test_a_zeroed_or_missing_signature_is_refused(s3, ticket):
    zeroed = s3_error(post(ticket, **{"x-amz-signature": "0" * 64}), 403)
    missing = s3_error(post(ticket, **{"x-amz-signature": None}), 403)

    assert zeroed["Code"] == missing["Code"] == "SignatureDoesNotMatch"
    assert stored_keys(s3) == []


def test_a_policy_rewritten_to_allow_more_no_longer_matches_its_signature(s3, ticket):
    policy = json.loads(base64.b64decode(ticket.fields["policy"]))
    for condition in policy["conditions"]:
        if isinstance(condition, list) and condition[0] == "content-length-range":
            condition[2] = 10_000_000
    forged = base64.b64encode(json.dumps(policy).encode()).decode()

    error = s3_error(post(ticket, data=b"\x00" * 100_000, policy=forged), 403)

    assert error["Code"] == "SignatureDoesNotMatch"


def test_an_unknown_access_key_is_refused(s3, ticket):
    credential = ticket.fields["x-amz-credential"].replace("local/", "AKIAOTHER/", 1)

    error = s3_error(post(ticket, **{"x-amz-credential": credential}), 403)

    assert error["Code"] == "InvalidAccessKeyId"


def test_an_expired_policy_is_refused(s3, ticket, clock):
    clock.shift = timedelta(seconds=901)

    error = s3_error(post(ticket), 403)

    assert (error["Code"], error["Message"]) == ("AccessDenied", "Invalid according to Policy: Policy expired.")
    clock.shift = timedelta(seconds=890)
    assert post(ticket).status_code == 204


def test_a_field_the_policy_does_not_name_is_refused(s3, ticket):
    error = s3_error(post(ticket, **{"x-amz-meta-owner": "someone"}), 403)

    assert error["Message"] == "Invalid according to Policy: Extra input fields: x-amz-meta-owner"
    # x-ignore-* fields are S3's documented exception.
    assert post(ticket, **{"x-ignore-note": "anything"}).status_code == 204


def test_a_post_without_a_policy_is_access_denied(s3, ticket):
    fields = {"key": ticket.fields["key"], "Content-Type": "image/png"}
    response = httpx.post(ticket.url, data=fields, files={"file": ("cat.png", PNG, "image/png")})

    assert s3_error(response, 403)["Code"] == "AccessDenied"
    assert stored_keys(s3) == []


def test_a_post_to_another_bucket_is_refused(s3, ticket):
    s3.create_bucket(Bucket="local-s3-policy-other")
    try:
        response = httpx.post(
            ticket.url.replace(BUCKET, "local-s3-policy-other"),
            data=ticket.fields,
            files={"file": ("cat.png", PNG, "image/png")},
        )
        error = s3_error(response, 403)
        assert '"$bucket"' in error["Message"]
    finally:
        s3.delete_bucket(Bucket="local-s3-policy-other")


def test_other_s3_calls_pass_through_untouched(s3):
    s3.put_object(Bucket=BUCKET, Key="images/x.png", Body=PNG, ContentType="image/png")

    assert s3.get_object(Bucket=BUCKET, Key="images/x.png")["Body"].read() == PNG


def test_an_image_put_is_checked_by_its_crc32_not_by_a_second_sha256_of_the_body(s3):
    """The store's PUTs carry the body's CRC32, which S3 verifies (moto does not), with an unsigned payload as
    over TLS in AWS: the body is hashed once, not also with SHA-256 for the signature."""
    sent: list[dict[str, str]] = []

    def capture(request: Any, **_: Any) -> None:
        sent.append({k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})

    s3.meta.events.register("before-send.s3.PutObject", capture)
    store = ImageStore(s3, BUCKET)
    stored = store.save_one("images/t", "0", ImageToStore(PNG, "png"))
    assert store.read(stored.key) == PNG
    headers = sent[-1]
    assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert headers["x-amz-checksum-crc32"] == base64.b64encode(zlib.crc32(PNG).to_bytes(4, "big")).decode()


# --- presigned download links ----------------------------------------------------------------------------------
@pytest.fixture
def link(s3: Any) -> str:
    """What an answer's ``url`` is: the store's presigned GET of a stored image (an hour)."""
    s3.put_object(Bucket=BUCKET, Key="images/2026/11/26/a b+c ü.png", Body=PNG, ContentType="image/png")
    return ImageStore(s3, BUCKET, presign_expiry_seconds=3600).presign("images/2026/11/26/a b+c ü.png")


def test_a_presigned_link_downloads_the_image(link: str) -> None:
    response = httpx.get(link, timeout=30)
    assert response.status_code == 200, response.text
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"


def test_a_presigned_head_is_checked_the_same_way(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="images/h.png", Body=PNG)
    url = s3.generate_presigned_url("head_object", Params={"Bucket": BUCKET, "Key": "images/h.png"}, ExpiresIn=60)
    assert httpx.head(url, timeout=30).status_code == 200
    assert httpx.head(url.replace("h.png", "g.png"), timeout=30).status_code == 403


@pytest.mark.parametrize(
    ("change", "replacement"),
    [
        ("a%20b", "a%20c"),  # another object
        ("X-Amz-Expires=3600", "X-Amz-Expires=604800"),  # a longer life
        (f"/{BUCKET}/", "/local-s3-policy-other/"),  # another bucket
    ],
)
def test_a_link_changed_after_signing_no_longer_matches_its_signature(link: str, change: str, replacement: str) -> None:
    assert change in link
    error = s3_error(httpx.get(link.replace(change, replacement), timeout=30), 403)
    assert error["Code"] == "SignatureDoesNotMatch"


def test_an_expired_link_is_refused_as_s3_refuses_it(link: str, clock: Clock) -> None:
    # ten seconds before its end: a loaded machine may take a second or more between signing and asking
    clock.shift = timedelta(seconds=3590)
    assert httpx.get(link, timeout=30).status_code == 200
    clock.shift = timedelta(seconds=3601)
    error = s3_error(httpx.get(link, timeout=30), 403)
    assert (error["Code"], error["Message"], error["X-Amz-Expires"]) == ("AccessDenied", "Request has expired", "3600")
    assert datetime.fromisoformat(error["ServerTime"].replace("Z", "+00:00")) > datetime.fromisoformat(
        error["Expires"].replace("Z", "+00:00")
    )


def test_a_link_from_the_future_is_not_valid_yet(link: str, clock: Clock) -> None:
    clock.shift = -timedelta(hours=1)
    error = s3_error(httpx.get(link, timeout=30), 403)
    assert (error["Code"], error["Message"]) == ("AccessDenied", "Request is not valid yet")


def test_a_link_signed_with_an_unknown_key_is_refused(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    s3.put_object(Bucket=BUCKET, Key="images/k.png", Body=PNG)
    stranger = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url=s3.meta.endpoint_url,
        aws_access_key_id="AKIDSTRANGER",
        aws_secret_access_key="secret",
        config=botocore.config.Config(signature_version="s3v4"),
    )
    url = stranger.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "images/k.png"})
    assert s3_error(httpx.get(url, timeout=30), 403)["Code"] == "InvalidAccessKeyId"


def test_a_link_with_a_bad_expiry_is_a_query_parameters_error(link: str) -> None:
    error = s3_error(httpx.get(link.replace("X-Amz-Expires=3600", "X-Amz-Expires=0"), timeout=30), 400)
    assert error["Code"] == "AuthorizationQueryParametersError"
