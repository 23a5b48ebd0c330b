"""A function the local gateway's tests run the way the local stack runs the project's: in execution
environments of its own (``local.lambda_runtime``), each a process taking one invocation at a time. It uses
Powertools as the functions do (Logger keys, pending metrics, the event handler's current event) and waits at
a barrier (files in ``LOCAL_FUNCTIONS_BARRIER``) until ``LOCAL_FUNCTIONS_IN_FLIGHT`` invocations are running."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.logging import correlation_paths

from imagecore.platform.observability import logger, metrics, request_record

app = APIGatewayRestResolver()


def _barrier() -> None:
    folder = Path(os.environ["LOCAL_FUNCTIONS_BARRIER"])
    expected = int(os.environ["LOCAL_FUNCTIONS_IN_FLIGHT"])
    (folder / uuid.uuid4().hex).touch()
    deadline = time.monotonic() + 100  # environments starting at once on a small, busy machine
    while len(list(folder.iterdir())) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError("the other invocations never came")
        time.sleep(0.02)


@app.get("/v1/health")
@app.get("/v1/images/tasks/<task_id>")
def answer(task_id: str | None = None) -> dict[str, Any]:
    logger.info("started")
    _barrier()  # every invocation is between its start and its end at once
    event = app.current_event
    with request_record(app.lambda_context.function_name, event.raw_event, event.request_context.request_id) as record:
        record.status = 200
    logger.info("finished")
    return {"task_id": task_id, "path": event.path, "request_id": event.request_context.request_id, "pid": os.getpid()}


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
