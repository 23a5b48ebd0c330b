"""Who is calling: the API key id the authorizer put in the request context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imagecore.errors import Unauthorized


@dataclass(frozen=True)
class Caller:
    """Who is calling, as the authorizer established it."""

    key_id: str


def caller_of(event: dict[str, Any]) -> Caller:
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    key_id = authorizer.get("keyId")
    if not key_id:
        # Only reachable if a route is deployed without the authorizer: fail closed.
        raise Unauthorized("The request was not authenticated.", code="unauthenticated")
    return Caller(key_id=str(key_id))
