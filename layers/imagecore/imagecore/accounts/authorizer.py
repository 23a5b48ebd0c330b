"""What the REQUEST authorizer decides, without AWS types: who a bearer credential speaks for (``authorize``),
which routes it opens (``Grant.routes``) and what the functions are told about it (``authorizer_context``,
read back by ``imagecore.accounts.caller``).

A server key opens every route. A client token opens the routes of its scope and speaks for its parent key:
it is refused once the parent is no longer in the keyring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from imagecore.accounts.auth import KeyRecord, Keyring
from imagecore.accounts.budgets import Budget, budget_context
from imagecore.accounts.caller import (
    CREDENTIAL,
    KEY_ID,
    MAX_CONCURRENT,
    OWNER_ID,
    TOKEN_EXPIRES_AT,
    TOKEN_ID,
    TOKEN_MAX_CONCURRENT,
    TOKEN_MAX_IMAGES,
)
from imagecore.accounts.client_tokens import ClientToken, TokenRejected, looks_like_client_token, read

Reason = Literal["missing", "unknown", "token_invalid", "token_expired", "parent_revoked", "tokens_disabled"]

ContextValue = str | int | bool


class Refused(Exception):
    """The credential is not accepted; ``reason`` is for the log, the client only sees a 401."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason


@dataclass(frozen=True)
class Grant:
    """A credential the authorizer accepted: the server key it is or speaks for, and the client token if any."""

    key: KeyRecord
    token: ClientToken | None = None

    def routes(self) -> list[tuple[str, str]] | None:
        """(method, resource) pairs the credential may call; None for every route."""
        return None if self.token is None else self.token.routes()


def authorize(credential: str | None, keyring: Keyring, signing_key: Callable[[], str] | None, *, now: int) -> Grant:
    if not credential:
        raise Refused("missing")
    if not looks_like_client_token(credential):
        record = keyring.identify(credential)
        if record is None:
            raise Refused("unknown")
        return Grant(record)
    if signing_key is None:
        raise Refused("tokens_disabled")
    try:
        token = read(credential, signing_key=signing_key(), now=now)
    except TokenRejected as rejected:
        raise Refused("token_expired" if rejected.reason == "expired" else "token_invalid") from None
    parent = keyring.owned_by(token.owner)
    if parent is None:
        raise Refused("parent_revoked")
    return Grant(parent, token)


@dataclass(frozen=True)
class KeyDefaults:
    """What a key gets when its own settings say nothing: image requests in flight by usage plan (``""``: a key
    on no plan; 0 or absent: no limit), and a daily image budget (0: none)."""

    max_concurrent: Mapping[str, int] = field(default_factory=dict)
    images_per_day: int = 0

    @classmethod
    def parse(cls, plan_limits: str, images_per_day: int = 0) -> KeyDefaults:
        """``"free=1 trial=2 standard=4 none=2"`` (``none``: keys on no plan)."""
        limits = {}
        for pair in plan_limits.replace(",", " ").split():
            name, equals, value = pair.partition("=")
            if not equals or not value.isdigit():
                raise ValueError(f"'{pair}' is not PLAN=N")
            limits["" if name == "none" else name] = int(value)
        return cls(limits, images_per_day)

    def key_limit(self, key: KeyRecord) -> int:
        if key.max_concurrent is not None:
            return key.max_concurrent
        return self.max_concurrent.get(key.plan or "", 0)

    def budget(self, key: KeyRecord) -> Budget:
        if self.images_per_day and key.budget.images_per_day is None:
            return replace(key.budget, images_per_day=self.images_per_day)
        return key.budget


def authorizer_context(grant: Grant, defaults: KeyDefaults | None = None) -> dict[str, ContextValue]:
    """What API Gateway hands the functions in ``requestContext.authorizer`` (strings, numbers, booleans only).
    ``defaults`` fill in what the key's settings leave out (its concurrency limit, a daily image budget)."""
    defaults = defaults or KeyDefaults()
    context: dict[str, ContextValue] = {
        KEY_ID: grant.key.id,
        OWNER_ID: grant.key.owner,
        CREDENTIAL: "key" if grant.token is None else "client_token",
        # A client token spends within its parent key's plan and budgets.
        **budget_context(defaults.budget(grant.key)),
    }
    key_limit = defaults.key_limit(grant.key)
    if key_limit:
        context[MAX_CONCURRENT] = key_limit
    if grant.token is not None:
        context[TOKEN_ID] = grant.token.id
        context[TOKEN_EXPIRES_AT] = grant.token.expires_at
        if grant.token.max_images is not None:
            context[TOKEN_MAX_IMAGES] = grant.token.max_images
        if grant.token.max_concurrent is not None:
            # Never more than its key's own limit (which applies to it too).
            limit = grant.token.max_concurrent
            context[TOKEN_MAX_CONCURRENT] = min(limit, key_limit) if key_limit else limit
    return context
