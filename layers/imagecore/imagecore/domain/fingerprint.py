"""A stable fingerprint of a request (its digest), for idempotency records and job identities."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


def digest(payload: Any) -> str:
    """A stable fingerprint of a request: the same content gives the same digest (multipart boundaries and
    JSON key order do not matter, because callers pass the parsed request)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()
