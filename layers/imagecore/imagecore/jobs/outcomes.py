"""How a job ended, as its task record, its claim and its announcement say it: the compact result a task keeps, the
errors of an interrupted, abandoned or unstored job, and what a finished task cost."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.budgets import Spent
from imagecore.jobs.tasks import (
    JobClaim,
)
from imagecore.platform.observability import RequestRecord
from imagecore.storage.manifest import (
    Finished,
    StoredResult,
    folder_of,
    manifest_key,
)

# Beyond this the task record keeps its result without the revised prompts (they can be as long as the prompt,
# one per image) and points at result.json for them: the record stays far below DynamoDB's 400 KB item limit.
TASK_RESULT_INLINE_BYTES = 32_000


def compact_result(stored: StoredResult) -> dict[str, Any]:
    result = stored.to_dict()
    if len(json.dumps(result, ensure_ascii=False).encode("utf-8")) <= TASK_RESULT_INLINE_BYTES:
        return result
    result["images"] = [{"key": ref.key, "revised_prompt": None} for ref in stored.images]
    result["manifest"] = manifest_key(folder_of(stored))
    return result


def spent_of(finished: Finished, record: RequestRecord) -> Spent:
    """What a finished task cost: its stored images and the usage the upstream reported (from this delivery's
    record, or from the result an earlier delivery stored)."""
    if finished.result is None:
        return Spent.from_record(record, failure=str((finished.error or {}).get("code") or "failed"))
    spent = Spent.from_record(record)
    usage = finished.result.usage or record.usage or {}
    return Spent(
        images=len(finished.result.images),
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        upstream_ms=spent.upstream_ms,
    )


def finished_from(claim: JobClaim) -> Finished:
    if claim.status == "completed" and claim.result is not None:
        document = {name: value for name, value in claim.result.items() if name != "manifest"}
        return Finished(result=StoredResult.from_dict(document))
    return Finished(http_status=claim.http_status or 500, error=claim.error or interrupted_error())


def receive_count(record: SQSRecord) -> int:
    try:
        return int(record.attributes.approximate_receive_count or 1)
    except (TypeError, ValueError):
        return 1


def hold_seconds(context: LambdaContext) -> int:
    """How long a claim holds: as long as this invocation can live, so a later delivery never waits on a dead one."""
    return int(context.get_remaining_time_in_millis() / 1000) + 5


def interrupted_error() -> dict[str, Any]:
    return {
        "type": "server_error",
        "code": "job_interrupted",
        "message": "An earlier run of this job stopped after asking the upstream and left no images; "
        "it is not asked twice. Submit the request again.",
    }


def abandoned_error(deliveries: int) -> dict[str, Any]:
    return {
        "type": "server_error",
        "code": "job_abandoned",
        "message": f"The job met passing faults on each of its {deliveries} deliveries and was given up.",
    }


def storage_error() -> dict[str, Any]:
    return {
        "type": "server_error",
        "code": "storage_unavailable",
        "message": "The images were generated but could not be stored.",
    }
