"""Webhooks without AWS: signatures the reference Standard Webhooks library accepts, the URL checks against
server-side request forgery (IPv4 and IPv6, the metadata address, DNS rebinding), the request each attempt
sends (to the checked address, the name in Host and TLS, no redirect followed), the stream filter and the
schedule."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from imagecore.accounts.webhook_secrets import new_secret
from imagecore.domain.errors import InvalidRequest
from imagecore.domain.models import GenerationRequest
from imagecore.jobs.webhook_outbox import ended_task_id, parse_schedule
from imagecore.jobs.webhook_sender import WebhookSender, signature, signed_headers
from imagecore.jobs.webhook_urls import RefusedUrl, UrlPolicy, is_public

# --- signing ----------------------------------------------------------------------------------------------------


def test_a_new_secret_is_whsec_and_32_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert new_secret() != secret


def test_the_reference_library_verifies_a_signed_delivery() -> None:
    secret, body, now = (
        new_secret(),
        json.dumps({"type": "image.task.completed", "data": {"id": "task_1"}}),
        int(time.time()),
    )
    headers = signed_headers([secret], "msg_task_1", now, body)

    assert Webhook(secret).verify(body, headers) == json.loads(body)
    assert headers["webhook-id"] == "msg_task_1"
    assert headers["webhook-timestamp"] == str(now)
    # The library's own signature of the same message is ours, byte for byte.
    from datetime import UTC, datetime

    assert Webhook(secret).sign("msg_task_1", datetime.fromtimestamp(now, UTC), body) == signature(
        secret, "msg_task_1", now, body
    )


def test_an_altered_body_another_secret_or_an_old_timestamp_is_refused() -> None:
    secret, body, now = new_secret(), '{"type":"image.task.failed"}', int(time.time())
    headers = signed_headers([secret], "msg_task_2", now, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("failed", "completed"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    stale = signed_headers([secret], "msg_task_2", now - 600, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, stale)


def test_during_a_rotation_both_secrets_sign_and_each_verifies() -> None:
    current, previous, body, now = new_secret(), new_secret(), '{"a":1}', int(time.time())
    headers = signed_headers([current, previous], "msg_task_3", now, body)

    assert len(headers["webhook-signature"].split(" ")) == 2
    assert all(part.startswith("v1,") for part in headers["webhook-signature"].split(" "))
    assert Webhook(current).verify(body, headers) == {"a": 1}
    assert Webhook(previous).verify(body, headers) == {"a": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


# --- URL checks ------------------------------------------------------------------------------------------------


def resolving(*addresses: str):
    def resolver(host: str, port: int) -> Sequence[str]:
        return list(addresses)

    return resolver


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",  # the instance metadata service
        "169.254.170.2",  # the ECS/Lambda container credentials endpoint
        "100.64.0.1",  # shared address space (carrier-grade NAT)
        "0.0.0.0",  # noqa: S104 - an address refused, not bound
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.10",  # documentation
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2001:db8::1",  # documentation
    ],
)
def test_a_host_that_resolves_to_a_non_public_address_is_refused(address: str) -> None:
    with pytest.raises(RefusedUrl, match="not a public address"):
        UrlPolicy(resolver=resolving(address)).check("https://hooks.example.com/in")


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e"])
def test_a_host_that_resolves_to_public_addresses_is_taken(address: str) -> None:
    target = UrlPolicy(resolver=resolving(address)).check("https://hooks.example.com:8443/in?x=1")
    assert (target.host, target.port, target.path, str(target.address)) == (
        "hooks.example.com",
        8443,
        "/in?x=1",
        address,
    )


def test_an_ipv4_address_is_called_when_the_host_has_both() -> None:
    target = UrlPolicy(resolver=resolving("2606:4700:4700::1111", "1.1.1.1")).check("https://hooks.example.com/")
    assert str(target.address) == "1.1.1.1"


def test_one_private_address_among_public_ones_refuses_the_host() -> None:
    with pytest.raises(RefusedUrl):
        UrlPolicy(resolver=resolving("93.184.215.14", "10.0.0.7")).check("https://hooks.example.com/")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.com/", "https"),
        ("ftp://hooks.example.com/", "absolute https"),
        ("/relative/path", "absolute https"),
        ("hooks.example.com/in", "absolute https"),
        ("https://user:pass@hooks.example.com/", "user name"),
        ("https://hooks.example.com/a b", "spaces"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("https://" + "a" * 2040 + ".com/", "2048"),
        ("https:///nohost", "absolute https"),
        (12, "absolute https"),
    ],
)
def test_a_url_that_is_not_an_absolute_https_url_is_refused(url: object, reason: str) -> None:
    with pytest.raises(RefusedUrl, match=reason):
        UrlPolicy(resolver=resolving("93.184.215.14")).check(url)


def test_a_host_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(RefusedUrl, match="does not resolve"):
        UrlPolicy(resolver=resolving()).check("https://nowhere.invalid/")


def test_a_refusal_is_a_400_on_webhook_url() -> None:
    with pytest.raises(RefusedUrl) as refused:
        UrlPolicy(resolver=resolving("169.254.169.254")).check("https://metadata.example.com/")
    error = refused.value.as_invalid_request()
    assert isinstance(error, InvalidRequest)
    assert (error.status, error.param, error.code) == (400, "webhook_url", "invalid_webhook_url")


def test_the_local_allowance_is_http_to_loopback_and_nothing_else() -> None:
    local = UrlPolicy(allow_loopback=True, resolver=resolving("127.0.0.1"))
    assert str(local.check("http://localhost:8080/hook").address) == "127.0.0.1"
    with pytest.raises(RefusedUrl, match="not a public address"):
        local.check("https://localhost/hook")  # https keeps its rule: public addresses only
    assert str(UrlPolicy(allow_loopback=True, resolver=resolving("::1")).check("http://[::1]:9/x").address) == "::1"
    # Nothing else changes: http to anything but loopback, private addresses, the metadata address.
    for address in ("93.184.215.14", "10.0.0.1", "169.254.169.254"):
        with pytest.raises(RefusedUrl):
            UrlPolicy(allow_loopback=True, resolver=resolving(address)).check("http://hooks.example.com/")
    with pytest.raises(RefusedUrl):
        UrlPolicy(allow_loopback=True, resolver=resolving("127.0.0.1", "10.0.0.1")).check("http://mixed.example/")
    # Off (as in AWS): loopback is refused like any other non-public address.
    with pytest.raises(RefusedUrl):
        UrlPolicy(resolver=resolving("127.0.0.1")).check("https://localhost/hook")


def test_ip_literals_are_checked_as_their_address() -> None:
    policy = UrlPolicy()  # the real resolver: an IP literal resolves to itself, without DNS
    with pytest.raises(RefusedUrl):
        policy.check("https://169.254.169.254/latest/meta-data/")
    with pytest.raises(RefusedUrl):
        policy.check("https://[::ffff:a9fe:a9fe]/")
    with pytest.raises(RefusedUrl):
        policy.check("https://2130706433/")  # 127.0.0.1 as one number
    assert str(policy.check("https://1.1.1.1/hook").address) == "1.1.1.1"
    assert is_public(__import__("ipaddress").ip_address("8.8.8.8"))


# --- the request an attempt sends ---------------------------------------------------------------------------------


def test_the_attempt_connects_to_the_checked_address_not_to_what_the_name_resolves_to_later() -> None:
    answers = iter([["93.184.215.14"], ["127.0.0.1"]])  # a rebinding name: public at the check, loopback after
    policy = UrlPolicy(resolver=lambda host, port: next(answers))
    target = policy.check("https://hooks.example.com/in?x=1")
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    got = WebhookSender(transport=httpx.MockTransport(answer)).post(target, '{"a":1}', {"webhook-id": "msg_1"})

    assert got.delivered and got.shown == 204
    (request,) = seen
    assert request.url.host == "93.184.215.14" and request.url.port is None  # 443, the scheme's own
    assert next(answers) == ["127.0.0.1"]  # the name was not looked up again to connect
    assert request.url.raw_path == b"/in?x=1"
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"  # TLS names (and verifies) the host
    assert request.headers["webhook-id"] == "msg_1"
    assert request.headers["content-type"] == "application/json"
    assert request.content == b'{"a":1}'


def test_an_ipv6_address_and_a_port_are_spelled_in_the_connection_and_the_host_header() -> None:
    target = UrlPolicy(resolver=resolving("2606:4700:4700::1111")).check("https://hooks.example.com:8443/x")
    assert target.connect_url == "https://[2606:4700:4700::1111]:8443/x"
    assert target.host_header == "hooks.example.com:8443"


def test_a_redirect_is_not_followed_and_is_not_a_delivery() -> None:
    target = UrlPolicy(resolver=resolving("93.184.215.14")).check("https://hooks.example.com/in")
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})

    got = WebhookSender(transport=httpx.MockTransport(answer)).post(target, "{}", {})
    assert (got.delivered, got.shown, len(calls)) == (False, 302, 1)


def test_a_timeout_and_a_refused_connection_are_errors_not_statuses() -> None:
    target = UrlPolicy(resolver=resolving("93.184.215.14")).check("https://hooks.example.com/in")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert WebhookSender(transport=httpx.MockTransport(slow)).post(target, "{}", {}).shown == "timeout"
    assert WebhookSender(transport=httpx.MockTransport(refused)).post(target, "{}", {}).shown == "connect_error"


# --- what becomes a delivery, and when --------------------------------------------------------------------------


def stream_record(old: str | None, new: str, *, webhook: bool = True, event: str = "MODIFY") -> dict:
    image = {"id": {"S": "task_abc"}, "status": {"S": new}}
    if webhook:
        image["webhook_url"] = {"S": "https://hooks.example.com/"}
    change = {"NewImage": image}
    if old is not None:
        change["OldImage"] = {**image, "status": {"S": old}}
    return {"eventName": event, "eventSource": "aws:dynamodb", "dynamodb": change}


def test_only_the_change_that_ends_a_task_with_a_webhook_is_a_delivery() -> None:
    assert ended_task_id(stream_record("processing", "completed")) == "task_abc"
    assert ended_task_id(stream_record("processing", "failed")) == "task_abc"
    assert ended_task_id(stream_record("processing", "processing")) is None  # a claim, a preview
    assert ended_task_id(stream_record("completed", "completed")) is None  # the delivery's own state
    assert ended_task_id(stream_record("processing", "completed", webhook=False)) is None
    assert ended_task_id(stream_record(None, "processing", event="INSERT")) is None


def test_the_schedule_is_the_specifications_by_default() -> None:
    from imagecore.platform.route_settings import WebhookSettings

    specification = (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
    assert parse_schedule(WebhookSettings.model_fields["webhook_retry_schedule"].default) == specification
    assert parse_schedule("0,1,1,2") == (0, 1, 1, 2)
    with pytest.raises(ValueError):
        parse_schedule("")


def test_a_synchronous_request_refuses_a_webhook_and_the_upstream_never_sees_one() -> None:
    request = GenerationRequest.model_validate({"prompt": "a cat", "webhook_url": "https://hooks.example.com/"})
    assert "webhook_url" not in request.upstream_body()
    with pytest.raises(InvalidRequest) as refused:
        request.check_synchronous()
    assert refused.value.param == "webhook_url"
