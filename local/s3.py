"""S3's checks of browser-based uploads (presigned POSTs), in front of moto's server for the local stack.

moto stores whatever a POST form sends. S3 first checks the form against its signed policy, and the upload
limits of ``POST /v1/uploads`` (the caller's own key, the declared content type, the size) rest on exactly
those checks. ``PresignedPostPolicy`` is a WSGI middleware that does them the way S3 does for SigV4
(https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html) and answers S3's XML
errors; a form that passes goes on to moto unchanged:

- the policy is signed: ``x-amz-signature`` = HMAC-SHA256 of the base64 policy with the SigV4 key derived from
  the secret of ``x-amz-credential``'s access key (an unknown key is ``InvalidAccessKeyId``);
- it has not expired (``expiration``);
- every condition holds: ``{"field": "value"}`` and ``["eq", "$field", "value"]`` exact, ``["starts-with",
  "$field", "prefix"]``, ``["content-length-range", min, max]`` on the file's size (``EntityTooLarge`` /
  ``EntityTooSmall``), ``{"bucket": ...}`` on the bucket posted to;
- every form field is named by a condition, except ``policy``, ``x-amz-signature``, ``file`` and ``x-ignore-*``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, unquote
from xml.sax.saxutils import escape

from werkzeug.formparser import parse_form_data
from werkzeug.wrappers import Response

Clock = Callable[[], datetime]
_EXEMPT = {"policy", "x-amz-signature", "file"}
_ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass
class S3Error(Exception):
    status: int
    code: str
    message: str
    details: tuple[tuple[str, str], ...] = ()

    def response(self, resource: str) -> Response:
        extra = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in self.details)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{self.code}</Code><Message>{escape(self.message)}</Message>{extra}"
            f"<Resource>{escape(resource)}</Resource><RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
        )
        return Response(body, status=self.status, content_type="application/xml")


def _denied(message: str) -> S3Error:
    return S3Error(403, "AccessDenied", message)


def _unknown_key() -> S3Error:
    return S3Error(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")


@dataclass(frozen=True)
class PostForm:
    """A POST Object form: its fields (names lower-cased, as S3 compares them) and the file."""

    bucket: str
    fields: dict[str, str]
    file_size: int
    filename: str

    def field(self, name: str) -> str:
        return self.fields.get(name.lower(), "")


class PresignedPostPolicy:
    """WSGI middleware: S3 POST Object requests are checked against their policy before ``app`` sees them."""

    def __init__(self, app: Any, *, credentials: dict[str, str], clock: Clock | None = None) -> None:
        self.app = app
        self.credentials = credentials  # access key id -> secret access key
        self.clock = clock or (lambda: datetime.now(UTC))

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not _is_post_object(environ):
            return self.app(environ, start_response)
        body = _read_body(environ)
        resource = environ.get("PATH_INFO", "/")
        try:
            self.check(_parse_form(environ, body))
        except S3Error as error:
            return error.response(resource)(environ, start_response)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)

    def check(self, form: PostForm) -> None:
        if not form.field("key"):
            raise S3Error(400, "InvalidArgument", "Bucket POST must contain a field named 'key'.")
        if not form.field("policy"):
            raise _denied("Access Denied")  # no anonymous uploads: the bucket is private
        self._check_signature(form)
        policy = _policy(form.field("policy"))
        self._check_expiry(policy)
        conditions = policy.get("conditions")
        if not isinstance(conditions, list):
            raise S3Error(400, "InvalidPolicyDocument", "Invalid Policy: Invalid 'conditions' value.")
        named = {_check_condition(form, condition) for condition in conditions} - {None}
        extra = sorted(name for name in form.fields if name not in named and not _exempt(name))
        if extra:
            raise _denied(f"Invalid according to Policy: Extra input fields: {', '.join(extra)}")

    def _check_signature(self, form: PostForm) -> None:
        if form.field("x-amz-algorithm") != _ALGORITHM:
            raise S3Error(400, "InvalidArgument", f"Only {_ALGORITHM} is supported (x-amz-algorithm).")
        parts = form.field("x-amz-credential").split("/")
        if len(parts) != 5 or parts[3:] != ["s3", "aws4_request"]:
            raise S3Error(400, "InvalidArgument", "Invalid x-amz-credential: <key>/<date>/<region>/s3/aws4_request.")
        access_key, date, region = parts[:3]
        secret = self.credentials.get(access_key)
        if secret is None:
            raise _unknown_key()
        expected = hmac.new(_signing_key(secret, date, region), form.field("policy").encode(), hashlib.sha256)
        if not hmac.compare_digest(expected.hexdigest(), form.field("x-amz-signature").lower()):
            raise S3Error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
            )

    def _check_expiry(self, policy: dict[str, Any]) -> None:
        try:
            expiration = datetime.fromisoformat(str(policy["expiration"]).replace("Z", "+00:00"))
        except (KeyError, ValueError) as exc:
            raise S3Error(400, "InvalidPolicyDocument", "Invalid Policy: Invalid 'expiration' value.") from exc
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=UTC)
        if self.clock() >= expiration:
            raise _denied("Invalid according to Policy: Policy expired.")


def _exempt(name: str) -> bool:
    return name in _EXEMPT or name.startswith("x-ignore-")


def _signing_key(secret: str, date: str, region: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _policy(encoded: str) -> dict[str, Any]:
    try:
        policy = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise S3Error(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.") from exc
    if not isinstance(policy, dict):
        raise S3Error(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.")
    return policy


def _check_condition(form: PostForm, condition: Any) -> str | None:
    """Raise S3's error when ``condition`` fails; return the field it names (None: the size range)."""
    if isinstance(condition, dict) and len(condition) == 1:
        [(name, value)] = condition.items()
        return _compare(form, "eq", name, value, condition)
    if isinstance(condition, list) and len(condition) == 3:
        operator, name, value = condition
        if isinstance(operator, str) and operator.lower() == "content-length-range":
            _check_size(form, name, value)
            return None
        if isinstance(operator, str) and isinstance(name, str) and name.startswith("$"):
            return _compare(form, operator.lower(), name[1:], value, condition)
    raise S3Error(400, "InvalidPolicyDocument", f"Invalid Policy: Invalid Condition: {json.dumps(condition)}")


def _compare(form: PostForm, operator: str, name: str, expected: Any, condition: Any) -> str:
    name = name.lower()
    actual = form.bucket if name == "bucket" else form.field(name)
    if name == "key":
        actual = actual.replace("${filename}", form.filename)
    if operator == "eq":
        holds = actual == str(expected)
    elif operator == "starts-with":
        holds = actual.startswith(str(expected))
    else:
        raise S3Error(400, "InvalidPolicyDocument", f"Invalid Policy: Invalid Condition: {json.dumps(condition)}")
    if not holds:
        shown = json.dumps([operator, f"${name}", expected])
        raise _denied(f"Invalid according to Policy: Policy Condition failed: {shown}")
    return name


def _check_size(form: PostForm, low: Any, high: Any) -> None:
    if not isinstance(low, int) or not isinstance(high, int):
        raise S3Error(400, "InvalidPolicyDocument", "Invalid Policy: Invalid content-length-range.")
    size = str(form.file_size)
    if form.file_size > high:
        raise S3Error(
            400,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed size",
            (("ProposedSize", size), ("MaxSizeAllowed", str(high))),
        )
    if form.file_size < low:
        raise S3Error(
            400,
            "EntityTooSmall",
            "Your proposed upload is smaller than the minimum allowed size",
            (("ProposedSize", size), ("MinSizeAllowed", str(low))),
        )


def _is_post_object(environ: dict[str, Any]) -> bool:
    """A POST with a multipart form is S3's POST Object (no other service moto serves takes one)."""
    return environ.get("REQUEST_METHOD") == "POST" and (environ.get("CONTENT_TYPE") or "").lower().startswith(
        "multipart/form-data"
    )


def _read_body(environ: dict[str, Any]) -> bytes:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    return stream.read(int(length)) if length else stream.read()


def _bucket(environ: dict[str, Any]) -> str:
    """Path-style (``/bucket``) or virtual-hosted (``bucket.s3.<region>.amazonaws.com``) addressing."""
    host = (environ.get("HTTP_HOST") or "").split(":", 1)[0]
    if ".s3." in host or host.endswith(".s3.amazonaws.com"):
        return host.split(".s3.", 1)[0]
    return unquote(environ.get("PATH_INFO", "/")).strip("/").split("/", 1)[0]


def _parse_form(environ: dict[str, Any], body: bytes) -> PostForm:
    copy = {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
    _, form, files = parse_form_data(copy, silent=False, max_form_memory_size=None)
    upload = files.get("file")
    if upload is None:
        raise S3Error(400, "InvalidArgument", "POST requires exactly one file upload per request.")
    size = _size(upload.stream)
    fields = {name.lower(): value for name, value in form.items(multi=False)}
    return PostForm(bucket=_bucket(environ), fields=fields, file_size=size, filename=upload.filename or "")


def _size(stream: Any) -> int:
    stream.seek(0, io.SEEK_END)
    return stream.tell()


# --- presigned URLs ------------------------------------------------------------------------------------------
_MAX_EXPIRES = 7 * 24 * 3600  # S3's longest SigV4 presigned URL
_CLOCK_SKEW = timedelta(minutes=15)
_UNRESERVED = "-_.~"


class PresignedUrlCheck:
    """WSGI middleware: a request authenticated by its query string (a SigV4 presigned URL, ``X-Amz-Signature``)
    is checked the way S3 checks it, which moto does not: the signature, recomputed over the request as it came
    (method, raw path, query, signed headers, ``UNSIGNED-PAYLOAD``) with the secret of its access key, then its
    time window (``X-Amz-Date`` + ``X-Amz-Expires``). A link that was tampered with, signed with an unknown key,
    or expired gets S3's 403 XML error; the rest go on to ``app`` unchanged."""

    def __init__(self, app: Any, *, credentials: dict[str, str], clock: Clock | None = None) -> None:
        self.app = app
        self.credentials = credentials  # access key id -> secret access key
        self.clock = clock or (lambda: datetime.now(UTC))

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        query = environ.get("QUERY_STRING", "")
        if "X-Amz-Signature=" not in query:
            return self.app(environ, start_response)
        try:
            self.check(environ, query)
        except S3Error as error:
            return error.response(environ.get("PATH_INFO", "/"))(environ, start_response)
        return self.app(environ, start_response)

    def check(self, environ: dict[str, Any], query: str) -> None:
        params = parse_qsl(query, keep_blank_values=True)
        values = dict(params)
        if values.get("X-Amz-Algorithm") != _ALGORITHM:
            raise _query_error(f'X-Amz-Algorithm only supports "{_ALGORITHM}"')
        parts = values.get("X-Amz-Credential", "").split("/")
        if len(parts) != 5 or parts[3:] != ["s3", "aws4_request"]:
            raise _query_error("Error parsing the X-Amz-Credential parameter; <key>/<date>/<region>/s3/aws4_request")
        access_key, date, region = parts[:3]
        try:
            signed_at = datetime.strptime(values.get("X-Amz-Date", ""), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            expires = int(values.get("X-Amz-Expires", ""))
        except ValueError as exc:
            raise _query_error("X-Amz-Date must be in ISO 8601 basic format; X-Amz-Expires a number") from exc
        if not 0 < expires <= _MAX_EXPIRES:
            raise _query_error(f"X-Amz-Expires must be between 1 and {_MAX_EXPIRES} seconds")
        secret = self.credentials.get(access_key)
        if secret is None:
            raise _unknown_key()
        scope = f"{date}/{region}/s3/aws4_request"
        canonical = _canonical_request(environ, params, values.get("X-Amz-SignedHeaders", ""))
        to_sign = "\n".join([_ALGORITHM, values["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()])
        expected = hmac.new(_signing_key(secret, date, region), to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, values.get("X-Amz-Signature", "").lower()):
            raise S3Error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
            )
        now = self.clock()
        if now + _CLOCK_SKEW < signed_at:
            raise _denied("Request is not valid yet")
        if now > signed_at + timedelta(seconds=expires):
            raise S3Error(
                403,
                "AccessDenied",
                "Request has expired",
                (
                    ("X-Amz-Expires", str(expires)),
                    ("Expires", (signed_at + timedelta(seconds=expires)).strftime("%Y-%m-%dT%H:%M:%SZ")),
                    ("ServerTime", now.strftime("%Y-%m-%dT%H:%M:%SZ")),
                ),
            )


def _query_error(message: str) -> S3Error:
    return S3Error(400, "AuthorizationQueryParametersError", message)


def _canonical_request(environ: dict[str, Any], params: list[tuple[str, str]], signed: str) -> str:
    """SigV4's canonical request of a presigned S3 request: the path as sent (S3 does not encode it again), the
    query without the signature (names and values encoded, sorted), the signed headers, an unsigned payload."""
    path = (environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO") or "/").split("?")[0]
    query = "&".join(
        f"{name}={value}"
        for name, value in sorted(
            (quote(name, safe=_UNRESERVED), quote(value, safe=_UNRESERVED))
            for name, value in params
            if name != "X-Amz-Signature"
        )
    )
    names = [name for name in signed.lower().split(";") if name]
    headers = "".join(f"{name}:{' '.join(_header(environ, name).split())}\n" for name in names)
    return "\n".join([environ.get("REQUEST_METHOD", "GET"), path, query, headers, ";".join(names), "UNSIGNED-PAYLOAD"])


def _header(environ: dict[str, Any], name: str) -> str:
    if name == "content-type":
        return str(environ.get("CONTENT_TYPE", ""))
    return str(environ.get("HTTP_" + name.upper().replace("-", "_"), ""))
