"""Who is calling: what the authorizer put in the request context
(``imagecore.accounts.authorizer.authorizer_context``).

Ownership (tasks, uploads, idempotent replays) is checked against ``owner_id``, derived from the key's hash;
``key_id`` is the key's readable name, for logs. A client token's requests carry its parent key's identity
plus the token's id, expiry and image limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from imagecore.accounts.budgets import Budget, Spender, budget_of
from imagecore.accounts.concurrency import Slot, slots_for
from imagecore.accounts.token_usage import ClientTokenGrant
from imagecore.domain.errors import Forbidden, Unauthorized

# The authorizer context's field names (written by imagecore.accounts.authorizer.authorizer_context).
KEY_ID = "keyId"  # the key's name: for logs
OWNER_ID = "ownerId"  # derived from the key's hash: what ownership is checked against
CREDENTIAL = "credential"  # "key" or "client_token"
TOKEN_ID = "tokenId"  # noqa: S105 - a field name, not a secret
TOKEN_EXPIRES_AT = "tokenExpiresAt"  # noqa: S105 - a field name
TOKEN_MAX_IMAGES = "tokenMaxImages"  # noqa: S105 - a field name
MAX_CONCURRENT = "maxConcurrent"  # the key's image requests in flight at most (absent: no limit)
TOKEN_MAX_CONCURRENT = "tokenMaxConcurrent"  # noqa: S105 - a field name


@dataclass(frozen=True)
class Caller:
    """Who is calling, as the authorizer established it."""

    key_id: str
    owner_id: str
    token: ClientTokenGrant | None = None
    # The key's image and token budgets (a client token spends its parent key's).
    budget: Budget = field(default_factory=Budget)
    max_concurrent: int | None = None  # the key's image requests in flight at most (None: no limit)
    token_max_concurrent: int | None = None  # the client token's own, lower limit

    def slots(self) -> list[Slot]:
        """The concurrency leases an image request of this caller takes."""
        return slots_for(
            self.owner_id, self.max_concurrent, self.token.id if self.token else None, self.token_max_concurrent
        )

    def require_server_key(self) -> None:
        if self.token is not None:
            raise Forbidden("A client token cannot do this: use a server API key.", code="client_token_not_allowed")


def caller_of(event: dict[str, Any], *, now: float | None = None) -> Caller:
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    key_id, owner_id = authorizer.get(KEY_ID), authorizer.get(OWNER_ID)
    if not key_id or not owner_id:
        # Only reachable if a route is deployed without the authorizer: fail closed.
        raise Unauthorized("The request was not authenticated.", code="unauthenticated")
    budget = budget_of(authorizer)
    max_concurrent = _count(authorizer.get(MAX_CONCURRENT))
    if authorizer.get(CREDENTIAL) != "client_token":
        return Caller(key_id=str(key_id), owner_id=str(owner_id), budget=budget, max_concurrent=max_concurrent)
    try:
        max_images = authorizer.get(TOKEN_MAX_IMAGES)
        token = ClientTokenGrant(
            id=str(authorizer[TOKEN_ID]),
            expires_at=int(authorizer[TOKEN_EXPIRES_AT]),
            max_images=int(max_images) if max_images not in (None, "") else None,
        )
    except (KeyError, TypeError, ValueError):
        raise Unauthorized("The request was not authenticated.", code="unauthenticated") from None
    # API Gateway may serve a cached authorization for a while after the token expired: refuse it here.
    if token.expires_at <= (time.time() if now is None else now):
        raise Unauthorized("The client token has expired; ask your backend for a new one.", code="token_expired")
    return Caller(
        key_id=str(key_id),
        owner_id=str(owner_id),
        token=token,
        budget=budget,
        max_concurrent=max_concurrent,
        token_max_concurrent=_count(authorizer.get(TOKEN_MAX_CONCURRENT)),
    )


def _count(value: Any) -> int | None:
    """A limit from the authorizer context (strings there), None when absent or not a positive number."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def spender_of(event: dict[str, Any]) -> Spender:
    """Whose usage and budgets the request counts against: the calling key's owner (a client token spends its
    parent key's), with the budgets the authorizer read from that key's settings."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    return Spender(caller_of(event).owner_id, budget_of(authorizer))
