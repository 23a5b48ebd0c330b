"""Webhooks in-process on moto: a task's end is its delivery's record (the tasks table's stream), the webhook
function queues and makes each attempt, a receiver on a real loopback port verifies every delivery with the
reference Standard Webhooks library. Faults are injected where the design says nothing is lost or doubled: a
crash right after the end, a queue that refuses, a worker message or a stream record delivered twice."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from standardwebhooks import Webhook

from imagecore.jobs.tasks import TaskStore
from local.context import LambdaContext
from local.poller import sqs_record
from local.streams import stream_record
from tests.integration.environment import REGION
from tests.integration.stack import KEY_ID, Stack, reply_of, submit_generation

# --- a receiver, the stream and the queue ------------------------------------------------------------------------


@dataclass
class Receiver:
    """An HTTP receiver on 127.0.0.1 answering the statuses in ``answers`` (then 204), keeping what came."""

    answers: list[int] = field(default_factory=list)
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.answers.pop(0) if receiver.answers else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), made.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    made.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/images?source=test"
    yield made
    server.shutdown()
    server.server_close()


class Hooks:
    """The webhook function, fed as its event sources would: the tasks table's stream and the webhooks queue."""

    def __init__(self, stack: Stack) -> None:
        from functions.webhook_secrets import app as secrets_app
        from functions.webhooks import app as webhooks_app

        self.stack, self.app, self.secrets_app = stack, webhooks_app, secrets_app
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.queue_url = stack.resources.webhooks_queue_url
        self.queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.streams = boto3.client("dynamodbstreams", region_name=REGION)
        table = boto3.client("dynamodb", region_name=REGION).describe_table(TableName=stack.resources.tasks_table)
        self.stream_arn = table["Table"]["LatestStreamArn"]
        shard = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
        self._iterator = self.streams.get_shard_iterator(
            StreamArn=self.stream_arn, ShardId=shard, ShardIteratorType="LATEST"
        )["ShardIterator"]
        self.drain()
        self.clear()

    def clear(self) -> None:
        self.app.deliveries.cache_clear()
        self.secrets_app.secrets.cache_clear()

    def drain(self) -> None:
        while self.messages():
            pass

    def changes(self) -> list[dict[str, Any]]:
        """What the tasks table's stream carried since the last call, as Lambda records."""
        answer = self.streams.get_records(ShardIterator=self._iterator)
        self._iterator = answer["NextShardIterator"]
        return [stream_record(record, self.stream_arn, REGION) for record in answer["Records"]]

    def relay(self, records: list[dict[str, Any]]) -> list[str]:
        """Hand the function a stream batch; the sequence numbers it reported failed."""
        answer = self.app.lambda_handler(
            {"Records": records}, LambdaContext("WebhookFunction", 256, remaining_ms=30_000)
        )
        return [item["itemIdentifier"] for item in answer.get("batchItemFailures", [])]

    def messages(self) -> list[dict[str, Any]]:
        """Take every visible message off the webhooks queue (as the event source mapping would)."""
        taken = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], VisibilityTimeout=0
        ).get("Messages", [])
        for message in taken:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return taken

    def attempt(self, message: dict[str, Any]) -> list[str]:
        event = {"Records": [sqs_record(message, self.queue_arn, REGION)]}
        answer = self.app.lambda_handler(event, LambdaContext("WebhookFunction", 256, remaining_ms=30_000))
        return [item["itemIdentifier"] for item in answer.get("batchItemFailures", [])]

    def run_attempts(self, rounds: int = 20) -> int:
        """Every attempt the queue holds, and those they queue, until it is empty; how many ran."""
        ran = 0
        for _ in range(rounds):
            batch = self.messages()
            if not batch:
                return ran
            for message in batch:
                assert self.attempt(message) == []
                ran += 1
        return ran

    def secret(self, *, rotate: bool = False, key_id: str = KEY_ID, token: dict[str, Any] | None = None) -> Any:
        path = "/v1/webhooks/secret/rotate" if rotate else "/v1/webhooks/secret"
        event = self.stack.event(path, method="POST" if rotate else "GET", key_id=key_id, body={} if rotate else None)
        if token is not None:
            event["requestContext"]["authorizer"].update(token)
            event["requestContext"]["authorizer"]["credential"] = "client_token"
        return reply_of(self.secrets_app.lambda_handler(event, LambdaContext(remaining_ms=10_000)))


@pytest.fixture
def hooks(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hooks]:
    # As the local stack runs them: receivers on loopback, and a schedule short enough to run through here.
    monkeypatch.setenv("WEBHOOK_ALLOW_LOOPBACK", "true")
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE", "0,0,0")
    stack.clear()
    made = Hooks(stack)
    yield made
    made.clear()


def run_task(stack: Stack, body: dict[str, Any]) -> str:
    submitted = submit_generation(stack, body)
    assert submitted.status == 202, submitted.body
    assert stack.run_worker() == []
    return str(submitted.body["id"])


def verified(secret: str, delivery: tuple[dict[str, str], bytes]) -> dict[str, Any]:
    headers, body = delivery
    return dict(Webhook(secret).verify(body, headers))


# --- a task's end, delivered once ---------------------------------------------------------------------------------


def test_a_task_that_ends_is_announced_signed_and_shown_delivered(stack, hooks, receiver, log_tap):
    secret = hooks.secret().body["secret"]
    task_id = run_task(stack, {"prompt": "a lighthouse", "size": "1024x1024", "webhook_url": receiver.url})

    # The write that completed the task is the delivery's record: the stream carries it, nothing else is needed.
    ends = [r for r in hooks.changes() if r["dynamodb"]["NewImage"]["status"]["S"] == "completed"]
    assert len(ends) == 1
    assert hooks.relay(ends) == []
    (queued,) = hooks.messages()
    assert json.loads(queued["Body"])["task_id"] == task_id
    assert json.loads(queued["Body"])["attempt"] == 1
    assert receiver.got == []  # queued, not yet sent

    assert hooks.attempt(queued) == []
    (delivery,) = receiver.got
    payload = verified(secret, delivery)
    headers = delivery[0]
    assert headers["webhook-id"] == f"msg_{task_id}"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
    assert payload["type"] == "image.task.completed"
    assert payload["timestamp"].endswith("Z")
    polled = stack.get_task(task_id).body
    data = payload["data"]
    assert {k: v for k, v in data.items() if k not in ("image_url", "result", "webhook", "expires_at")} == {
        k: v for k, v in polled.items() if k not in ("image_url", "result", "webhook", "expires_at")
    }
    # Fresh presigned URLs of the stored image.
    assert "X-Amz-Signature=" in data["image_url"] and data["image_url"] == data["result"]["data"][0]["url"]
    (key,) = [k for k in stack.stored_keys() if k.endswith(".png")]
    assert key in data["image_url"]
    assert stack.image(key).size == (1024, 1024)
    assert polled["webhook"] == {"status": "delivered", "attempts": 1, "last_status": 204}

    # One log line for the attempt; never the secret, the body or the URL.
    (line,) = log_tap.records("webhook attempt")
    assert (line["task_id"], line["attempt"], line["http_status"], line["webhook_status"]) == (
        task_id,
        1,
        204,
        "delivered",
    )
    assert isinstance(line["latency_ms"], int)
    assert secret not in log_tap.text and secret.removeprefix("whsec_") not in log_tap.text
    assert "source=test" not in log_tap.text and data["image_url"] not in log_tap.text


def test_a_failed_task_is_announced_as_failed(stack, hooks, receiver, simulator):
    secret = hooks.secret().body["secret"]
    simulator.queue_faults(
        {"status": 400, "error": {"message": "refused", "type": "invalid_request_error", "code": "moderation_blocked"}}
    )
    task_id = run_task(stack, {"prompt": "a lighthouse", "webhook_url": receiver.url})
    assert hooks.relay(hooks.changes()) == []
    assert hooks.run_attempts() == 1
    payload = verified(secret, receiver.got[0])
    assert payload["type"] == "image.task.failed"
    assert payload["data"]["status"] == "failed" and payload["data"]["id"] == task_id
    assert payload["data"]["error"]["code"] == "moderation_blocked"
    assert payload["data"]["http_status"] == 400
    assert payload["data"]["error"] == stack.get_task(task_id).body["error"]


def test_a_task_without_a_webhook_makes_no_delivery(stack, hooks, receiver):
    task_id = run_task(stack, {"prompt": "a lighthouse"})
    assert hooks.relay(hooks.changes()) == []
    assert hooks.messages() == []
    assert "webhook" not in stack.get_task(task_id).body


# --- nothing lost, nothing doubled ---------------------------------------------------------------------------


def test_a_crash_right_after_the_end_and_a_queue_that_refuses_lose_nothing(stack, hooks, receiver, aws_faults):
    secret = hooks.secret().body["secret"]
    submitted = submit_generation(stack, {"prompt": "a lighthouse", "webhook_url": receiver.url})
    task_id = submitted.body["id"]
    # The worker ends the task and dies at once (nothing of it runs after the end's write).
    TaskStore(stack.resources.tasks_table, region=REGION).fail(task_id, 502, {"code": "upstream_error"})
    records = hooks.changes()

    # The queue refuses the first attempt: the record is reported failed, the stream hands it again.
    refused = aws_faults.fail("sqs", "SendMessage", times=1)
    hooks.clear()
    assert hooks.relay(records) == [records[-1]["dynamodb"]["SequenceNumber"]]
    assert refused.failed == 1 and hooks.messages() == []
    assert hooks.relay(records) == []
    assert hooks.run_attempts() == 1
    assert verified(secret, receiver.got[0])["data"]["status"] == "failed"
    assert stack.get_task(task_id).body["webhook"]["status"] == "delivered"


def test_a_redelivered_worker_message_or_stream_record_sends_no_second_delivery(stack, hooks, receiver):
    submitted = submit_generation(stack, {"prompt": "a lighthouse", "webhook_url": receiver.url})
    (job,) = stack.jobs()
    assert stack.run_worker([job]) == []
    records = hooks.changes()
    assert hooks.relay(records) == []
    (first,) = hooks.messages()
    # The stream hands the same end twice: two messages for attempt 1; SQS hands the first one twice too.
    assert hooks.relay(records) == []
    (second,) = hooks.messages()
    assert hooks.attempt(first) == []
    assert hooks.attempt(second) == []
    assert hooks.attempt(first) == []
    # The worker's message comes again after the end: it ends nothing, so the stream carries no new end.
    assert stack.run_worker([job]) == []
    assert hooks.relay(hooks.changes()) == []
    assert hooks.messages() == []

    assert len(receiver.got) == 1
    assert stack.get_task(submitted.body["id"]).body["webhook"] == {
        "status": "delivered",
        "attempts": 1,
        "last_status": 204,
    }


def test_the_same_attempt_delivered_again_after_a_crash_is_sent_again(stack, hooks, receiver, aws_faults):
    """An attempt claimed by a message whose run died (here: its outcome could not be recorded) is that message's
    again when SQS hands it back: the delivery is not stuck behind its own claim."""
    run_task(stack, {"prompt": "a lighthouse", "webhook_url": receiver.url})
    hooks.relay(hooks.changes())
    (message,) = hooks.messages()
    aws_faults.fail("dynamodb", "UpdateItem", skip=1, times=1)  # the claim passes, the outcome's write fails
    hooks.clear()
    assert hooks.attempt(message) == [message["MessageId"]]
    assert hooks.attempt(message) == []
    assert len(receiver.got) == 2
    assert receiver.got[0][0]["webhook-id"] == receiver.got[1][0]["webhook-id"]


# --- retries --------------------------------------------------------------------------------------------------


def test_a_failing_receiver_is_tried_on_schedule_then_given_up(stack, hooks, receiver, log_tap, capsys):
    secret = hooks.secret().body["secret"]
    receiver.answers = [500, 503, 410]
    task_id = run_task(stack, {"prompt": "a lighthouse", "webhook_url": receiver.url})
    hooks.relay(hooks.changes())

    assert hooks.run_attempts() == 3  # the schedule's three attempts, then no more
    assert len(receiver.got) == 3
    assert {delivery[0]["webhook-id"] for delivery in receiver.got} == {f"msg_{task_id}"}
    for delivery in receiver.got:
        verified(secret, delivery)
    assert stack.get_task(task_id).body["webhook"] == {"status": "failed", "attempts": 3, "last_status": 410}
    lines = log_tap.records("webhook attempt")
    assert [(line["attempt"], line["http_status"], line["webhook_status"]) for line in lines] == [
        (1, 500, "pending"),
        (2, 503, "pending"),
        (3, 410, "failed"),
    ]
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    names = [m["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] for m in metrics if "_aws" in m]
    assert names.count("WebhooksRetried") == 2 and names.count("WebhooksFailed") == 1
    assert "WebhooksDelivered" not in names


def test_an_unreachable_receiver_shows_the_error_as_its_last_status(stack, hooks, receiver):
    url = receiver.url.replace(receiver.url.split("/")[2], "127.0.0.1:9")  # nothing listens on the discard port
    task_id = run_task(stack, {"prompt": "a lighthouse", "webhook_url": url})
    hooks.relay(hooks.changes())
    assert hooks.run_attempts() == 3
    assert stack.get_task(task_id).body["webhook"] == {
        "status": "failed",
        "attempts": 3,
        "last_status": "connect_error",
    }


def test_a_wait_past_sqs_longest_delay_goes_round_again_without_sending(stack, hooks, receiver, monkeypatch):
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE", "0,7200")
    hooks.clear()
    receiver.answers = [500]
    task_id = run_task(stack, {"prompt": "a lighthouse", "webhook_url": receiver.url})
    hooks.relay(hooks.changes())
    (first,) = hooks.messages()
    assert hooks.attempt(first) == []
    # The second attempt waits 2 hours: SQS holds it 15 minutes, then it comes back early and goes round again.
    attributes = hooks.sqs.get_queue_attributes(QueueUrl=hooks.queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"
    early = {
        "MessageId": "early-1",
        "ReceiptHandle": "r",
        "Body": json.dumps({"task_id": task_id, "attempt": 2, "not_before": int(time.time()) + 7000}),
    }
    assert hooks.attempt(early) == []
    assert len(receiver.got) == 1
    attributes = hooks.sqs.get_queue_attributes(QueueUrl=hooks.queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "2"
    assert stack.get_task(task_id).body["webhook"] == {"status": "pending", "attempts": 1, "last_status": 500}


# --- secrets ----------------------------------------------------------------------------------------------------


def test_the_secret_is_made_once_kept_encrypted_and_rotated_with_a_grace_period(stack, hooks, receiver):
    first = hooks.secret()
    assert first.status == 200 and first.headers["cache-control"] == "no-store"
    assert first.body["secret"].startswith("whsec_") and first.body["previous_valid_until"] is None
    assert hooks.secret().body["secret"] == first.body["secret"]
    item = boto3.client("dynamodb", region_name=REGION).scan(TableName=stack.resources.webhook_secrets_table)["Items"]
    assert len(item) == 1 and first.body["secret"].encode() not in json.dumps(item, default=str).encode()

    rotated = hooks.secret(rotate=True)
    assert rotated.status == 200
    new = rotated.body["secret"]
    assert new != first.body["secret"]
    assert 24 * 3600 - 60 < rotated.body["previous_valid_until"] - time.time() <= 24 * 3600
    assert hooks.secret().body["secret"] == new

    run_task(stack, {"prompt": "a lighthouse", "webhook_url": receiver.url})
    hooks.relay(hooks.changes())
    hooks.run_attempts()
    (delivery,) = receiver.got
    assert len(delivery[0]["webhook-signature"].split(" ")) == 2
    verified(new, delivery)
    verified(first.body["secret"], delivery)


def test_a_client_token_may_not_read_or_rotate_and_its_tasks_are_signed_with_its_parents(stack, hooks, receiver):
    token = {"tokenId": "ctk_test000001", "tokenExpiresAt": str(int(time.time()) + 600), "tokenMaxImages": ""}
    assert hooks.secret(token=token).status == 403
    assert hooks.secret(rotate=True, token=token).status == 403
    parent = hooks.secret().body["secret"]

    event = stack.event("/v1/images/generations/async", body={"prompt": "a lighthouse", "webhook_url": receiver.url})
    event["requestContext"]["authorizer"].update({**token, "credential": "client_token"})
    submitted = stack.call(stack.generations_async, event)
    assert submitted.status == 202, submitted.body
    assert stack.run_worker() == []
    hooks.relay(hooks.changes())
    hooks.run_attempts()
    assert verified(parent, receiver.got[0])["data"]["id"] == submitted.body["id"]


# --- refused URLs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.8/hook",
        "https://[::ffff:169.254.169.254]/",
        "https://[fd00::1]/",
        "http://93.184.215.14/hook",
        "ftp://example.com/",
        "https://u:p@1.1.1.1/",
        "https://1.1.1.1/" + "a" * 2040,
    ],
)
def test_a_refused_url_is_a_400_before_any_task_exists(stack, hooks, url):
    generation = submit_generation(stack, {"prompt": "a lighthouse", "webhook_url": url})
    assert generation.status == 400, generation.body
    assert generation.body["error"]["param"] == "webhook_url"
    from tests.integration.stack import png

    edit = stack.post_multipart(
        "/v1/images/edits/async",
        {"prompt": "make it blue", "webhook_url": url},
        [("image", ("in.png", png(), "image/png"))],
    )
    assert edit.status == 400, edit.body
    assert edit.body["error"]["param"] == "webhook_url"
    assert stack.task_items() == [] and stack.jobs() == []
    assert stack.stored_keys("uploads/") == []


def test_a_synchronous_request_with_a_webhook_is_refused(stack, hooks, receiver):
    answer = stack.post("/v1/images/generations", {"prompt": "a lighthouse", "webhook_url": receiver.url})
    assert answer.status == 400 and answer.body["error"]["param"] == "webhook_url"
