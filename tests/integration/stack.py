"""The template's async resources on moto (made by ``local/resources.py``), the functions' environment, and ways to
call every function through its real lambda_handler: shared by the async, worker and idempotency tests."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from PIL import Image

from local.context import LambdaContext
from local.poller import sqs_record
from local.resources import LocalResources
from tests.helpers import multipart
from tests.integration.environment import BUCKET, REGION, current_resources, set_function_env

KEY_ID = "key_test0000001"
OTHER_KEY_ID = "key_other000002"
HOST = "abcdef1234.execute-api.us-east-1.amazonaws.com"


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


class Stack:
    """The template's async resources on moto, the functions' environment, and ways to call every function."""

    def __init__(
        self, s3: Any, simulator: Any, monkeypatch: pytest.MonkeyPatch, api_event: Any, clients: Any = None
    ) -> None:
        from functions.edits import app as edits
        from functions.edits_async import app as edits_async
        from functions.generations import app as generations
        from functions.generations_async import app as generations_async
        from functions.tasks import app as tasks
        from functions.uploads import app as uploads
        from functions.worker import app as worker

        self.s3 = s3
        self.simulator = simulator
        self._api_event = api_event
        self.generations, self.generations_async, self.edits, self.edits_async = (
            generations,
            generations_async,
            edits,
            edits_async,
        )
        self.tasks, self.uploads, self.worker_app = tasks, uploads, worker
        resources: LocalResources = current_resources()
        self.resources = resources
        # the test's own clients: given (the module's), or made here
        self.sqs = clients.sqs if clients else boto3.client("sqs", region_name=REGION)
        self.events_client = clients.events if clients else boto3.client("events", region_name=REGION)
        self.dynamodb = clients.tables if clients else boto3.resource("dynamodb", region_name=REGION)
        self.task_table = self.dynamodb.Table(resources.tasks_table)
        self.idempotency_table = self.dynamodb.Table(resources.idempotency_table)
        self.jobs_url = resources.jobs_queue_url
        self.dlq_url = resources.dead_letter_queue_url
        self.jobs_arn = self._arn(self.jobs_url)
        # Every event the service publishes is copied to this queue (the local stack's completions rule).
        self.observer_url = resources.completions_queue_url
        # Every function's variables at once, as the local stack sets them.
        set_function_env(monkeypatch, simulator.url)
        self.clear()

    def clear(self) -> None:
        """Every function cold again: their cached dependencies read the environment anew."""
        self.generations.deps.cache_clear()
        self.generations_async.deps.cache_clear()
        self.edits.deps.cache_clear()
        self.edits.upload_store.cache_clear()
        self.edits_async.deps.cache_clear()
        self.edits_async.upload_store.cache_clear()
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
        return reply_of(module.lambda_handler(event, LambdaContext(remaining_ms=330_000)))

    def function_of(self, path: str) -> Any:
        """The function module a POST to ``path`` reaches, as the template routes it."""
        return {
            "/v1/images/generations": self.generations,
            "/v1/images/generations/async": self.generations_async,
            "/v1/images/edits": self.edits,
            "/v1/images/edits/async": self.edits_async,
            "/v1/uploads": self.uploads,
        }[path]

    def post(self, path: str, body: Any, **options: Any) -> Reply:
        return self.call(self.function_of(path), self.event(path, body=body, **options))

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
        return self.call(self.function_of(path), event)

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
        context = LambdaContext("WorkerFunction", 3008, remaining_ms=600_000)
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


def submit_generation(stack: Stack, body: dict[str, Any] | None = None, **options: Any) -> Reply:
    return stack.post(
        "/v1/images/generations/async", body or {"prompt": "a lighthouse", "size": "1536x1024"}, **options
    )
