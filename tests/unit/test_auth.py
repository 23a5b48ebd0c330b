"""Bearer keys: only hashes are kept, a key is identified by a loggable id, and the REQUEST authorizer
allows a known key on every route and refuses anything else with exactly 'Unauthorized'."""

from __future__ import annotations

import hashlib
import re
import sys
import time
from typing import Any

import pytest

from imagecore.accounts.auth import (
    KeyRecord,
    Keyring,
    bearer_token,
    hash_key,
    key_id_for_hash,
    new_api_key,
    owner_for_hash,
)

GOOD_KEY = "isk-test-good-key-0123456789"
OTHER_KEY = "isk-test-other-key-9876543210"
SIGNING_KEY = "unit-test-signing-key-0123456789abcdef0123456789abcdef"
METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/POST/v1/images/generations"


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class TestKeyring:
    def test_a_plain_key_is_identified_by_a_key_id_derived_from_its_hash(self) -> None:
        ring = Keyring.from_plain_keys([GOOD_KEY])
        record = ring.identify(GOOD_KEY)
        assert record == KeyRecord(id=f"key_{sha256(GOOD_KEY)[:12]}", sha256=sha256(GOOD_KEY))
        assert re.fullmatch(r"key_[0-9a-f]{12}", record.id)
        assert GOOD_KEY not in record.id

    @pytest.mark.parametrize("key", [OTHER_KEY, GOOD_KEY + "x", GOOD_KEY[:-1], GOOD_KEY.upper(), None, ""])
    def test_anything_else_is_not_identified(self, key: str | None) -> None:
        assert Keyring.from_plain_keys([GOOD_KEY]).identify(key) is None

    def test_several_keys_have_distinct_ids(self) -> None:
        ring = Keyring.from_plain_keys([GOOD_KEY, OTHER_KEY])
        assert len(ring) == 2
        first, second = ring.identify(GOOD_KEY), ring.identify(OTHER_KEY)
        assert first is not None and second is not None
        assert first.id != second.id

    def test_blank_entries_and_surrounding_spaces_are_ignored(self) -> None:
        ring = Keyring.from_plain_keys(f" {GOOD_KEY} ,, ,{OTHER_KEY}".split(","))
        assert len(ring) == 2
        assert ring.identify(GOOD_KEY) is not None
        assert ring.identify(OTHER_KEY) is not None

    def test_an_empty_keyring_identifies_nobody(self) -> None:
        assert Keyring.from_plain_keys([]).identify(GOOD_KEY) is None

    def test_from_document_keeps_explicit_ids(self) -> None:
        ring = Keyring.from_document(
            {"keys": [{"id": "ios-app", "sha256": sha256(GOOD_KEY)}, {"id": "web", "sha256": sha256(OTHER_KEY)}]}
        )
        assert ring.identify(GOOD_KEY) == KeyRecord("ios-app", sha256(GOOD_KEY))
        assert ring.identify(OTHER_KEY) == KeyRecord("web", sha256(OTHER_KEY))
        assert ring.identify("isk-unknown") is None

    def test_from_document_derives_missing_ids_and_accepts_upper_case_hashes(self) -> None:
        ring = Keyring.from_document({"keys": [{"sha256": sha256(GOOD_KEY).upper()}]})
        record = ring.identify(GOOD_KEY)
        assert record is not None
        assert record.id == key_id_for_hash(sha256(GOOD_KEY))

    def test_an_empty_document_identifies_nobody(self) -> None:
        assert len(Keyring.from_document({})) == 0

    def test_hash_key_is_sha256_hex(self) -> None:
        assert hash_key(GOOD_KEY) == sha256(GOOD_KEY)

    def test_new_api_keys_are_random_and_prefixed(self) -> None:
        keys = {new_api_key() for _ in range(20)}
        assert len(keys) == 20
        assert all(key.startswith("isk-") and len(key) >= 40 for key in keys)


class TestBearerToken:
    @pytest.mark.parametrize(
        "headers",
        [
            {"Authorization": f"Bearer {GOOD_KEY}"},
            {"authorization": f"Bearer {GOOD_KEY}"},
            {"AUTHORIZATION": f"bearer {GOOD_KEY}"},
            {"Authorization": f"BEARER {GOOD_KEY}"},
            {"Authorization": f"  Bearer   {GOOD_KEY}  "},
            {"Content-Type": "application/json", "Authorization": f"Bearer {GOOD_KEY}"},
        ],
    )
    def test_reads_the_token(self, headers: dict[str, str]) -> None:
        assert bearer_token(headers) == GOOD_KEY

    @pytest.mark.parametrize(
        "headers",
        [
            None,
            {},
            {"Content-Type": "application/json"},
            {"Authorization": ""},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer "},
            {"Authorization": "Bearer    "},
            {"Authorization": f"Basic {GOOD_KEY}"},
            {"Authorization": GOOD_KEY},
            {"X-Api-Key": GOOD_KEY},
        ],
    )
    def test_no_token_otherwise(self, headers: dict[str, str] | None) -> None:
        assert bearer_token(headers) is None


# --- the REQUEST authorizer Lambda --------------------------------------------------------------------------


def authorizer_event(authorization: str | None) -> dict[str, Any]:
    """A REST API REQUEST authorizer event as API Gateway sends it."""
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Host": "abcdef123.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "OpenAI/Python 3.51.0",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    if authorization is not None:
        headers["Authorization"] = authorization
    return {
        "type": "REQUEST",
        "methodArn": METHOD_ARN,
        "resource": "/v1/images/generations",
        "path": "/v1/images/generations",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": {},
        "multiValueQueryStringParameters": {},
        "pathParameters": {},
        "stageVariables": {},
        "requestContext": {
            "resourcePath": "/v1/images/generations",
            "httpMethod": "POST",
            "path": "/prod/v1/images/generations",
            "accountId": "123456789012",
            "stage": "prod",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "apiId": "abcdef123",
            "protocol": "HTTP/1.1",
            "requestTimeEpoch": 1_760_000_000_000,
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "OpenAI/Python 3.51.0"},
        },
    }


@pytest.fixture
def authorizer(monkeypatch: pytest.MonkeyPatch):
    """functions/authorizer/app.py with API_KEYS holding the good and the other key."""
    monkeypatch.delenv("API_KEYS_SECRET_ID", raising=False)
    monkeypatch.setenv("API_KEYS", f"{GOOD_KEY},{OTHER_KEY}")
    monkeypatch.delenv("CLIENT_TOKEN_SIGNING_SECRET_ID", raising=False)
    monkeypatch.setenv("CLIENT_TOKEN_SIGNING_KEY", SIGNING_KEY)
    # the settings' own defaults for the per-plan concurrency, and no default daily budget
    monkeypatch.setenv("PLAN_MAX_CONCURRENT", "free=1 trial=2 standard=4 none=2")
    monkeypatch.delenv("DEFAULT_IMAGES_PER_DAY", raising=False)
    from functions.authorizer import app

    for cached in (app.settings, app.keyring, app.signing_key, app.key_defaults):
        cached.cache_clear()
    yield app
    for cached in (app.settings, app.keyring, app.signing_key, app.key_defaults):
        cached.cache_clear()


class TestAuthorizer:
    def test_a_known_key_is_allowed_on_every_route(self, authorizer, lambda_context) -> None:
        policy = authorizer.lambda_handler(authorizer_event(f"Bearer {GOOD_KEY}"), lambda_context)
        key_id = f"key_{sha256(GOOD_KEY)[:12]}"
        assert policy["principalId"] == key_id
        assert policy["context"] == {
            "keyId": key_id,
            "ownerId": owner_for_hash(sha256(GOOD_KEY)),
            "credential": "key",
            "maxConcurrent": 2,  # PLAN_MAX_CONCURRENT's default for a key on no plan
        }
        statements = policy["policyDocument"]["Statement"]
        assert len(statements) == 1
        statement = statements[0]
        assert statement["Effect"] == "Allow"
        assert statement["Action"] == "execute-api:Invoke"
        resources = statement["Resource"]
        assert resources == ["arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/*/*"]

    def test_the_scheme_and_header_name_are_case_insensitive(self, authorizer, lambda_context) -> None:
        event = authorizer_event(None)
        event["headers"]["authorization"] = f"bearer {OTHER_KEY}"
        policy = authorizer.lambda_handler(event, lambda_context)
        assert policy["context"]["keyId"] == f"key_{sha256(OTHER_KEY)[:12]}"

    @pytest.mark.parametrize(
        "authorization",
        [None, "", "Bearer ", f"Bearer {GOOD_KEY}x", "Bearer isk-nobody", f"Basic {GOOD_KEY}", GOOD_KEY],
    )
    def test_anything_else_is_exactly_unauthorized(self, authorizer, lambda_context, authorization) -> None:
        with pytest.raises(Exception) as caught:
            authorizer.lambda_handler(authorizer_event(authorization), lambda_context)
        assert str(caught.value) == "Unauthorized"

    def test_the_key_never_reaches_the_logs(self, authorizer, lambda_context, capsys) -> None:
        from imagecore.platform.observability import logger

        handler = logger.registered_handler
        original = handler.setStream(sys.stdout)  # the handler kept the stdout of import time; use capsys'
        try:
            authorizer.lambda_handler(authorizer_event(f"Bearer {GOOD_KEY}"), lambda_context)
            for bad in (f"Bearer {OTHER_KEY}x", "Bearer "):
                with pytest.raises(Exception, match=r"^Unauthorized$"):
                    authorizer.lambda_handler(authorizer_event(bad), lambda_context)
        finally:
            handler.setStream(original)
        out = capsys.readouterr()
        logged = out.out + out.err
        assert "api key refused" in logged  # the refusals were logged ...
        assert GOOD_KEY not in logged  # ... without any key
        assert OTHER_KEY not in logged
        assert sha256(GOOD_KEY) not in logged

    def test_an_event_without_headers_is_unauthorized_not_a_crash(self, authorizer, lambda_context) -> None:
        event = authorizer_event(None)
        event["headers"] = None
        event["multiValueHeaders"] = None
        with pytest.raises(Exception) as caught:
            authorizer.lambda_handler(event, lambda_context)
        assert str(caught.value) == "Unauthorized"


class TestPlansAndBudgets:
    def test_a_key_on_a_plan_names_its_usage_key_and_budgets(self, authorizer, lambda_context, monkeypatch) -> None:
        monkeypatch.setenv("API_KEYS", f"{GOOD_KEY}@trial:images_per_day=5:tokens_per_month=90000,{OTHER_KEY}")
        authorizer.settings.cache_clear()
        authorizer.keyring.cache_clear()
        on_plan = authorizer.lambda_handler(authorizer_event(f"Bearer {GOOD_KEY}"), lambda_context)
        no_plan = authorizer.lambda_handler(authorizer_event(f"Bearer {OTHER_KEY}"), lambda_context)

        assert on_plan["usageIdentifierKey"] == "local-usage-" + sha256(GOOD_KEY)[:24]
        assert GOOD_KEY not in on_plan["usageIdentifierKey"]
        assert on_plan["context"] == {
            "keyId": f"key_{sha256(GOOD_KEY)[:12]}",
            "ownerId": owner_for_hash(sha256(GOOD_KEY)),
            "credential": "key",
            "budget_images_per_day": 5,
            "budget_tokens_per_month": 90000,
            "maxConcurrent": 2,  # the trial plan's
        }
        # a key on no plan gets no usage key (API Gateway then refuses it where an API key is required)
        assert "usageIdentifierKey" not in no_plan
        assert no_plan["context"] == {
            "keyId": f"key_{sha256(OTHER_KEY)[:12]}",
            "ownerId": owner_for_hash(sha256(OTHER_KEY)),
            "credential": "key",
            "maxConcurrent": 2,  # none=2: a key on no plan
        }

    def test_concurrency_limits_come_from_the_plan_the_key_or_a_lower_client_token(self) -> None:
        from imagecore.accounts.authorizer import Grant, KeyDefaults, authorizer_context
        from imagecore.accounts.client_tokens import ClientToken

        defaults = KeyDefaults.parse("free=1 trial=3 standard=0 none=2", images_per_day=50)
        ring = Keyring.from_plain_keys([f"{GOOD_KEY}@trial", f"{OTHER_KEY}@standard:concurrent=7:images_per_day=9"])
        trial, own = ring.records
        assert authorizer_context(Grant(trial), defaults)["maxConcurrent"] == 3
        assert authorizer_context(Grant(trial), defaults)["budget_images_per_day"] == 50  # the default budget
        assert authorizer_context(Grant(own), defaults)["maxConcurrent"] == 7  # its own setting wins
        assert authorizer_context(Grant(own), defaults)["budget_images_per_day"] == 9
        unlimited = Keyring.from_plain_keys([f"{GOOD_KEY}@standard"]).records[0]
        assert "maxConcurrent" not in authorizer_context(Grant(unlimited), defaults)  # 0: no limit
        assert "budget_images_per_day" not in authorizer_context(Grant(trial), KeyDefaults.parse("trial=3"))

        token = ClientToken("ctk_1", trial.owner, ("generations",), 0, 900, max_images=5, max_concurrent=10)
        assert authorizer_context(Grant(trial, token), defaults)["tokenMaxConcurrent"] == 3  # never above its key
        lower = ClientToken("ctk_2", trial.owner, ("generations",), 0, 900, max_concurrent=1)
        assert authorizer_context(Grant(trial, lower), defaults)["tokenMaxConcurrent"] == 1

        document = Keyring.from_document(
            {"keys": [{"id": "ios", "sha256": sha256(GOOD_KEY), "budgets": {"max_concurrent": 4, "images_per_day": 3}}]}
        )
        assert document.records[0].max_concurrent == 4 and document.records[0].budget.images_per_day == 3

    def test_the_secret_document_carries_plan_usage_key_and_budgets(self) -> None:
        digest = sha256(GOOD_KEY)
        ring = Keyring.from_document(
            {
                "keys": [
                    {
                        "id": "ios-app",
                        "sha256": digest,
                        "plan": "standard",
                        "usage_key": "apigw-key-value",
                        "budgets": {"images_per_month": 1000},
                    }
                ]
            }
        )
        record = ring.identify(GOOD_KEY)
        assert (record.plan, record.usage_key, record.budget.images_per_month) == ("standard", "apigw-key-value", 1000)
        assert record.budget.images_per_day is None

    @pytest.mark.parametrize(
        ("spec", "key", "plan", "budgets"),
        [
            ("dev-key", "dev-key", None, {}),
            (" trial-key@trial ", "trial-key", "trial", {}),
            (
                "k@standard:images_per_day=50:tokens_per_month=2000000",
                "k",
                "standard",
                {"images_per_day": 50, "tokens_per_month": 2000000},
            ),
            ("k:images_per_month=3", "k", None, {"images_per_month": 3}),
        ],
    )
    def test_local_key_syntax(self, spec: str, key: str, plan: str | None, budgets: dict[str, int]) -> None:
        from imagecore.accounts.auth import parse_local_key

        parsed_key, parsed_plan, budget, _concurrent = parse_local_key(spec)
        assert (parsed_key, parsed_plan, budget.as_dict()) == (key, plan, budgets)

    @pytest.mark.parametrize(
        "spec", ["k:images_per_day", "k:images_per_day=-1", "k:images_a_day=5", "k:images_per_day=x"]
    )
    def test_bad_local_budgets_are_refused(self, spec: str) -> None:
        from imagecore.accounts.auth import parse_local_key

        with pytest.raises(ValueError):
            parse_local_key(spec)


class TestAuthorizerWithClientTokens:
    """The handler's policy for a client token: its scope's routes and nothing else, cached safely by header."""

    def mint(self, key: str, **options: Any) -> str:
        from imagecore.accounts.client_tokens import mint

        return mint(owner_for_hash(sha256(key)), signing_key=SIGNING_KEY, now=int(time.time()), **options)[0]

    def test_a_token_is_allowed_exactly_its_scope(self, authorizer, lambda_context) -> None:
        token = self.mint(GOOD_KEY, scope=["generations", "tasks"], max_images=2)
        policy = authorizer.lambda_handler(authorizer_event(f"Bearer {token}"), lambda_context)
        prefix = "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/"
        (statement,) = policy["policyDocument"]["Statement"]
        assert statement["Effect"] == "Allow"
        assert sorted(statement["Resource"]) == [
            prefix + "GET/v1/images/tasks/*",
            prefix + "GET/v1/models",  # every token may list the models
            prefix + "GET/v1/models/*",
            prefix + "POST/v1/images/generations",
            prefix + "POST/v1/images/generations/async",
        ]
        assert policy["principalId"] == f"key_{sha256(GOOD_KEY)[:12]}"  # the parent's name, for the logs
        context = policy["context"]
        assert context["ownerId"] == owner_for_hash(sha256(GOOD_KEY))
        assert context["credential"] == "client_token"
        assert context["tokenMaxImages"] == 2
        assert context["tokenId"].startswith("ctk_")

    def test_a_default_token_never_reaches_client_tokens(self, authorizer, lambda_context) -> None:
        policy = authorizer.lambda_handler(authorizer_event(f"Bearer {self.mint(GOOD_KEY)}"), lambda_context)
        resources = policy["policyDocument"]["Statement"][0]["Resource"]
        assert len(resources) == 9  # its scope's 7 routes and the 2 model routes
        assert not any("client_tokens" in resource or resource.endswith("*/*") for resource in resources)

    def test_a_token_of_a_key_no_longer_in_the_keyring_is_unauthorized(
        self, authorizer, lambda_context, monkeypatch
    ) -> None:
        token = self.mint(GOOD_KEY)
        monkeypatch.setenv("API_KEYS", OTHER_KEY)  # GOOD_KEY revoked
        authorizer.settings.cache_clear()
        authorizer.keyring.cache_clear()
        with pytest.raises(Exception, match=r"^Unauthorized$"):
            authorizer.lambda_handler(authorizer_event(f"Bearer {token}"), lambda_context)

    def test_expired_and_forged_tokens_are_unauthorized(self, authorizer, lambda_context) -> None:
        from imagecore.accounts.client_tokens import mint

        expired, _ = mint(owner_for_hash(sha256(GOOD_KEY)), signing_key=SIGNING_KEY, now=int(time.time()) - 3600)
        forged, _ = mint(owner_for_hash(sha256(GOOD_KEY)), signing_key="x" * 64, now=int(time.time()))
        for token in (expired, forged, self.mint(GOOD_KEY)[:-2]):
            with pytest.raises(Exception, match=r"^Unauthorized$"):
                authorizer.lambda_handler(authorizer_event(f"Bearer {token}"), lambda_context)

    def test_a_token_spends_within_its_parent_keys_plan_and_budgets(
        self, authorizer, lambda_context, monkeypatch
    ) -> None:
        monkeypatch.setenv("API_KEYS", f"{GOOD_KEY}@trial:images_per_day=5,{OTHER_KEY}")
        authorizer.settings.cache_clear()
        authorizer.keyring.cache_clear()
        policy = authorizer.lambda_handler(authorizer_event(f"Bearer {self.mint(GOOD_KEY)}"), lambda_context)
        assert policy["usageIdentifierKey"] == "local-usage-" + sha256(GOOD_KEY)[:24]
        assert policy["context"]["budget_images_per_day"] == 5
        assert policy["context"]["ownerId"] == owner_for_hash(sha256(GOOD_KEY))
