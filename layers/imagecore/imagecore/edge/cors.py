"""Cross-origin calls from web pages: which origins a deployment allows, and the headers that tell a browser so.

Every HTTP edge answers from here (the Powertools resolver, the streamed image routes, the preflight route), so
a page sees the same rules on every route. The allowed origins are ``CORS_ALLOW_ORIGINS``: a comma list of
origins (``https://app.example.com``), or ``*`` for any. The API takes a bearer key, never a cookie, so
``Access-Control-Allow-Credentials`` is never sent and ``*`` lets no page act with a user's ambient rights.

An allowed origin gets ``Access-Control-Allow-Origin`` (``*`` when any is allowed, else the origin itself with
``Vary: Origin``) and the headers a page may read (``Location``, ``Retry-After``, the request id); any other
origin gets no CORS header, so the browser keeps the answer from the page.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

# X-Image-Result: url asks POST /v1/responses for links only (result: null).
ALLOW_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "X-Image-Result")
EXPOSE_HEADERS = ("Location", "Retry-After", "x-amzn-RequestId")
ALLOW_METHODS = ("GET", "POST", "OPTIONS")
# How long a browser may keep a preflight's answer (Chromium caps it at two hours).
MAX_AGE_SECONDS = 600
ENVIRONMENT_VARIABLE = "CORS_ALLOW_ORIGINS"


@dataclass(frozen=True)
class CorsPolicy:
    """The origins allowed to call the API (``any_origin``: every one)."""

    origins: frozenset[str] = frozenset()
    any_origin: bool = False

    @classmethod
    def parse(cls, text: str | None) -> CorsPolicy:
        """``*`` or a comma list of origins; blanks are ignored, an empty text allows no origin."""
        items = [item.strip().rstrip("/") for item in (text or "").split(",") if item.strip()]
        return cls(origins=frozenset(i for i in items if i != "*"), any_origin="*" in items)

    def allows(self, origin: str | None) -> bool:
        return bool(origin) and (self.any_origin or origin in self.origins)

    def headers(self, origin: str | None) -> dict[str, str]:
        """The CORS headers of an actual answer to a request from ``origin`` (none for a refused origin)."""
        if not self.allows(origin):
            return {} if self.any_origin or not self.origins else {"Vary": "Origin"}
        assert origin is not None
        if self.any_origin:
            return {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": ", ".join(EXPOSE_HEADERS)}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": ", ".join(EXPOSE_HEADERS),
            "Vary": "Origin",
        }

    def preflight(self, origin: str | None, method: str | None) -> dict[str, str]:
        """The headers of the answer to an ``OPTIONS`` preflight: the actual request's headers plus what it may
        send. A refused origin, or a method the API does not take, gets none (the browser then stops)."""
        if not self.allows(origin) or (method or "").upper() not in ALLOW_METHODS:
            return self.headers(origin)
        return {
            **self.headers(origin),
            "Access-Control-Allow-Methods": ", ".join(ALLOW_METHODS),
            "Access-Control-Allow-Headers": ", ".join(ALLOW_HEADERS),
            "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
        }


def configured_policy(environ: Mapping[str, str] | None = None) -> CorsPolicy:
    """The deployment's policy, from ``CORS_ALLOW_ORIGINS`` (unset: no origin is allowed)."""
    return _parsed((os.environ if environ is None else environ).get(ENVIRONMENT_VARIABLE) or "")


@lru_cache(maxsize=8)
def _parsed(text: str) -> CorsPolicy:
    return CorsPolicy.parse(text)


def origin_of(headers: Mapping[str, str] | None) -> str | None:
    """The ``Origin`` request header, whatever its case."""
    for name, value in (headers or {}).items():
        if name.lower() == "origin":
            return value
    return None


def with_cors(response_headers: dict[str, list[str]], request_headers: Mapping[str, str] | None) -> None:
    """Add the CORS headers for the request's origin to a proxy result's ``multiValueHeaders`` (in place)."""
    for name, value in configured_policy().headers(origin_of(request_headers)).items():
        if name == "Vary":
            present = [v for values in _named(response_headers, "Vary") for v in values]
            if "Origin" not in ", ".join(present):
                response_headers.setdefault("Vary", []).append(value)
            continue
        response_headers[name] = [value]


def _named(headers: dict[str, list[str]], name: str) -> list[list[str]]:
    return [values for key, values in headers.items() if key.lower() == name.lower()]
