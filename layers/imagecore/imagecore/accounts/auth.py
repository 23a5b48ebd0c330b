"""Bearer API keys: stored only as SHA-256 hashes, compared in constant time, identified by a key id that is
safe to log. The key itself is never logged, stored or returned.

A key has two identities. Its ``id`` is the name an operator gave it (``ios-app``): readable, shown in logs,
and free to be given again to another key after a revocation. Its ``owner`` is derived from the key's hash:
what the key creates (tasks, uploads, idempotent replays) belongs to the owner, so a new key under an old name
owns nothing of the old key's, and no operator choice can hand one client's data to another.

A key's settings travel with its hash: the usage plan it is on (``plan``), the value of the API Gateway API key
that puts it on that plan (``usage_key``: API Gateway throttles and counts requests per usage key), and its image
and token ``budgets``."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from imagecore.accounts.budgets import Budget
from imagecore.platform.route_settings import AuthorizerSettings

KEY_PREFIX = "isk-"
LOCAL_USAGE_KEY_PREFIX = "local-usage-"
OWNER_PREFIX = "own_"


@dataclass(frozen=True)
class KeyRecord:
    id: str
    sha256: str
    plan: str | None = None
    usage_key: str | None = None
    budget: Budget = field(default_factory=Budget)
    # Image requests in flight at once (None: the default of its plan; 0: no limit).
    max_concurrent: int | None = None

    @property
    def owner(self) -> str:
        """What this key's creations are filed under: a digest of the key's hash, never reusable."""
        return owner_for_hash(self.sha256)


def parse_local_key(spec: str) -> tuple[str, str | None, Budget, int | None]:
    """One key of the local stack's ``API_KEYS``: ``KEY[@PLAN][:BUDGET=N]...[:concurrent=N]``, e.g.
    ``trial-key@trial:images_per_day=5:concurrent=2`` (the key, the usage plan it is on, its budgets, its own
    limit of image requests in flight)."""
    key, *limits = spec.strip().split(":")
    key, _, plan = key.partition("@")
    budgets: dict[str, str] = {}
    concurrent = None
    for limit in limits:
        name, equals, value = limit.partition("=")
        if not equals or not value.strip().isdigit():
            raise ValueError(f"API_KEYS: '{limit}' is not BUDGET=N (e.g. images_per_day=5)")
        if name.strip() in ("concurrent", "max_concurrent"):
            concurrent = int(value)
            continue
        budgets[name.strip()] = value.strip()
    return key.strip(), plan.strip() or None, Budget.from_mapping(budgets), concurrent


def _limit(value: Any) -> int | None:
    if value in (None, ""):
        return None
    number = int(value)
    if number < 0:
        raise ValueError("max_concurrent must be >= 0")
    return number


def local_usage_key(digest: str) -> str:
    """The usage key of a local key with a plan: the local gateway's stand-in for its API Gateway API key."""
    return LOCAL_USAGE_KEY_PREFIX + digest[:24]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id_for_hash(digest: str) -> str:
    return f"key_{digest[:12]}"


def owner_for_hash(digest: str) -> str:
    """The owner id of the key with SHA-256 ``digest``: 128 bits of a second, domain-separated hash, so it
    names the key without revealing its stored hash."""
    return OWNER_PREFIX + hashlib.sha256(f"image-service owner\n{digest.lower()}".encode()).hexdigest()[:32]


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def bearer_token(headers: Mapping[str, str] | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (header name and scheme case-insensitive)."""
    for name, value in (headers or {}).items():
        if name.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
    return None


class Keyring:
    def __init__(self, records: Iterable[KeyRecord]) -> None:
        self._records = tuple(records)
        self._by_owner = {record.owner: record for record in self._records}

    @classmethod
    def from_plain_keys(cls, keys: Iterable[str]) -> Keyring:
        """The local stack's keys, each ``KEY[@PLAN][:BUDGET=N]...`` (see ``parse_local_key``)."""
        records = []
        for spec in keys:
            if not spec.strip():
                continue
            key, plan, budget, concurrent = parse_local_key(spec)
            digest = hash_key(key)
            usage_key = local_usage_key(digest) if plan else None
            records.append(KeyRecord(key_id_for_hash(digest), digest, plan, usage_key, budget, concurrent))
        return cls(records)

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Keyring:
        """``{"keys": [{"id": "ios-app", "sha256": "<hex>", "plan": "standard", "usage_key": "<API Gateway API key
        value>", "budgets": {"images_per_day": 100, "max_concurrent": 4}}]}``, the secret's format (plan,
        usage_key and budgets optional; ``max_concurrent`` is the key's own limit of image requests in flight)."""
        records = []
        for entry in document.get("keys", []):
            digest = str(entry["sha256"]).lower()
            budgets = dict(entry.get("budgets") or {})
            concurrent = budgets.pop("max_concurrent", None)
            records.append(
                KeyRecord(
                    str(entry.get("id") or key_id_for_hash(digest)),
                    digest,
                    plan=entry.get("plan") or None,
                    usage_key=entry.get("usage_key") or None,
                    budget=Budget.from_mapping(budgets),
                    max_concurrent=_limit(concurrent),
                )
            )
        return cls(records)

    @property
    def records(self) -> tuple[KeyRecord, ...]:
        return self._records

    def __len__(self) -> int:
        return len(self._records)

    def identify(self, key: str | None) -> KeyRecord | None:
        if not key:
            return None
        digest = hash_key(key)
        found = None
        for record in self._records:  # no early exit: the time taken does not depend on which key matched
            if hmac.compare_digest(record.sha256, digest):
                found = record
        return found

    def owned_by(self, owner: str) -> KeyRecord | None:
        """The key behind an owner id while it is still in the keyring (a client token's parent)."""
        return self._by_owner.get(owner)


def keyring_loader(settings: AuthorizerSettings) -> Callable[[], Keyring]:
    """Where the keys come from: a Secrets Manager document (cached by Powertools) in AWS, API_KEYS locally."""
    if settings.api_keys is not None:
        ring = Keyring.from_plain_keys(settings.api_keys.get_secret_value().split(","))
        return lambda: ring
    secret_id = settings.api_keys_secret_id
    assert secret_id is not None
    max_age = settings.keys_cache_seconds

    def load() -> Keyring:
        from aws_lambda_powertools.utilities import parameters

        # The version labelled AWSCURRENT, named explicitly: scripts/api_key.py moves that label to publish a change.
        document = parameters.get_secret(secret_id, max_age=max_age, VersionStage="AWSCURRENT")
        return Keyring.from_document(json.loads(str(document)))

    return load
