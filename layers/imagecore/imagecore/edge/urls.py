"""The URLs the API gives for itself (a task's poll URL, the index's links), built from trusted values only."""

from __future__ import annotations

import re
from typing import Any

_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?\Z")
_BASE_PATH = re.compile(r"(?:/[A-Za-z0-9._~-]{1,128}){0,8}\Z")


def api_url(event: dict[str, Any], route_path: str, *, scheme: str = "https") -> str:
    """``route_path`` on the host and base path the caller called (stage or custom-domain mapping).

    Built from trusted values only: the scheme is the deployment's (API Gateway serves only HTTPS; the local
    stack's configuration says http), never ``X-Forwarded-Proto`` as sent; the host is API Gateway's
    ``domainName`` and the base path its ``requestContext.path``, each used only when it is a plain host or
    path. Otherwise the URL is relative to the host the caller used, which is still this API."""
    if scheme not in ("https", "http"):
        raise ValueError(f"unsupported URL scheme {scheme!r}")
    context = event.get("requestContext") or {}
    host = str(context.get("domainName") or "")
    full_path, called = str(context.get("path") or ""), str(event.get("path") or "")
    base = full_path[: -len(called)] if called and full_path.endswith(called) else ""
    if not _BASE_PATH.match(base) or ".." in base:
        base = ""
    path = f"{base}{route_path}"
    return f"{scheme}://{host}{path}" if _HOST.match(host) else path
