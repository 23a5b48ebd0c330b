"""Client tokens: short-lived, limited credentials a backend mints with its server key and hands to a browser or
a phone, so no long-lived key ever leaves the backend.

A token is a JWT signed with HS256 (PyJWT) under a key kept in Secrets Manager. It names its parent by owner id
(``sub``, see ``imagecore.accounts.auth``), so what it creates belongs to the parent and the backend can read it; it
lives at most an hour; it calls only the routes of its ``scope``; it may carry ``max_images``, counted in
DynamoDB against its id (``imagecore.accounts.token_usage``). Nothing else is stored per token: the authorizer checks
the signature, the expiry and that the parent key is still in the keyring, so revoking the key revokes its
tokens.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from imagecore.domain.route_models import TOKEN_DEFAULT_MAX_IMAGES, TOKEN_MAX_CONCURRENT, TOKEN_MAX_IMAGES
from imagecore.domain.route_models import ClientTokenScope as Scope
from imagecore.platform.route_settings import SigningKeySettings

DEFAULT_SCOPE: tuple[Scope, ...] = ("generations", "edits", "uploads", "tasks", "responses")

# The API routes (method, resource path as API Gateway policies name it) each scope opens. Routes not listed
# here, POST /v1/client_tokens first of all, are never open to a client token.
SCOPE_ROUTES: dict[Scope, tuple[tuple[str, str], ...]] = {
    "generations": (("POST", "/v1/images/generations"), ("POST", "/v1/images/generations/async")),
    "edits": (("POST", "/v1/images/edits"), ("POST", "/v1/images/edits/async")),
    "uploads": (("POST", "/v1/uploads"),),
    "tasks": (("GET", "/v1/images/tasks/*"),),
    "responses": (("POST", "/v1/responses"),),
}
# Open to every client token whatever its scope: what the service accepts is no secret, and SDKs list models first.
EVERY_TOKEN_ROUTES: tuple[tuple[str, str], ...] = (("GET", "/v1/models"), ("GET", "/v1/models/*"))

DEFAULT_LIFETIME_SECONDS = 15 * 60
MIN_LIFETIME_SECONDS = 60
MAX_LIFETIME_SECONDS = 3600
ALGORITHM = "HS256"
ISSUER = "image-service"
AUDIENCE = "image-service/client"
TOKEN_ID_PREFIX = "ctk_"  # noqa: S105 - the prefix of a token's public id


class TokenRejected(Exception):
    """The token is not one this service accepts now: ``reason`` is ``expired`` or ``invalid`` (log only)."""

    def __init__(self, reason: Literal["expired", "invalid"]) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ClientToken:
    id: str
    owner: str  # the parent key's owner id
    scope: tuple[Scope, ...]
    issued_at: int
    expires_at: int
    max_images: int | None = None
    max_concurrent: int | None = None

    def routes(self) -> list[tuple[str, str]]:
        return [*(route for name in self.scope for route in SCOPE_ROUTES[name]), *EVERY_TOKEN_ROUTES]

    def claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": self.owner,
            "jti": self.id,
            "iat": self.issued_at,
            "exp": self.expires_at,
            "scope": list(self.scope),
        }
        if self.max_images is not None:
            claims["max_images"] = self.max_images
        if self.max_concurrent is not None:
            claims["max_concurrent"] = self.max_concurrent
        return claims


def new_token_id() -> str:
    return TOKEN_ID_PREFIX + secrets.token_hex(16)


def looks_like_client_token(credential: str) -> bool:
    """A JWT has three dot-separated parts; a server key has none."""
    return credential.count(".") == 2


def mint(
    owner: str,
    *,
    signing_key: str,
    now: int,
    lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS,
    scope: Iterable[Scope] = DEFAULT_SCOPE,
    max_images: int | None = None,
    max_concurrent: int | None = None,
) -> tuple[str, ClientToken]:
    """A signed token for ``owner``'s key, and what it says: without ``max_images``, the default limit."""
    if not MIN_LIFETIME_SECONDS <= lifetime_seconds <= MAX_LIFETIME_SECONDS:
        raise ValueError("lifetime out of bounds")
    names = tuple(dict.fromkeys(scope))  # in order, once each
    if not names or any(name not in SCOPE_ROUTES for name in names):
        raise ValueError("unknown scope")
    token = ClientToken(
        id=new_token_id(),
        owner=owner,
        scope=names,
        issued_at=now,
        expires_at=now + lifetime_seconds,
        max_images=TOKEN_DEFAULT_MAX_IMAGES if max_images is None else max_images,
        max_concurrent=max_concurrent,
    )
    return jwt.encode(token.claims(), signing_key, algorithm=ALGORITHM), token


def read(credential: str, *, signing_key: str, now: int) -> ClientToken:
    """The token's content if its signature, issuer, audience and claims are right and it has not expired."""
    try:
        claims = jwt.decode(
            credential,
            signing_key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            # Expiry is checked below against the caller's clock (the same one that minted it in tests).
            options={"require": ["exp", "iat", "sub", "jti", "scope"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise TokenRejected("invalid") from None
    token = _token_of(claims)
    if token.expires_at <= now:
        raise TokenRejected("expired")
    return token


def _token_of(claims: dict[str, Any]) -> ClientToken:
    scope, max_images = claims.get("scope"), claims.get("max_images")
    max_concurrent = claims.get("max_concurrent")
    valid = (
        isinstance(scope, list)
        and bool(scope)
        and all(name in SCOPE_ROUTES for name in scope)
        and isinstance(claims["exp"], int)
        and isinstance(claims["iat"], int)
        and claims["exp"] - claims["iat"] <= MAX_LIFETIME_SECONDS
        and str(claims["jti"]).startswith(TOKEN_ID_PREFIX)
        and (max_images is None or (type(max_images) is int and 0 < max_images <= TOKEN_MAX_IMAGES))
        and (max_concurrent is None or (type(max_concurrent) is int and 0 < max_concurrent <= TOKEN_MAX_CONCURRENT))
    )
    if not valid:
        raise TokenRejected("invalid")
    return ClientToken(
        id=str(claims["jti"]),
        owner=str(claims["sub"]),
        scope=tuple(scope),  # type: ignore[arg-type]  # checked against SCOPE_ROUTES above
        issued_at=claims["iat"],
        expires_at=claims["exp"],
        max_images=max_images,
        max_concurrent=max_concurrent,
    )


def signing_key_reader(settings: SigningKeySettings) -> Callable[[], str] | None:
    """Where the signing key comes from (None: client tokens are not configured): the environment locally,
    Secrets Manager through Powertools Parameters (cached ``signing_key_cache_seconds``) in AWS."""
    if settings.client_token_signing_key is not None:
        key = settings.client_token_signing_key.get_secret_value()
        return lambda: key
    secret_id = settings.client_token_signing_secret_id
    if not secret_id:
        return None
    max_age = settings.signing_key_cache_seconds

    def load() -> str:
        from aws_lambda_powertools.utilities import parameters

        return str(parameters.get_secret(secret_id, max_age=max_age))

    return load
