"""Client tokens and key identity: tokens are signed (HS256), tamper-evident, short-lived and limited to their
scope; the authorizer accepts them only while their parent key is in the keyring and opens exactly their
routes; a key's owner id comes from its hash, not its name."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import jwt
import pytest

from imagecore.accounts.auth import KeyRecord, Keyring, owner_for_hash
from imagecore.accounts.authorizer import Grant, Refused, authorize, authorizer_context
from imagecore.accounts.caller import Caller, caller_of
from imagecore.accounts.client_tokens import (
    DEFAULT_LIFETIME_SECONDS,
    DEFAULT_SCOPE,
    MAX_LIFETIME_SECONDS,
    SCOPE_ROUTES,
    TokenRejected,
    looks_like_client_token,
    mint,
    read,
)
from imagecore.domain.errors import Forbidden, Unauthorized

KEY = "isk-unit-parent-key-000000000000000000001"
OTHER_KEY = "isk-unit-other-key-0000000000000000000002"
SIGNING_KEY = "unit-test-signing-key-0123456789abcdef0123456789abcdef"
NOW = 1_800_000_000


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def owner_of(key: str) -> str:
    return owner_for_hash(sha256(key))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TestOwnerIds:
    def test_the_owner_is_derived_from_the_hash_not_the_name(self) -> None:
        old = KeyRecord("ios-app", sha256(KEY))
        new = KeyRecord("ios-app", sha256(OTHER_KEY))  # the same name, given again to a new key
        assert old.owner != new.owner
        assert old.owner == owner_of(KEY)
        assert old.owner.startswith("own_") and len(old.owner) == 4 + 32
        # it reveals neither the key nor its stored hash
        assert sha256(KEY) not in old.owner and sha256(KEY)[:12] not in old.owner

    def test_upper_case_hashes_give_the_same_owner(self) -> None:
        assert owner_for_hash(sha256(KEY).upper()) == owner_of(KEY)

    def test_the_keyring_finds_a_key_by_owner_while_it_is_there(self) -> None:
        ring = Keyring.from_document({"keys": [{"id": "ios-app", "sha256": sha256(KEY)}]})
        assert ring.owned_by(owner_of(KEY)) == KeyRecord("ios-app", sha256(KEY))
        assert ring.owned_by(owner_of(OTHER_KEY)) is None
        assert ring.owned_by("ios-app") is None


class TestMintAndRead:
    def test_a_minted_token_reads_back(self) -> None:
        signed, token = mint(owner_of(KEY), signing_key=SIGNING_KEY, now=NOW, max_images=3)
        assert looks_like_client_token(signed) and not looks_like_client_token(KEY)
        assert token.expires_at == NOW + DEFAULT_LIFETIME_SECONDS == NOW + 900
        assert token.scope == DEFAULT_SCOPE == ("generations", "edits", "uploads", "tasks", "responses")
        assert token.id.startswith("ctk_") and len(token.id) == 36
        assert read(signed, signing_key=SIGNING_KEY, now=NOW + 1) == token
        claims = jwt.decode(
            signed,
            SIGNING_KEY,
            algorithms=["HS256"],
            audience="image-service/client",
            options={"verify_exp": False, "verify_iat": False},  # NOW is a fixed clock
        )
        assert claims["sub"] == owner_of(KEY)
        assert claims["max_images"] == 3
        assert KEY not in signed and sha256(KEY) not in signed

    def test_each_token_has_its_own_id(self) -> None:
        ids = {mint("own_x", signing_key=SIGNING_KEY, now=NOW)[1].id for _ in range(20)}
        assert len(ids) == 20

    def test_a_token_is_refused_from_its_expiry_on(self) -> None:
        signed, token = mint(owner_of(KEY), signing_key=SIGNING_KEY, now=NOW, lifetime_seconds=60)
        assert read(signed, signing_key=SIGNING_KEY, now=NOW + 59).id == token.id
        for later in (NOW + 60, NOW + 3600):
            with pytest.raises(TokenRejected) as rejected:
                read(signed, signing_key=SIGNING_KEY, now=later)
            assert rejected.value.reason == "expired"

    @pytest.mark.parametrize("lifetime", [0, 59, MAX_LIFETIME_SECONDS + 1, 86400])
    def test_lifetimes_are_bounded(self, lifetime: int) -> None:
        with pytest.raises(ValueError, match="lifetime"):
            mint("own_x", signing_key=SIGNING_KEY, now=NOW, lifetime_seconds=lifetime)

    @pytest.mark.parametrize("scope", [[], ["client_tokens"], ["generations", "admin"]])
    def test_unknown_or_empty_scopes_are_refused(self, scope: list[Any]) -> None:
        with pytest.raises(ValueError, match="scope"):
            mint("own_x", signing_key=SIGNING_KEY, now=NOW, scope=scope)

    def test_a_token_signed_with_another_key_is_invalid(self) -> None:
        signed, _ = mint(owner_of(KEY), signing_key="another-signing-key-0123456789abcdef0123456789", now=NOW)
        with pytest.raises(TokenRejected) as rejected:
            read(signed, signing_key=SIGNING_KEY, now=NOW)
        assert rejected.value.reason == "invalid"

    @pytest.mark.parametrize("change", ["sub", "scope", "max_images", "exp"])
    def test_a_tampered_token_is_invalid(self, change: str) -> None:
        signed, _ = mint(owner_of(KEY), signing_key=SIGNING_KEY, now=NOW, scope=["tasks"], max_images=1)
        header, payload, signature = signed.split(".")
        claims = json.loads(unb64url(payload))
        claims[change] = {
            "sub": owner_of(OTHER_KEY),
            "scope": list(SCOPE_ROUTES),
            "max_images": 10_000,
            "exp": NOW + 10 * 3600,
        }[change]
        forged = ".".join([header, b64url(json.dumps(claims).encode()), signature])
        with pytest.raises(TokenRejected) as rejected:
            read(forged, signing_key=SIGNING_KEY, now=NOW)
        assert rejected.value.reason == "invalid"

    def test_an_unsigned_token_is_invalid(self) -> None:
        signed, _ = mint(owner_of(KEY), signing_key=SIGNING_KEY, now=NOW)
        claims = jwt.decode(signed, options={"verify_signature": False})
        unsigned = jwt.encode(claims, key=None, algorithm="none")
        with pytest.raises(TokenRejected):
            read(unsigned, signing_key=SIGNING_KEY, now=NOW)

    @pytest.mark.parametrize(
        "claims",
        [
            {"scope": ["generations", "client_tokens"]},  # a scope the service never grants
            {"scope": []},
            {"scope": "generations"},
            {"max_images": 0},
            {"max_images": "5"},
            {"exp": NOW + 2 * 3600},  # longer than any token may live
            {"jti": "not-a-token-id"},
            {"aud": "someone-else"},
            {"iss": "someone-else"},
        ],
    )
    def test_well_signed_but_impossible_claims_are_invalid(self, claims: dict[str, Any]) -> None:
        signed, token = mint(owner_of(KEY), signing_key=SIGNING_KEY, now=NOW)
        forged = jwt.encode({**token.claims(), **claims}, SIGNING_KEY, algorithm="HS256")
        with pytest.raises(TokenRejected) as rejected:
            read(forged, signing_key=SIGNING_KEY, now=NOW)
        assert rejected.value.reason == "invalid"
        assert read(signed, signing_key=SIGNING_KEY, now=NOW) == token  # the untouched one is fine

    @pytest.mark.parametrize("missing", ["exp", "sub", "jti", "scope", "iat"])
    def test_a_required_claim_may_not_be_missing(self, missing: str) -> None:
        _, token = mint(owner_of(KEY), signing_key=SIGNING_KEY, now=NOW)
        claims = {k: v for k, v in token.claims().items() if k != missing}
        with pytest.raises(TokenRejected):
            read(jwt.encode(claims, SIGNING_KEY, algorithm="HS256"), signing_key=SIGNING_KEY, now=NOW)


class TestAuthorize:
    ring = Keyring.from_document({"keys": [{"id": "web", "sha256": sha256(KEY)}]})

    def test_a_server_key_opens_every_route(self) -> None:
        grant = authorize(KEY, self.ring, lambda: SIGNING_KEY, now=NOW)
        assert grant == Grant(KeyRecord("web", sha256(KEY)))
        assert grant.routes() is None
        assert authorizer_context(grant) == {"keyId": "web", "ownerId": owner_of(KEY), "credential": "key"}

    def test_a_token_speaks_for_its_parent_and_opens_its_scope_only(self) -> None:
        signed, token = mint(owner_of(KEY), signing_key=SIGNING_KEY, now=NOW, scope=["generations", "tasks"])
        grant = authorize(signed, self.ring, lambda: SIGNING_KEY, now=NOW)
        assert grant.key.id == "web" and grant.token == token
        assert grant.routes() == [
            ("POST", "/v1/images/generations"),
            ("POST", "/v1/images/generations/async"),
            ("GET", "/v1/images/tasks/*"),
            # the model list is open to every token
            ("GET", "/v1/models"),
            ("GET", "/v1/models/*"),
        ]
        assert authorizer_context(grant) == {
            "keyId": "web",
            "ownerId": owner_of(KEY),
            "credential": "client_token",
            "tokenId": token.id,
            "tokenExpiresAt": NOW + 900,
            "tokenMaxImages": 20,  # a token minted without max_images gets the default
        }

    def test_max_images_travels_in_the_context(self) -> None:
        signed, _ = mint(owner_of(KEY), signing_key=SIGNING_KEY, now=NOW, max_images=2)
        assert authorizer_context(authorize(signed, self.ring, lambda: SIGNING_KEY, now=NOW))["tokenMaxImages"] == 2

    def test_no_scope_ever_opens_the_client_tokens_route(self) -> None:
        opened = {resource for routes in SCOPE_ROUTES.values() for _, resource in routes}
        assert not any("client_tokens" in resource for resource in opened)

    def test_revoking_the_parent_revokes_its_tokens(self) -> None:
        signed, _ = mint(owner_of(KEY), signing_key=SIGNING_KEY, now=NOW)
        # the same name given to a new key: the token's parent is still gone
        renamed = Keyring.from_document({"keys": [{"id": "web", "sha256": sha256(OTHER_KEY)}]})
        with pytest.raises(Refused) as refused:
            authorize(signed, renamed, lambda: SIGNING_KEY, now=NOW)
        assert refused.value.reason == "parent_revoked"

    @pytest.mark.parametrize(
        ("credential", "reason"),
        [(None, "missing"), ("", "missing"), ("isk-nobody", "unknown"), ("a.b.c", "token_invalid")],
    )
    def test_refusals_say_why_for_the_log(self, credential: str | None, reason: str) -> None:
        with pytest.raises(Refused) as refused:
            authorize(credential, self.ring, lambda: SIGNING_KEY, now=NOW)
        assert refused.value.reason == reason

    def test_an_expired_token_is_refused(self) -> None:
        signed, _ = mint(owner_of(KEY), signing_key=SIGNING_KEY, now=NOW - 901)
        with pytest.raises(Refused) as refused:
            authorize(signed, self.ring, lambda: SIGNING_KEY, now=NOW)
        assert refused.value.reason == "token_expired"

    def test_without_a_signing_key_tokens_are_refused(self) -> None:
        signed, _ = mint(owner_of(KEY), signing_key=SIGNING_KEY, now=NOW)
        with pytest.raises(Refused) as refused:
            authorize(signed, self.ring, None, now=NOW)
        assert refused.value.reason == "tokens_disabled"


def event_with(context: dict[str, Any] | None) -> dict[str, Any]:
    return {"requestContext": {"authorizer": context} if context is not None else {}}


class TestCaller:
    def test_a_key_caller(self) -> None:
        caller = caller_of(event_with({"keyId": "web", "ownerId": "own_1", "credential": "key"}))
        assert caller == Caller(key_id="web", owner_id="own_1")
        caller.require_server_key()  # no error

    def test_a_token_caller_carries_the_token(self) -> None:
        context = {
            "keyId": "web",
            "ownerId": "own_1",
            "credential": "client_token",
            "tokenId": "ctk_1",
            "tokenExpiresAt": str(NOW + 60),  # API Gateway hands context values over as strings
            "tokenMaxImages": "4",
        }
        caller = caller_of(event_with(context), now=NOW)
        assert caller.owner_id == "own_1"
        assert caller.token is not None
        assert (caller.token.id, caller.token.expires_at, caller.token.max_images) == ("ctk_1", NOW + 60, 4)
        with pytest.raises(Forbidden) as forbidden:
            caller.require_server_key()
        assert (forbidden.value.status, forbidden.value.code) == (403, "client_token_not_allowed")

    def test_a_cached_authorization_of_an_expired_token_is_refused(self) -> None:
        context = {
            "keyId": "web",
            "ownerId": "own_1",
            "credential": "client_token",
            "tokenId": "ctk_1",
            "tokenExpiresAt": NOW,
        }
        with pytest.raises(Unauthorized) as refused:
            caller_of(event_with(context), now=NOW)
        assert (refused.value.status, refused.value.code) == (401, "token_expired")
        assert caller_of(event_with(context), now=NOW - 1).token is not None

    @pytest.mark.parametrize(
        "context",
        [
            None,
            {},
            {"keyId": "web"},  # no owner: not from this authorizer
            {"ownerId": "own_1"},
            {"keyId": "web", "ownerId": "own_1", "credential": "client_token"},  # a token without its fields
            {"keyId": "web", "ownerId": "own_1", "credential": "client_token", "tokenId": "c", "tokenExpiresAt": "x"},
        ],
    )
    def test_anything_incomplete_is_unauthenticated(self, context: dict[str, Any] | None) -> None:
        with pytest.raises(Unauthorized):
            caller_of(event_with(context), now=time.time())


class TestLocalGatewayPolicies:
    """The local stack judges an authorizer's policy as API Gateway does, so a token's scope holds locally."""

    ARN = "arn:aws:execute-api:us-east-1:123456789012:local/local/"

    def test_only_the_named_routes_are_allowed(self) -> None:
        from local.api_definition import policy_allows

        allow = [{"Effect": "Allow", "Resource": [self.ARN + "POST/v1/uploads", self.ARN + "GET/v1/images/tasks/*"]}]
        assert policy_allows(allow, self.ARN + "POST/v1/uploads")
        assert policy_allows(allow, self.ARN + "GET/v1/images/tasks/task_1")
        assert not policy_allows(allow, self.ARN + "POST/v1/images/generations")
        assert not policy_allows(allow, self.ARN + "POST/v1/client_tokens")
        assert not policy_allows(allow, self.ARN + "GET/v1/uploads")

    def test_every_route_for_a_key_and_deny_wins(self) -> None:
        from local.api_definition import policy_allows

        everything = {"Effect": "Allow", "Resource": self.ARN + "*/*"}
        assert policy_allows([everything], self.ARN + "POST/v1/client_tokens")
        deny = {"Effect": "Deny", "Resource": [self.ARN + "POST/v1/client_tokens"]}
        assert not policy_allows([everything, deny], self.ARN + "POST/v1/client_tokens")
        assert not policy_allows([], self.ARN + "POST/v1/uploads")
