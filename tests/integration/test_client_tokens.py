"""Client tokens and key identity through the real handlers: the authorizer (keys from a Secrets Manager secret
written by scripts/api_key.py, on moto) decides, its policy is checked against the route as API Gateway would,
and its context reaches the functions.

- a server key mints a token; the token generates; the parent key polls the token's task;
- a token never mints tokens; an out-of-scope route is denied; max_images is counted in DynamoDB with
  reservations, so the upstream is never called past it;
- a key revoked and created again under the same name owns nothing of the old key's: tasks, uploads and
  idempotent replays are not found.
"""

from __future__ import annotations

import io
import json
import runpy
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from PIL import Image

from local.api_definition import policy_allows
from tests.conftest import FakeLambdaContext
from tests.faults import Crash, faults  # noqa: F401 (fixture)
from tests.helpers import key_of
from tests.integration.environment import BUCKET, REGION
from tests.integration.stack import Reply, Stack, png, reply_of

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "api_key.py"
SIGNING_KEY = "integration-signing-key-0123456789abcdef0123456789abcdef"
GENERATION = {"prompt": "a lighthouse at dawn", "size": "1024x1024", "quality": "low"}
ROUTE_OF = {  # the API Gateway resource each path is served under
    "/v1/images/generations": "/v1/images/generations",
    "/v1/images/generations/async": "/v1/images/generations/async",
    "/v1/images/edits": "/v1/images/edits",
    "/v1/uploads": "/v1/uploads",
    "/v1/client_tokens": "/v1/client_tokens",
}


class Denied(Exception):
    """What API Gateway answers instead of calling the function: 401 (authorizer said Unauthorized) or 403."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Service:
    """The functions behind the real authorizer, with keys managed by the real key script."""

    def __init__(self, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
        from functions.authorizer import app as authorizer
        from functions.client_tokens import app as client_tokens

        self.stack = stack
        self.authorizer = authorizer
        self.client_tokens = client_tokens
        self.secrets = boto3.client("secretsmanager", region_name=REGION)
        # moto lives for the module: a secret of this test's own
        name = f"api-keys-{uuid.uuid4().hex[:8]}"
        self.secret_arn = self.secrets.create_secret(Name=name, SecretString='{"keys": []}')["ARN"]
        # the template's TokenUsageTable, which the functions are told of (TOKEN_USAGE_TABLE)
        self.usage_table = stack.resources.token_usage_table
        self.usage = boto3.resource("dynamodb", region_name=REGION).Table(self.usage_table)
        monkeypatch.delenv("API_KEYS", raising=False)
        monkeypatch.delenv("CLIENT_TOKEN_SIGNING_SECRET_ID", raising=False)
        monkeypatch.setenv("API_KEYS_SECRET_ID", self.secret_arn)
        monkeypatch.setenv("KEYS_CACHE_SECONDS", "0")  # every call reads the secret: revocation shows at once
        monkeypatch.setenv("CLIENT_TOKEN_SIGNING_KEY", SIGNING_KEY)
        self.clear()

    def clear(self) -> None:
        self.stack.clear()
        authorizer = self.authorizer
        for cached in (authorizer.settings, authorizer.keyring, authorizer.signing_key, authorizer.key_defaults):
            cached.cache_clear()
        self.client_tokens.signing_key.cache_clear()

    # --- keys, with the operator's script ---------------------------------------------------------------------
    def key_script(self, *args: str, capsys: Any) -> str:
        sys.argv = ["api_key.py", *args, "--secret-arn", self.secret_arn, "--no-flush"]
        with pytest.raises(SystemExit) as exited:
            runpy.run_path(str(SCRIPT), run_name="__main__")
        assert exited.value.code == 0
        # stdout also has the functions' metrics (EMF lines); the key is the script's own line
        printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("isk-")]
        return printed[-1] if printed else ""

    # --- API Gateway: authorize, check the policy, invoke ------------------------------------------------------
    def authorize(self, credential: str, method: str, path: str, resource: str) -> dict[str, Any]:
        method_arn = f"arn:aws:execute-api:{REGION}:123456789012:abcdef1234/prod/{method}{path}"
        event = {
            "type": "REQUEST",
            "methodArn": method_arn,
            "resource": resource,
            "path": path,
            "httpMethod": method,
            "headers": {"Authorization": f"Bearer {credential}"},
            "multiValueHeaders": {"Authorization": [f"Bearer {credential}"]},
            "requestContext": {"accountId": "123456789012", "apiId": "abcdef1234", "stage": "prod"},
        }
        try:
            policy = self.authorizer.lambda_handler(event, FakeLambdaContext(function_name="AuthorizerFunction"))
        except Exception as exc:
            assert str(exc) == "Unauthorized"
            raise Denied(401) from None
        if not policy_allows(policy["policyDocument"]["Statement"], method_arn):
            raise Denied(403)
        return {"principalId": policy["principalId"], **{k: str(v) for k, v in policy["context"].items()}}

    def request(self, credential: str, method: str, path: str, body: Any = None, **options: Any) -> Reply:
        resource = "/v1/images/tasks/{task_id}" if path.startswith("/v1/images/tasks/") else ROUTE_OF[path]
        try:
            authorizer = self.authorize(credential, method, path, resource)
        except Denied as denied:
            return Reply(denied.status, {}, {}, {})
        if path.startswith("/v1/images/tasks/"):
            task_id = path.rsplit("/", 1)[1]
            event = self.stack.event(path, method="GET", path_parameters={"task_id": task_id}, resource=resource)
            module = self.stack.tasks
        else:
            event = self.stack.event(path, body=body, **options)
            module = self.client_tokens if path == "/v1/client_tokens" else None
        event["requestContext"]["authorizer"] = authorizer
        if module is None:
            return self._post(path, event)
        return reply_of(module.lambda_handler(event, FakeLambdaContext()))

    def _post(self, path: str, event: dict[str, Any]) -> Reply:
        return reply_of(self.stack.function_of(path).lambda_handler(event, FakeLambdaContext()))

    def mint(self, key: str, **request: Any) -> dict[str, Any]:
        minted = self.request(key, "POST", "/v1/client_tokens", request)
        assert minted.status == 200, minted.body
        return minted.body

    def counted(self, token_id: str) -> int | None:
        item = self.usage.get_item(Key={"id": token_id}, ConsistentRead=True).get("Item")
        return int(item["images"]) if item else None


@pytest.fixture
def service(aws: Any, simulator: Any, monkeypatch: pytest.MonkeyPatch, api_event: Any) -> Iterator[Service]:
    monkeypatch.setattr(sys, "argv", sys.argv)
    made = Service(Stack(aws, simulator, monkeypatch, api_event), monkeypatch)
    yield made
    made.clear()


def token_id_of(token: str) -> str:
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


# --- minting ----------------------------------------------------------------------------------------------------


def test_a_server_key_mints_a_token_with_the_defaults(service, capsys, log_tap):
    key = service.key_script("create", "web-backend", capsys=capsys)
    before = int(time.time())
    minted = service.request(key, "POST", "/v1/client_tokens", {})

    assert minted.status == 200, minted.body
    assert set(minted.body) == {"token", "expires_at", "scope", "max_images", "max_concurrent"}
    assert minted.body["scope"] == ["generations", "edits", "uploads", "tasks", "responses"]
    assert minted.body["max_images"] == 20  # never without a limit
    assert minted.body["max_concurrent"] is None  # its key's limit applies
    assert before + 900 <= minted.body["expires_at"] <= int(time.time()) + 900
    assert minted.headers["cache-control"] == "no-store"
    # the token is in the answer only: not in the log line of the request that made it
    (line,) = log_tap.records()
    assert line["request"]["client_token_id"] == token_id_of(minted.body["token"])
    assert line["request"]["api_key_id"] == "web-backend"
    assert minted.body["token"] not in log_tap.text


def test_the_request_bounds_the_token(service, capsys):
    key = service.key_script("create", "web-backend", capsys=capsys)
    minted = service.mint(key, expires_in=60, scope=["tasks", "generations"], max_images=2)
    assert minted["scope"] == ["tasks", "generations"]
    assert minted["max_images"] == 2
    assert minted["expires_at"] <= int(time.time()) + 60

    for bad in (
        {"expires_in": 3601},
        {"expires_in": 59},
        {"scope": ["client_tokens"]},
        {"scope": []},
        {"max_images": 0},
        {"lifetime": 60},
    ):
        refused = service.request(key, "POST", "/v1/client_tokens", bad)
        assert refused.status == 400, bad
        assert refused.body["error"]["type"] == "invalid_request_error"


def test_a_client_token_cannot_mint_tokens(service, capsys):
    key = service.key_script("create", "web-backend", capsys=capsys)
    token = service.mint(key)["token"]

    # at API Gateway: no scope opens the route
    assert service.request(token, "POST", "/v1/client_tokens", {}).status == 403
    # and were it ever routed there, the function refuses it too
    authorizer = service.authorize(token, "POST", "/v1/images/generations", "/v1/images/generations")
    event = service.stack.event("/v1/client_tokens", body={})
    event["requestContext"]["authorizer"] = authorizer
    refused = reply_of(service.client_tokens.lambda_handler(event, FakeLambdaContext()))
    assert refused.status == 403
    assert refused.body["error"]["code"] == "client_token_not_allowed"


# --- using a token ------------------------------------------------------------------------------------------------


def test_a_token_generates_and_the_parent_key_polls_its_task(service, capsys, simulator):
    key = service.key_script("create", "web-backend", capsys=capsys)
    token = service.mint(key, scope=["generations", "tasks"])["token"]

    done = service.request(token, "POST", "/v1/images/generations", GENERATION)
    assert done.status == 200, done.body
    image = Image.open(
        io.BytesIO(service.stack.s3.get_object(**_bucket_key(done.body["data"][0]["url"]))["Body"].read())
    )
    assert image.size == (1024, 1024)

    submitted = service.request(token, "POST", "/v1/images/generations/async", GENERATION)
    assert submitted.status == 202, submitted.body
    service.stack.run_worker()
    task_path = f"/v1/images/tasks/{submitted.body['id']}"
    by_parent = service.request(key, "GET", task_path)
    by_token = service.request(token, "GET", task_path)
    assert by_parent.status == by_token.status == 200
    assert by_parent.body["status"] == "completed"
    # another key sees nothing
    other = service.key_script("create", "someone-else", capsys=capsys)
    assert service.request(other, "GET", task_path).status == 404
    assert simulator.calls == 2


def test_a_token_is_held_to_its_scope(service, capsys, simulator):
    key = service.key_script("create", "web-backend", capsys=capsys)
    token = service.mint(key, scope=["uploads"])["token"]

    assert service.request(token, "POST", "/v1/images/generations", GENERATION).status == 403
    assert service.request(token, "POST", "/v1/images/generations/async", GENERATION).status == 403
    assert service.request(token, "GET", "/v1/images/tasks/task_" + "0" * 32).status == 403
    upload = service.request(token, "POST", "/v1/uploads", {"content_type": "image/png", "bytes": 100})
    assert upload.status == 200, upload.body
    assert simulator.calls == 0


def test_revoking_the_parent_key_revokes_its_tokens(service, capsys):
    key = service.key_script("create", "web-backend", capsys=capsys)
    token = service.mint(key)["token"]
    assert service.request(token, "POST", "/v1/uploads", {"content_type": "image/png", "bytes": 100}).status == 200

    service.key_script("revoke", "web-backend", capsys=capsys)
    assert service.request(token, "POST", "/v1/uploads", {"content_type": "image/png", "bytes": 100}).status == 401
    # a new key under the same name does not bring the token back
    service.key_script("create", "web-backend", capsys=capsys)
    assert service.request(token, "POST", "/v1/uploads", {"content_type": "image/png", "bytes": 100}).status == 401


def test_a_token_past_its_expiry_is_refused_even_from_a_cached_authorization(service, capsys):
    key = service.key_script("create", "web-backend", capsys=capsys)
    token = service.mint(key, expires_in=60)["token"]
    authorizer = service.authorize(token, "POST", "/v1/uploads", "/v1/uploads")
    # API Gateway serves the cached policy past the token's expiry: the function refuses it itself
    authorizer["tokenExpiresAt"] = str(int(time.time()) - 1)
    event = service.stack.event("/v1/uploads", body={"content_type": "image/png", "bytes": 100})
    event["requestContext"]["authorizer"] = authorizer
    refused = reply_of(service.stack.uploads.lambda_handler(event, FakeLambdaContext()))
    assert refused.status == 401
    assert refused.body["error"]["code"] == "token_expired"


# --- max_images -----------------------------------------------------------------------------------------------------


def test_max_images_is_counted_and_the_upstream_is_not_called_past_it(service, capsys, simulator):
    key = service.key_script("create", "web-backend", capsys=capsys)
    token = service.mint(key, max_images=3)["token"]
    token_id = token_id_of(token)

    first = service.request(token, "POST", "/v1/images/generations", {**GENERATION, "n": 2})
    assert first.status == 200, first.body
    assert len(first.body["data"]) == 2
    assert service.counted(token_id) == 2
    calls = simulator.calls

    over = service.request(token, "POST", "/v1/images/generations", {**GENERATION, "n": 2})
    assert over.status == 429
    assert over.body["error"]["code"] == "token_budget_exceeded"
    assert over.body["error"]["type"] == "insufficient_quota"
    assert simulator.calls == calls  # refused before the upstream
    assert service.counted(token_id) == 2  # nothing reserved by the refusal

    last = service.request(token, "POST", "/v1/images/generations/async", GENERATION)
    assert last.status == 202, last.body
    assert service.counted(token_id) == 3
    assert service.request(token, "POST", "/v1/images/generations", GENERATION).status == 429
    # the parent key itself has no such limit
    assert service.request(key, "POST", "/v1/images/generations", GENERATION).status == 200


def test_a_failed_generation_gives_its_images_back(service, capsys, simulator):
    key = service.key_script("create", "web-backend", capsys=capsys)
    token = service.mint(key, max_images=2)["token"]
    simulator.queue_faults({"status": 400, "body": {"error": {"message": "refused", "type": "invalid_request_error"}}})

    failed = service.request(token, "POST", "/v1/images/generations", {**GENERATION, "n": 2})
    assert failed.status == 400, failed.body
    assert service.counted(token_id_of(token)) == 0
    assert service.request(token, "POST", "/v1/images/generations", {**GENERATION, "n": 2}).status == 200
    assert service.counted(token_id_of(token)) == 2


def async_task(service: Service, token: str, n: int) -> tuple[str, dict[str, Any]]:
    """A task the token queues, and its job as the worker receives it."""
    submitted = service.request(token, "POST", "/v1/images/generations/async", {**GENERATION, "n": n})
    assert submitted.status == 202, submitted.body
    (job,) = service.stack.jobs()
    return submitted.body["id"], job


def delivery(job: dict[str, Any], count: int) -> dict[str, Any]:
    return {**job, "Attributes": {**job.get("Attributes", {}), "ApproximateReceiveCount": str(count)}}


def test_a_task_the_upstream_refuses_gives_its_images_back_once(service, capsys, simulator):
    key = service.key_script("create", "web-backend", capsys=capsys)
    token = service.mint(key, max_images=2)["token"]
    token_id = token_id_of(token)
    simulator.queue_faults(
        {"status": 400, "error": {"message": "blocked", "type": "invalid_request_error", "code": "moderation_blocked"}}
    )
    task_id, job = async_task(service, token, 2)
    assert service.counted(token_id) == 2
    assert service.request(token, "POST", "/v1/images/generations", GENERATION).status == 429

    assert service.stack.run_worker([job]) == []

    view = service.request(key, "GET", f"/v1/images/tasks/{task_id}").body
    assert (view["status"], view["http_status"]) == ("failed", 400), view
    assert service.counted(token_id) == 0
    again = service.request(token, "POST", "/v1/images/generations", {**GENERATION, "n": 2})
    assert again.status == 200, again.body
    assert len(again.body["data"]) == 2
    assert service.counted(token_id) == 2
    # The same job delivered again gives nothing back a second time.
    assert service.stack.run_worker([delivery(job, 2)]) == []
    assert service.counted(token_id) == 2
    assert simulator.calls == 2


def test_a_task_completed_with_fewer_images_gives_back_the_rest_once(service, capsys, simulator, faults):  # noqa: F811
    key = service.key_script("create", "web-backend", capsys=capsys)
    token = service.mint(key, max_images=3)["token"]
    token_id = token_id_of(token)
    task_id, job = async_task(service, token, 2)
    worker = service.stack.worker()
    faults.crash(worker.service.store.s3, "PutObject", when=lambda call: call.url_path.endswith("/1.png"))
    with pytest.raises(Crash):
        service.stack.run_worker([job])
    faults.clear()
    service.stack.task_table.update_item(  # the dead delivery's claim lapses
        Key={"id": task_id}, UpdateExpression="SET claimed_until = :t", ExpressionAttributeValues={":t": 1}
    )
    assert service.counted(token_id) == 2

    assert service.stack.run_worker([delivery(job, 2)]) == []

    view = service.request(key, "GET", f"/v1/images/tasks/{task_id}").body
    assert (view["status"], len(view["result"]["data"])) == ("completed", 1), view
    image = Image.open(
        io.BytesIO(service.stack.s3.get_object(Bucket=BUCKET, Key=key_of(view["image_url"]))["Body"].read())
    )
    assert image.size == (1024, 1024)
    assert service.counted(token_id) == 1  # the image it did not make is given back
    assert service.stack.run_worker([delivery(job, 3)]) == []
    assert service.counted(token_id) == 1  # once
    assert service.request(token, "POST", "/v1/images/generations", {**GENERATION, "n": 2}).status == 200
    assert service.request(token, "POST", "/v1/images/generations", GENERATION).status == 429
    assert simulator.calls == 2


def test_a_task_whose_images_were_made_but_not_stored_keeps_them_counted(service, capsys, simulator, faults):  # noqa: F811
    key = service.key_script("create", "web-backend", capsys=capsys)
    token = service.mint(key, max_images=2)["token"]
    task_id, job = async_task(service, token, 2)
    worker = service.stack.worker()
    worker.service.sleep = lambda _seconds: None
    faults.refuse(worker.service.store.s3, "PutObject", times=10**6)

    assert service.stack.run_worker([job]) == []

    view = service.request(key, "GET", f"/v1/images/tasks/{task_id}").body
    assert (view["status"], view["error"]["code"]) == ("failed", "storage_unavailable"), view
    assert simulator.calls == 1  # billed
    assert service.counted(token_id_of(token)) == 2


class AtomicUpdates:
    """DynamoDB applies each conditional update to an item atomically; moto's in-process backend does not when
    threads race, so its calls are taken one at a time here, as DynamoDB would."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self._lock = threading.Lock()

    def update_item(self, **kwargs: Any) -> Any:
        with self._lock:
            return self._real.update_item(**kwargs)


def test_concurrent_requests_never_pass_max_images(service, capsys, simulator):
    from imagecore.accounts.token_usage import TokenImageCounter

    key = service.key_script("create", "web-backend", capsys=capsys)
    token = service.mint(key, max_images=3)["token"]
    deps = service.stack.generations.deps()
    deps.admission.token_images = TokenImageCounter(
        service.usage_table, region=REGION, client=AtomicUpdates(boto3.client("dynamodb", region_name=REGION))
    )
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        reply = service.request(token, "POST", "/v1/images/generations", GENERATION)
        with lock:
            statuses.append(reply.status)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 200, 200, 429, 429, 429]
    assert simulator.calls == 3
    assert service.counted(token_id_of(token)) == 3


# --- what a key owns ------------------------------------------------------------------------------------------------


def test_a_new_key_under_a_revoked_name_owns_nothing_of_the_old(service, capsys, simulator):
    old = service.key_script("create", "ios-app", capsys=capsys)
    task = service.request(old, "POST", "/v1/images/generations/async", GENERATION)
    assert task.status == 202, task.body
    service.stack.run_worker()
    upload = service.request(old, "POST", "/v1/uploads", {"content_type": "image/png", "bytes": len(png())})
    assert upload.status == 200, upload.body
    _post_upload(service, upload.body)
    edit_body = {"images": [{"upload_id": upload.body["id"]}], "prompt": "p"}
    assert service.request(old, "POST", "/v1/images/edits", edit_body).status == 200
    replayed = {"Idempotency-Key": "same-key-same-request"}
    first = service.request(old, "POST", "/v1/images/generations", GENERATION, headers=replayed)
    assert first.status == 200, first.body
    replay = service.request(old, "POST", "/v1/images/generations", GENERATION, headers=replayed)
    assert stored_keys(replay) == stored_keys(first)  # the same images (with fresh URLs)
    task_path = f"/v1/images/tasks/{task.body['id']}"
    assert service.request(old, "GET", task_path).status == 200
    calls = simulator.calls

    service.key_script("revoke", "ios-app", capsys=capsys)
    new = service.key_script("create", "ios-app", capsys=capsys)
    assert service.request(old, "GET", task_path).status == 401

    # the same name, another key: none of the old key's tasks, uploads or replays
    gone = service.request(new, "GET", task_path)
    assert gone.status == 404
    assert gone.body["error"]["code"] == "task_not_found"
    edit = service.request(new, "POST", "/v1/images/edits", edit_body)
    assert edit.status == 404, edit.body
    assert edit.body["error"]["param"] is not None
    fresh = service.request(new, "POST", "/v1/images/generations", GENERATION, headers=replayed)
    assert fresh.status == 200
    assert set(stored_keys(fresh)).isdisjoint(stored_keys(first))
    assert simulator.calls == calls + 1  # not the old answer: a run of its own


def stored_keys(reply: Reply) -> list[str]:
    return [image["url"].split("?", 1)[0] for image in reply.body["data"]]


def _bucket_key(url: str) -> dict[str, str]:
    return {"Bucket": BUCKET, "Key": key_of(url)}


def _post_upload(service: Service, ticket: dict[str, Any]) -> None:
    service.stack.s3.put_object(Bucket=BUCKET, Key=ticket["fields"]["key"], Body=png(), ContentType="image/png")


def test_the_secret_never_holds_a_key_or_an_owner_that_could_be_reused(service, capsys):
    key = service.key_script("create", "ios-app", capsys=capsys)
    current = service.secrets.get_secret_value(SecretId=service.secret_arn, VersionStage="AWSCURRENT")
    document = json.loads(current["SecretString"])
    assert key not in json.dumps(document)
    assert set(document["keys"][0]) == {"id", "sha256"}  # the owner is derived, never written down
