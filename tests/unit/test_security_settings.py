"""Settings that keep secrets secret: the upstream only over TLS (the simulator by an explicit local
allowance), presigned URLs an hour at most, and the prompt digest keyed."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from pydantic import ValidationError

from imagecore.platform import observability
from imagecore.platform.observability import RequestRecord, configure_prompt_digest, prompt_digest
from imagecore.platform.route_settings import TaskReadSettings
from imagecore.platform.settings import MAX_PRESIGN_EXPIRY_SECONDS, GenerationSettings, prompt_digest_key_reader

PROMPT = "a lighthouse in a storm"


@pytest.fixture(autouse=True)
def _process_digest_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever key a test configures, the process's own is back afterwards."""
    monkeypatch.setattr(observability, "_digest_key", observability._digest_key)
    for name in (
        "ALLOW_HTTP_UPSTREAM",
        "UPSTREAM_API_KEY",
        "UPSTREAM_API_KEY_SECRET_ID",
        "PROMPT_DIGEST_KEY",
        "PROMPT_DIGEST_KEY_SECRET_ID",
        "PRESIGN_EXPIRY_SECONDS",
    ):  # only what a test passes counts
        monkeypatch.delenv(name, raising=False)


def settings(**fields: Any) -> GenerationSettings:
    base: dict[str, Any] = {"images_bucket": "bucket", "upstream_base_url": "https://sub2api.example.com/v1"}
    return GenerationSettings(**{**base, **fields})


def test_an_https_upstream_is_taken_with_either_key_source() -> None:
    assert settings(upstream_api_key_secret_id="arn:secret").upstream_url == "https://sub2api.example.com/v1"
    assert settings(upstream_api_key="k").upstream_url == "https://sub2api.example.com/v1"


def test_an_http_upstream_is_refused() -> None:
    with pytest.raises(ValidationError, match="must be https"):
        settings(upstream_base_url="http://sub2api.example.com/v1", upstream_api_key_secret_id="arn:secret")


def test_an_http_upstream_is_allowed_only_locally_and_only_when_asked() -> None:
    local = settings(upstream_base_url="http://127.0.0.1:8001/v1", upstream_api_key="k", allow_http_upstream=True)
    assert local.upstream_url == "http://127.0.0.1:8001/v1"
    with pytest.raises(ValidationError, match="must be https"):
        settings(upstream_base_url="http://127.0.0.1:8001/v1", upstream_api_key="k")
    with pytest.raises(ValidationError, match="local stack only"):  # the key from Secrets Manager: that is AWS
        settings(
            upstream_base_url="http://sub2api.example.com/v1",
            upstream_api_key_secret_id="arn:secret",
            allow_http_upstream=True,
        )


@pytest.mark.parametrize("model", [GenerationSettings, TaskReadSettings])
def test_presigned_urls_live_an_hour_at_most(model: type) -> None:
    fields: dict[str, Any] = {"images_bucket": "bucket", "tasks_table": "tasks", "upstream_api_key": "k"}
    fields["upstream_base_url"] = "https://sub2api.example.com/v1"
    assert model(**fields, presign_expiry_seconds=MAX_PRESIGN_EXPIRY_SECONDS).presign_expiry_seconds == 3600
    with pytest.raises(ValidationError):
        model(**fields, presign_expiry_seconds=MAX_PRESIGN_EXPIRY_SECONDS + 1)


def test_the_prompt_digest_is_an_hmac_under_the_configured_key() -> None:
    reader = prompt_digest_key_reader(settings(upstream_api_key="k", prompt_digest_key="digest-key-1"))
    assert reader is not None
    configure_prompt_digest(reader)
    record = RequestRecord(operation="generations")

    record.describe_prompt(PROMPT, include_text=False)

    expected = hmac.new(b"digest-key-1", PROMPT.encode(), hashlib.sha256).hexdigest()[:16]
    assert record.prompt_hmac == expected
    assert record.prompt_hmac != hashlib.sha256(PROMPT.encode()).hexdigest()[:16]
    assert record.prompt is None and record.prompt_chars == len(PROMPT)
    configure_prompt_digest(lambda: b"digest-key-2")
    assert prompt_digest(PROMPT) != expected  # another key, another digest: a guess cannot be checked without it


def test_an_unreadable_digest_key_drops_the_digest_not_the_request() -> None:
    def down() -> bytes:
        raise ConnectionError("secrets manager unreachable")

    configure_prompt_digest(down)
    record = RequestRecord(operation="generations")
    record.describe_prompt(PROMPT, include_text=False)
    assert record.prompt_hmac is None and record.prompt_chars == len(PROMPT)


def test_without_a_configured_key_a_process_key_is_kept() -> None:
    assert prompt_digest_key_reader(settings(upstream_api_key="k")) is None
