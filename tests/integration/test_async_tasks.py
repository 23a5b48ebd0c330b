"""Async tasks end to end, in-process: submit through the generations/edits handlers, run the worker on the SQS
event built from what is really on the jobs queue, poll through the tasks handler, download from S3.

moto serves S3, DynamoDB, SQS and EventBridge (the template's resources, made here); the upstream simulator
runs on a real HTTP port. ``Stack`` (below) is shared with test_worker.py and test_idempotency.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import boto3
import httpx
import pytest
from PIL import Image

from imagecore.tasks import TASK_LIMIT_SECONDS, TASK_OBJECT, TASK_TTL_SECONDS
from local.poller import sqs_record
from tests.conftest import FakeLambdaContext, owner_of_key_id
from tests.integration.conftest import BUCKET, set_function_env

KEY_ID = "key_test0000001"
OTHER_KEY_ID = "key_other000002"
REGION = "us-east-1"
HOST = "abcdef1234.execute-api.us-east-1.amazonaws.com"
TASKS_TABLE = "image-service-test-tasks"
IDEMPOTENCY_TABLE = "image-service-test-idempotency"
BUS = "image-service-test-images"


# --- the stack ---------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]  # lower-case names
    raw: dict[str, Any]


def reply_of(response: dict[str, Any]) -> Reply:
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        if values:
            headers.setdefault(name.lower(), values[-1])
    body = json.loads(response["body"]) if response.get("body") else {}
    return Reply(response["statusCode"], body, headers, response)


def png(size: tuple[int, int] = (256, 256), color: tuple[int, ...] = (200, 80, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def rgba_mask(size: tuple[int, int] = (256, 256)) -> bytes:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def multipart(fields: dict[str, Any], files: list[tuple[str, tuple[str, bytes, str]]]) -> tuple[bytes, str]:
    """A real multipart encoding (httpx's, as the openai SDK sends it); a new random boundary every time."""
    request = httpx.Request("POST", "http://x", data=fields, files=files)
    return request.read(), request.headers["content-type"]


def key_of(url: str) -> str:
    return urlparse(url).path.lstrip("/")


class Stack:
    """The template's async resources on moto, the functions' environment, and ways to call every function."""

    def __init__(self, s3: Any, simulator: Any, monkeypatch: pytest.MonkeyPatch, api_event: Any) -> None:
        from functions.edits import app as edits
        from functions.generations import app as generations
        from functions.tasks import app as tasks
        from functions.uploads import app as uploads
        from functions.worker import app as worker

        self.s3 = s3
        self.simulator = simulator
        self._api_event = api_event
        self.generations, self.edits, self.tasks, self.uploads, self.worker_app = (
            generations,
            edits,
            tasks,
            uploads,
            worker,
        )
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.events_client = boto3.client("events", region_name=REGION)
        self.dynamodb = boto3.resource("dynamodb", region_name=REGION)
        for name in (TASKS_TABLE, IDEMPOTENCY_TABLE):
            self.dynamodb.create_table(
                TableName=name,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            )
        self.task_table = self.dynamodb.Table(TASKS_TABLE)
        self.idempotency_table = self.dynamodb.Table(IDEMPOTENCY_TABLE)
        self.dlq_url = self.sqs.create_queue(QueueName="jobs-dlq")["QueueUrl"]
        self.jobs_url = self.sqs.create_queue(
            QueueName="jobs",
            Attributes={
                "VisibilityTimeout": "660",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": self._arn(self.dlq_url), "maxReceiveCount": "5"}),
            },
        )["QueueUrl"]
        self.jobs_arn = self._arn(self.jobs_url)
        self.observer_url = self.sqs.create_queue(QueueName="observer")["QueueUrl"]
        self.events_client.create_event_bus(Name=BUS)
        # The template's rule: ImageGenerationRequested events become jobs.
        self.events_client.put_rule(
            Name="requested", EventBusName=BUS, EventPattern=json.dumps({"detail-type": ["ImageGenerationRequested"]})
        )
        self.events_client.put_targets(
            Rule="requested", EventBusName=BUS, Targets=[{"Id": "jobs", "Arn": self.jobs_arn}]
        )
        # The observer: every event the service publishes, copied to a queue the tests read.
        self.events_client.put_rule(
            Name="observer", EventBusName=BUS, EventPattern=json.dumps({"source": ["image-service"]})
        )
        self.events_client.put_targets(
            Rule="observer", EventBusName=BUS, Targets=[{"Id": "observer", "Arn": self._arn(self.observer_url)}]
        )
        set_function_env(
            monkeypatch,
            simulator.url,
            TASKS_TABLE=TASKS_TABLE,
            JOBS_QUEUE_URL=self.jobs_url,
            IDEMPOTENCY_TABLE=IDEMPOTENCY_TABLE,
            EVENT_BUS_NAME=BUS,
            DEAD_LETTER_QUEUE_URL=self.dlq_url,
        )
        self.clear()

    def clear(self) -> None:
        """Every function cold again: their cached dependencies read the environment anew."""
        self.generations.runtime.cache_clear()
        self.edits.runtime.cache_clear()
        self.edits.upload_store.cache_clear()
        self.tasks.stores.cache_clear()
        self.worker_app.worker.cache_clear()
        self.uploads.settings.cache_clear()
        self.uploads.idempotency.cache_clear()
        self.uploads.upload_store.cache_clear()

    def _arn(self, url: str) -> str:
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    # --- the API ---------------------------------------------------------------------------------------------
    def event(
        self,
        path: str,
        *,
        method: str = "POST",
        body: Any = None,
        raw_body: str | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        key_id: str | None = KEY_ID,
        base64_encoded: bool = False,
        path_parameters: dict[str, str] | None = None,
        resource: str | None = None,
    ) -> dict[str, Any]:
        """An API Gateway REST proxy event for ``path``, built from events/generations.json."""
        all_headers = {
            "Authorization": "Bearer isk-example-not-a-real-key",
            "Host": HOST,
            "User-Agent": "OpenAI/Python 3.51.0",
            "X-Forwarded-Proto": "https",
            **({"Content-Type": content_type} if method == "POST" else {}),
            **(headers or {}),
        }
        event = self._api_event("generations", body=body, raw_body=raw_body, headers=all_headers, key_id=key_id)
        if method != "POST":
            event["body"] = None
        event["path"] = path
        event["resource"] = resource or path
        event["httpMethod"] = method
        event["pathParameters"] = path_parameters
        context = event["requestContext"]
        context["resourcePath"] = resource or path
        context["httpMethod"] = method
        context["path"] = "/prod" + path
        event["isBase64Encoded"] = base64_encoded
        return event

    def call(self, module: Any, event: dict[str, Any]) -> Reply:
        return reply_of(module.lambda_handler(event, FakeLambdaContext()))

    def post(self, path: str, body: Any, **options: Any) -> Reply:
        module = {
            "/v1/images/generations": self.generations,
            "/v1/images/generations/async": self.generations,
            "/v1/images/edits": self.edits,
            "/v1/images/edits/async": self.edits,
            "/v1/uploads": self.uploads,
        }[path]
        return self.call(module, self.event(path, body=body, **options))

    def post_multipart(
        self, path: str, fields: dict[str, Any], files: list[tuple[str, tuple[str, bytes, str]]], **options: Any
    ) -> Reply:
        data, content_type = multipart(fields, files)
        event = self.event(
            path,
            raw_body=base64.b64encode(data).decode("ascii"),
            content_type=content_type,
            base64_encoded=True,
            **options,
        )
        return self.call(self.edits, event)

    def get_task(self, task_id: str, *, key_id: str = KEY_ID) -> Reply:
        event = self.event(
            f"/v1/images/tasks/{task_id}",
            method="GET",
            key_id=key_id,
            path_parameters={"id": task_id},
            resource="/v1/images/tasks/{id}",
        )
        return self.call(self.tasks, event)

    # --- the jobs queue and the worker -------------------------------------------------------------------------
    def receive(self, url: str, *, limit: int = 10) -> list[dict[str, Any]]:
        return self.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=limit,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            VisibilityTimeout=0,
        ).get("Messages", [])

    def jobs(self) -> list[dict[str, Any]]:
        return self.receive(self.jobs_url)

    def send_job(self, body: str) -> dict[str, Any]:
        """Put ``body`` on the jobs queue and take it off again as the event source mapping would."""
        sent = self.sqs.send_message(QueueUrl=self.jobs_url, MessageBody=body)["MessageId"]
        (message,) = [message for message in self.jobs() if message["MessageId"] == sent]
        self.sqs.delete_message(QueueUrl=self.jobs_url, ReceiptHandle=message["ReceiptHandle"])
        return message

    def record(self, message: dict[str, Any]) -> dict[str, Any]:
        """One record of the SQS event Lambda's event source mapping delivers."""
        return sqs_record(message, self.jobs_arn, REGION)

    def run_worker(self, messages: list[dict[str, Any]] | None = None) -> list[str]:
        """Hand the worker one SQS event (by default: everything on the jobs queue, then deleted as the event
        source mapping would after success); returns the message ids it reported in batchItemFailures."""
        taken = messages if messages is not None else self.jobs()
        assert taken, "nothing to run"
        event = {"Records": [self.record(message) for message in taken]}
        context = FakeLambdaContext(
            function_name="WorkerFunction",
            invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:WorkerFunction",
            log_group_name="/aws/lambda/WorkerFunction",
            remaining_ms=600_000,
        )
        answer = self.worker_app.lambda_handler(event, context)
        failed = [item["itemIdentifier"] for item in answer.get("batchItemFailures", [])]
        if messages is None:
            for message in taken:
                if message["MessageId"] not in failed:
                    self.sqs.delete_message(QueueUrl=self.jobs_url, ReceiptHandle=message["ReceiptHandle"])
        return failed

    def worker(self) -> Any:
        """The worker instance the function runs with (its service, store and clients)."""
        return self.worker_app.worker()

    # --- what came out ------------------------------------------------------------------------------------------
    def published(self) -> list[dict[str, Any]]:
        """The events the service put on the bus (copied to the observer queue), oldest first, each read once."""
        seen = []
        while batch := self.receive(self.observer_url):
            for message in batch:
                seen.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.observer_url, ReceiptHandle=message["ReceiptHandle"])
        return sorted(seen, key=lambda event: event["time"])

    def dead_letters(self) -> list[dict[str, Any]]:
        return self.receive(self.dlq_url)

    def task_item(self, task_id: str) -> dict[str, Any] | None:
        return self.task_table.get_item(Key={"id": task_id}, ConsistentRead=True).get("Item")

    def task_items(self) -> list[dict[str, Any]]:
        return self.task_table.scan()["Items"]

    def image(self, key: str) -> Image.Image:
        image = Image.open(io.BytesIO(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()))
        image.load()
        return image

    def stored_keys(self, prefix: str = "images/") -> list[str]:
        return sorted(o["Key"] for o in self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


@pytest.fixture
def stack(aws: Any, simulator: Any, monkeypatch: pytest.MonkeyPatch, api_event: Any) -> Iterator[Stack]:
    made = Stack(aws, simulator, monkeypatch, api_event)
    yield made
    made.clear()


def submit_generation(stack: Stack, body: dict[str, Any] | None = None, **options: Any) -> Reply:
    return stack.post(
        "/v1/images/generations/async", body or {"prompt": "a lighthouse", "size": "1536x1024"}, **options
    )


# --- submit, run, poll, download -----------------------------------------------------------------------------


def test_async_generation_submit_poll_and_download(stack, simulator, log_tap):
    before = int(time.time())
    submitted = submit_generation(stack, {"prompt": "a lighthouse at dawn", "size": "1536x1024", "quality": "low"})

    assert submitted.status == 202, submitted.body
    task = submitted.body
    task_id = task["id"]
    assert task_id.startswith("task_")
    poll_url = f"https://{HOST}/prod/v1/images/tasks/{task_id}"
    assert task == {
        "id": task_id,
        "task_id": task_id,
        "object": TASK_OBJECT,
        "status": "processing",
        "created_at": task["created_at"],
        "expires_at": task["created_at"] + TASK_TTL_SECONDS,
        "poll_url": poll_url,
    }
    assert before <= task["created_at"] <= int(time.time())
    assert submitted.headers["location"] == poll_url
    assert submitted.headers["retry-after"] == "3"
    assert submitted.headers["cache-control"] == "no-store"
    # Only queued: one job naming the task, nothing asked of the upstream yet.
    assert simulator.calls == 0
    (job,) = stack.jobs()
    assert json.loads(job["Body"]) == {"task_id": task_id}
    item = stack.task_item(task_id)
    assert (item["status"], item["owner"], item["kind"]) == ("processing", owner_of_key_id(KEY_ID), "generation")

    polled = stack.get_task(task_id)
    assert polled.status == 200
    assert polled.body["status"] == "processing"
    assert "http_status" not in polled.body and "result" not in polled.body
    assert polled.headers["cache-control"] == "no-store"

    assert stack.run_worker([job]) == []
    assert simulator.calls == 1

    done = stack.get_task(task_id)
    assert done.status == 200, done.body
    assert done.headers["cache-control"] == "no-store"
    view = done.body
    assert (view["id"], view["status"], view["http_status"]) == (task_id, "completed", 200)
    assert view["created_at"] == task["created_at"]
    assert view["created_at"] <= view["completed_at"] <= int(time.time())
    result = view["result"]
    assert set(result) == {"created", "data", "model", "size", "quality", "output_format", "background", "usage"}
    assert (result["model"], result["size"], result["quality"], result["output_format"]) == (
        "gpt-image-2",
        "1536x1024",
        "low",
        "png",
    )
    assert result["usage"]["total_tokens"] > 0
    (item,) = result["data"]
    assert set(item) == {"url", "revised_prompt"}  # the sync shape with URLs: never b64_json
    assert view["image_url"] == item["url"]
    image = stack.image(key_of(view["image_url"]))
    assert (image.format, image.size) == ("PNG", (1536, 1024))
    assert key_of(view["image_url"]).endswith(f"/{task_id}/0.png")

    submit_line = stack_line(log_tap, "generations")
    assert (submit_line["status"], submit_line["task_id"], submit_line["attempts"]) == (202, task_id, 0)
    (job_line,) = log_tap.records("image job")
    job_line = job_line["request"]
    assert (job_line["operation"], job_line["task_id"], job_line["status"], job_line["outcome"]) == (
        "worker.task",
        task_id,
        200,
        "success",
    )
    assert job_line["owner_id"] == owner_of_key_id(KEY_ID)  # the key behind the task, by owner
    assert "a lighthouse at dawn" not in log_tap.text


def stack_line(log_tap: Any, operation: str) -> dict[str, Any]:
    lines = [line["request"] for line in log_tap.records() if line["request"]["operation"].startswith(operation)]
    assert lines, f"no {operation} line"
    return lines[0]


def test_each_poll_presigns_afresh_and_the_task_is_still_there(stack):
    task_id = submit_generation(stack).body["id"]
    stack.run_worker()
    first, second = stack.get_task(task_id).body, stack.get_task(task_id).body
    assert key_of(first["image_url"]) == key_of(second["image_url"])
    assert first["completed_at"] == second["completed_at"]


def test_only_the_submitting_key_may_read_a_task(stack):
    task_id = submit_generation(stack).body["id"]
    stack.run_worker()

    for answer in (
        stack.get_task(task_id, key_id=OTHER_KEY_ID),
        stack.get_task("task_" + "0" * 32),
        stack.get_task("not-a-task-id"),
    ):
        assert answer.status == 404, answer.body
        assert answer.body["error"]["code"] == "task_not_found"
        assert answer.body["error"]["type"] == "invalid_request_error"
        assert answer.headers["cache-control"] == "no-store"
        assert "result" not in answer.body
    # Another key's 404 says nothing that the unknown id's does not.
    other = stack.get_task(task_id, key_id=OTHER_KEY_ID).body["error"]
    unknown = stack.get_task("task_" + "0" * 32).body["error"]
    assert other["code"] == unknown["code"] and other["type"] == unknown["type"]
    assert stack.get_task(task_id).body["status"] == "completed"


def test_an_upstream_refusal_fails_the_task_with_its_status_and_error(stack, simulator, log_tap):
    simulator.queue_faults(
        {
            "status": 400,
            "error": {
                "message": "Your request was rejected by the safety system.",
                "type": "image_generation_user_error",
                "code": "moderation_blocked",
            },
        }
    )
    task_id = submit_generation(stack).body["id"]
    assert stack.run_worker() == []  # a refusal is an answer: the job is done with

    view = stack.get_task(task_id)
    assert view.status == 200
    assert view.headers["cache-control"] == "no-store"
    assert (view.body["status"], view.body["http_status"]) == ("failed", 400)
    assert view.body["error"]["code"] == "moderation_blocked"
    assert view.body["error"]["message"] == "Your request was rejected by the safety system."
    assert "result" not in view.body and "image_url" not in view.body
    assert view.body["completed_at"] >= view.body["created_at"]
    assert simulator.calls == 1
    (failure_key,) = stack.stored_keys()  # no image: only the failure, for a redelivery to finish from
    assert failure_key.endswith(f"{task_id}/failure.json")
    line = log_tap.records("image job")[0]["request"]
    assert (line["status"], line["outcome"], line["error_code"]) == (400, "failed", "moderation_blocked")


def test_an_exhausted_upstream_fails_the_task_as_a_502(stack, simulator):
    simulator.queue_faults({"status": 500}, {"status": 500}, {"status": 500})
    task_id = submit_generation(stack).body["id"]
    assert stack.run_worker() == []
    view = stack.get_task(task_id).body
    assert (view["status"], view["http_status"], view["error"]["code"]) == ("failed", 502, "upstream_error")
    assert simulator.calls == 3


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "p", "size": "1000x1000"}, "size"),
        ({"prompt": "p", "size": "1024x1024", "stream": True}, "stream"),
        ({"size": "1024x1024"}, "prompt"),
    ],
)
def test_a_bad_submit_is_a_400_and_makes_no_task(stack, simulator, body, param):
    answer = submit_generation(stack, body)
    assert answer.status == 400, answer.body
    assert answer.body["error"]["param"] == param
    assert answer.headers["cache-control"] == "no-store"
    assert stack.task_items() == []
    assert stack.jobs() == []
    assert simulator.calls == 0


def test_async_edit_with_two_images_and_a_mask(stack, simulator):
    first, second, mask = png(), png((320, 200), (10, 160, 90)), rgba_mask()
    fields = {"prompt": "put both on one table", "size": "1024x1536", "quality": "low", "n": "1"}
    files = [
        ("image[]", ("first.png", first, "image/png")),
        ("image[]", ("second.png", second, "image/png")),
        ("mask", ("mask.png", mask, "image/png")),
    ]

    submitted = stack.post_multipart("/v1/images/edits/async", fields, files)

    assert submitted.status == 202, submitted.body
    task_id = submitted.body["id"]
    assert submitted.body["status"] == "processing"
    assert submitted.headers["location"] == f"https://{HOST}/prod/v1/images/tasks/{task_id}"
    assert submitted.headers["retry-after"] == "3"
    assert simulator.calls == 0
    assert stack.task_item(task_id)["kind"] == "edit"

    assert stack.run_worker() == []

    view = stack.get_task(task_id).body
    assert (view["status"], view["http_status"]) == ("completed", 200), view
    image = stack.image(key_of(view["image_url"]))
    assert (image.format, image.size) == ("PNG", (1024, 1536))
    assert simulator.calls == 1
    sent = simulator.last_request
    assert sent["path"].endswith("/images/edits")
    assert [(p["name"], p["filename"], p["content_type"], p["sha256"]) for p in sent["files"]] == [
        ("image[]", "first.png", "image/png", sha256(first)),
        ("image[]", "second.png", "image/png", sha256(second)),
        ("mask", "mask.png", "image/png", sha256(mask)),
    ]
    assert (sent["form"]["prompt"], sent["form"]["size"], sent["form"]["quality"]) == (
        "put both on one table",
        "1024x1536",
        "low",
    )


def test_a_bad_async_edit_is_a_400_and_makes_no_task(stack, simulator):
    answer = stack.post_multipart(
        "/v1/images/edits/async",
        {"prompt": "p", "size": "1024x1024"},
        [("image[]", ("a.png", b"not an image at all", "image/png"))],
    )
    assert answer.status == 400, answer.body
    assert answer.body["error"]["code"] == "invalid_image_format"
    assert stack.task_items() == []
    assert stack.jobs() == []
    assert simulator.calls == 0


def test_a_task_past_its_time_limit_reads_failed_and_the_worker_fails_it_without_the_upstream(stack, simulator):
    task_id = submit_generation(stack).body["id"]
    long_ago = int(time.time()) - TASK_LIMIT_SECONDS - 60
    stack.task_table.update_item(
        Key={"id": task_id}, UpdateExpression="SET created_at = :t", ExpressionAttributeValues={":t": long_ago}
    )

    view = stack.get_task(task_id).body
    assert stack.task_item(task_id)["status"] == "processing"  # nobody wrote so: it only reads as failed
    assert (view["status"], view["http_status"], view["error"]["code"]) == ("failed", 504, "task_timeout")
    assert view["error"]["type"] == "upstream_error"
    assert "30 minutes" in view["error"]["message"]

    assert stack.run_worker() == []

    assert simulator.calls == 0
    item = stack.task_item(task_id)
    assert (item["status"], int(item["http_status"])) == ("failed", 504)
    assert json.loads(item["error"])["code"] == "task_timeout"
    view = stack.get_task(task_id).body
    assert (view["status"], view["http_status"], view["error"]["code"]) == ("failed", 504, "task_timeout")
    assert view["completed_at"] >= long_ago
    assert stack.stored_keys() == []


def test_a_task_whose_job_cannot_be_queued_is_a_503_and_is_failed_not_left_processing(stack, simulator, monkeypatch):
    from botocore.exceptions import ClientError

    queue = stack.generations.runtime().submitter.queue

    def refuse(**_kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "SendMessage")

    monkeypatch.setattr(queue._sqs, "send_message", refuse)
    answer = submit_generation(stack)

    assert answer.status == 503, answer.body
    assert answer.body["error"]["code"] == "tasks_unavailable"
    (item,) = stack.task_items()
    assert (item["status"], int(item["http_status"])) == ("failed", 503)
    assert json.loads(item["error"])["code"] == "queue_unavailable"
    assert simulator.calls == 0


def test_async_edit_of_uploaded_images(stack, simulator):
    from imagecore.storage import owner_prefix

    image, mask = png((512, 512), (30, 60, 90)), rgba_mask((512, 512))
    ids = []
    for name, data in (("photo.png", image), ("mask.png", mask)):
        upload_id = "upl_" + sha256(name.encode())[:32]
        stack.s3.put_object(
            Bucket=BUCKET,
            Key=owner_prefix(owner_of_key_id(KEY_ID)) + upload_id,
            Body=data,
            ContentType="image/png",
            Metadata={"filename": name},
        )
        ids.append(upload_id)

    submitted = stack.post(
        "/v1/images/edits/async",
        {
            "prompt": "make it night",
            "size": "1024x1024",
            "images": [{"upload_id": ids[0]}],
            "mask": {"upload_id": ids[1]},
        },
    )
    assert submitted.status == 202, submitted.body
    # Another key cannot name these uploads: a 404, and no task.
    other = stack.post(
        "/v1/images/edits/async",
        {"prompt": "make it night", "images": [{"upload_id": ids[0]}]},
        key_id=OTHER_KEY_ID,
    )
    assert other.status == 404, other.body
    assert len(stack.task_items()) == 1

    assert stack.run_worker() == []

    view = stack.get_task(submitted.body["id"]).body
    assert (view["status"], view["http_status"]) == ("completed", 200), view
    assert stack.image(key_of(view["image_url"])).size == (1024, 1024)
    sent = simulator.last_request["files"]
    assert [(p["name"], p["filename"], p["sha256"]) for p in sent] == [
        ("image[]", "photo.png", sha256(image)),
        ("mask", "mask.png", sha256(mask)),
    ]
    assert simulator.calls == 1
