"""Signing and sending one webhook delivery, as the Standard Webhooks specification says (standardwebhooks.com).

Headers: ``webhook-id`` (the same on every attempt of one delivery, so a receiver can deduplicate),
``webhook-timestamp`` (integer seconds, the attempt's own: receivers refuse one more than 5 minutes off) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` under each of the caller's
secrets, space-separated (two during a rotation's grace period). A secret is ``whsec_`` + base64 of its key.

The POST goes to the address the URL check chose (``WebhookTarget``), with the name in the Host header and in
TLS (SNI and certificate verification both use the name); redirects are not followed and the environment's
proxies are not used; the answer's body is never read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from imagecore.accounts.webhook_secrets import SECRET_PREFIX
from imagecore.jobs.webhook_urls import WebhookTarget
from imagecore.platform.tls import tls_context

TIMEOUT_SECONDS = 10.0
USER_AGENT = "image-service-webhooks/1"


def signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(secret, msg_id, timestamp, body) for secret in secrets),
    }


@dataclass(frozen=True)
class Answer:
    """What one attempt got: an HTTP status, or the error that kept it from getting one."""

    status: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def shown(self) -> int | str:
        """``last_status`` on the task: the HTTP status, or the error's name."""
        return self.status if self.status is not None else str(self.error)


class WebhookSender:
    """POSTs one signed body; ``transport`` is for tests (an ``httpx.MockTransport``)."""

    def __init__(self, *, timeout: float = TIMEOUT_SECONDS, transport: httpx.BaseTransport | None = None) -> None:
        self._timeout = timeout
        self._transport = transport

    def post(self, target: WebhookTarget, body: str, headers: dict[str, str]) -> Answer:
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        with httpx.Client(
            timeout=self._timeout,
            verify=tls_context(),
            follow_redirects=False,
            trust_env=False,
            transport=self._transport,
        ) as client:
            request = client.build_request(
                "POST",
                target.connect_url,
                content=body.encode(),
                headers={
                    **headers,
                    "Host": target.host_header,
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                },
                extensions=extensions,
            )
            try:
                response = client.send(request, stream=True)
            except httpx.TimeoutException:
                return Answer(error="timeout")
            except httpx.ConnectError as exc:
                return Answer(error="tls_error" if _caused_by_tls(exc) else "connect_error")
            except httpx.HTTPError as exc:
                return Answer(error=type(exc).__name__)
            response.close()
            return Answer(status=response.status_code)


def _caused_by_tls(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
