"""What the REQUEST authorizer decides, without AWS types: who a bearer credential speaks for (``authorize``),
which routes it opens (``Grant.routes``) and what the functions are told about it (``authorizer_context``,
read back by ``imagecore.accounts.caller``).

A server key opens every route. A client token opens the routes of its scope and speaks for its parent key:
it is refused once the parent is no longer in the keyring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from imagecore.accounts.auth import KeyRecord, Keyring
from imagecore.accounts.budgets import budget_context
from imagecore.accounts.caller import CREDENTIAL, KEY_ID, OWNER_ID, TOKEN_EXPIRES_AT, TOKEN_ID, TOKEN_MAX_IMAGES
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


def authorizer_context(grant: Grant) -> dict[str, ContextValue]:
    """What API Gateway hands the functions in ``requestContext.authorizer`` (strings, numbers, booleans only)."""
    context: dict[str, ContextValue] = {
        KEY_ID: grant.key.id,
        OWNER_ID: grant.key.owner,
        CREDENTIAL: "key" if grant.token is None else "client_token",
        # A client token spends within its parent key's plan and budgets.
        **budget_context(grant.key.budget),
    }
    if grant.token is not None:
        context[TOKEN_ID] = grant.token.id
        context[TOKEN_EXPIRES_AT] = grant.token.expires_at
        if grant.token.max_images is not None:
            context[TOKEN_MAX_IMAGES] = grant.token.max_images
    return context
