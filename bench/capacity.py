"""Memory and cost: each image function's whole-process peak RSS at the worst case the contract allows, and what
1,000 images cost on AWS at list prices.

Each case runs in a fresh process (spawned, so nothing of another case's heap is counted) with the function's
environment from the template, against the bench's servers (moto and the upstream simulator, latency 0, in a
process of their own): the process imports the function as Lambda would, runs the case once, and reports its
peak RSS (``VmHWM``: interpreter, imports and the call, all of it), which is what Lambda's memory size must hold.

- generations: n=10 at 3840x2160 (png), the largest answer the contract allows;
- edits: 16 inputs at the largest accepted size (4096x4096 png, just under the 50 MB cap) plus a mask, from
  uploads (the only way inputs that large arrive);
- worker: the same edit, queued by the async route and run by the worker from its SQS message.

The cost lines take the template's memory sizes, the handler time measured here on top of a fixed upstream
wait, and the list prices in ``PRICES``; ``peaks.json`` keeps the last measured peaks for the template test.
"""

from __future__ import annotations

import copy
import io
import json
import multiprocessing
import os
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cases import ROOT, BenchError

PEAKS_PATH = Path(__file__).resolve().parent / "peaks.json"
EDIT_INPUTS = 16
# What measure() asks the upstream: the n=10 generation, one per cost case and a bare one to time it, an edit
# and the same edit as a task, and the largest Responses request.
UPSTREAM_CALLS = 1 + 2 * 2 + 2 + 1
INPUT_SIDE = 4096  # 16.7 MP, the most pixels an input may have
MIB = 1024 * 1024

# AWS list prices (us-east-1, late 2026), in USD: the one place the cost lines read them from.
PRICES = {
    "lambda_arm64_gb_second": 0.0000133334,
    "lambda_request": 0.20 / 1_000_000,
    "apigateway_rest_request": 3.50 / 1_000_000,
    "s3_put": 0.005 / 1000,
    "s3_get": 0.0004 / 1000,
    "s3_gb_month": 0.023,
    "dynamodb_write_unit": 0.625 / 1_000_000,
    "dynamodb_read_unit": 0.125 / 1_000_000,
    "sqs_request": 0.40 / 1_000_000,
}
# What one synchronous image request does besides its own Lambda time: the authorizer runs (at most) once, the
# budget is reserved and settled and the concurrency lease taken (a read and a write) and given back, the image
# is PUT once and downloaded once through its presigned URL.
AUTHORIZER_MS = 60
DYNAMODB_WRITES_PER_REQUEST = 4
DYNAMODB_READS_PER_REQUEST = 1


@dataclass(frozen=True)
class CostCase:
    key: str
    size: str
    quality: str
    upstream_seconds: float


COST_CASES = (
    CostCase("medium-1024x1024-60s", "1024x1024", "medium", 60.0),
    CostCase("high-3840x2160-180s", "3840x2160", "high", 180.0),
)


# --- the cases, each in its own process -------------------------------------------------------------------------
def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError("/proc/self/status has no VmHWM")


def _event(path: str, body: dict[str, Any]) -> dict[str, Any]:
    event = copy.deepcopy(json.loads((ROOT / "events" / "generations.json").read_text()))
    event["path"] = event["resource"] = event["requestContext"]["resourcePath"] = path
    event["requestContext"]["path"] = path
    event["body"] = json.dumps(body)
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    event["requestContext"]["requestTimeEpoch"] = int(time.time() * 1000)
    return event


def _context(name: str) -> Any:
    from local.context import LambdaContext

    return LambdaContext(function_name=name, timeout_s=600.0)


def _answered(response: dict[str, Any], status: int, what: str) -> dict[str, Any]:
    if response.get("statusCode") != status:
        raise BenchError(f"{what}: answered {response.get('statusCode')}: {str(response.get('body'))[:400]}")
    answer: dict[str, Any] = json.loads(response["body"])
    return answer


def _generation(size: str, quality: str, n: int) -> dict[str, Any]:
    return {"prompt": "capacity bench: a lighthouse", "size": size, "quality": quality, "n": n, "output_format": "png"}


def _quiet(environment: dict[str, str]) -> None:
    """The case process's environment; its log lines and metrics go to /dev/null (results travel back pickled)."""
    import sys

    os.environ.update(environment)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the case process


def _bare_seconds(environment: dict[str, str], request: dict[str, Any]) -> float:
    """How long the upstream (the simulator) takes to answer ``request`` to its last byte, read by a bare client."""
    import httpx

    began = time.perf_counter()
    with httpx.stream(
        "POST",
        environment["UPSTREAM_BASE_URL"] + "/images/generations",
        json={"model": "gpt-image-2", **request},
        headers={"Authorization": f"Bearer {environment['UPSTREAM_API_KEY']}"},
        timeout=300,
    ) as response:
        for _ in response.iter_raw():
            pass
    return time.perf_counter() - began


def _generations_case(environment: dict[str, str]) -> dict[str, Any]:
    _quiet(environment)
    from functions.generations import app

    answer = _answered(
        app.lambda_handler(_event("/v1/images/generations", _generation("3840x2160", "high", 10)), _context("g")),
        200,
        "generations n=10 3840x2160",
    )
    if len(answer["data"]) != 10:
        raise BenchError(f"generations: {len(answer['data'])} images, not 10")
    peak = _peak_mib()
    timings, sizes = {}, {}
    for case in COST_CASES:
        request = _generation(case.size, case.quality, 1)
        began = time.perf_counter()
        answer = _answered(app.lambda_handler(_event("/v1/images/generations", request), _context("g")), 200, case.key)
        # the handler's own time: its whole call less what the upstream itself took to answer
        timings[case.key] = max(0.0, time.perf_counter() - began - _bare_seconds(environment, request))
        sizes[case.key] = _stored_bytes(answer["data"][0]["url"])
    return {"peak": peak, "timings": timings, "sizes": sizes}


def _stored_bytes(url: str) -> int:
    import httpx

    return len(httpx.get(url, timeout=60).content)


def _input_png(alpha: bool) -> bytes:
    """The largest input accepted: 4096x4096 of noise (incompressible: just under the 50 MB cap); the mask has
    the same size with an alpha channel (flat, so it stays small)."""
    from PIL import Image

    if alpha:
        image = Image.new("RGBA", (INPUT_SIDE, INPUT_SIDE), (0, 0, 0, 0))
    else:
        image = Image.frombytes("RGB", (INPUT_SIDE, INPUT_SIDE), os.urandom(INPUT_SIDE * INPUT_SIDE * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _put(environment: dict[str, str], owner: str, images: list[bytes]) -> list[str]:
    """``images`` as the uploads route would keep them (under the owner's prefix): their upload ids."""
    import boto3

    from imagecore.storage.store import new_upload_id, owner_prefix

    s3 = boto3.client(
        "s3",
        endpoint_url=environment["S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
    )
    ids = []
    for index, body in enumerate(images):
        upload_id = new_upload_id()
        s3.put_object(
            Bucket=environment["IMAGES_BUCKET"],
            Key=owner_prefix(owner) + upload_id,
            Body=body,
            ContentType="image/png",
            Metadata={"filename": f"input-{index}.png", "purpose": "edit"},
        )
        ids.append(upload_id)
    return ids


def _put_uploads(environment: dict[str, str], owner: str) -> dict[str, Any]:
    """The edit's inputs and mask as uploads; the edit request naming them."""
    image, mask = _input_png(alpha=False), _input_png(alpha=True)
    if len(image) > 50 * MIB:
        raise BenchError(f"the input is {len(image)} bytes, over the 50 MB cap")
    ids = _put(environment, owner, [image] * EDIT_INPUTS + [mask])
    return {
        "prompt": "capacity bench: the same scene at dusk",
        "images": [{"upload_id": upload_id} for upload_id in ids[:EDIT_INPUTS]],
        "mask": {"upload_id": ids[EDIT_INPUTS]},
        "size": "1024x1024",
        "quality": "low",
    }


def _responses_body(environment: dict[str, str], owner: str) -> dict[str, Any]:
    """The most a Responses request may send: 16 uploaded inputs filling its 32 MB of input images (noise, so
    incompressible), inlined as base64 into one upstream body, and a 4K image drawn."""
    from PIL import Image

    from imagecore.usecases.respond_inputs import MAX_INPUT_IMAGES, MAX_INPUT_TOTAL_BYTES

    side = 816  # 16 noise PNGs of 816x816 are just under the 32 MB
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, format="PNG", compress_level=1)
    if MAX_INPUT_IMAGES * len(out.getvalue()) > MAX_INPUT_TOTAL_BYTES:
        raise BenchError("the Responses inputs are over the request's limit")
    ids = _put(environment, owner, [out.getvalue()] * MAX_INPUT_IMAGES)
    content = [{"type": "input_image", "file_id": upload_id} for upload_id in ids]
    return {
        "model": "gpt-5",
        "input": [{"role": "user", "content": [*content, {"type": "input_text", "text": "capacity bench: a collage"}]}],
        "tools": [{"type": "image_generation", "size": "3840x2160", "quality": "high"}],
    }


def _responses_case(environment: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    _quiet(environment)
    from functions.responses import app

    answer = _answered(app.lambda_handler(_event("/v1/responses", body), _context("r")), 200, "responses")
    if not any(item.get("type") == "image_generation_call" for item in answer.get("output", [])):
        raise BenchError("responses: no image")
    return {"peak": _peak_mib()}


def _owner() -> str:
    event = json.loads((ROOT / "events" / "generations.json").read_text())
    return str(event["requestContext"]["authorizer"]["ownerId"])


def _edits_case(environment: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    _quiet(environment)
    from functions.edits import app

    answer = _answered(app.lambda_handler(_event("/v1/images/edits", body), _context("e")), 200, "edits")
    if not answer.get("data"):
        raise BenchError("edits: no image")
    return {"peak": _peak_mib()}


def _submit_case(environment: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    _quiet(environment)
    from functions.edits_async import app

    task = _answered(app.lambda_handler(_event("/v1/images/edits/async", body), _context("s")), 202, "edits/async")
    return {"task": task["id"]}


def _worker_case(environment: dict[str, str], task_id: str) -> dict[str, Any]:
    _quiet(environment)
    import boto3

    from functions.worker import app

    sqs = boto3.client("sqs", endpoint_url=environment["AWS_ENDPOINT_URL"], region_name="us-east-1")
    messages = sqs.receive_message(QueueUrl=environment["JOBS_QUEUE_URL"], MaxNumberOfMessages=1, WaitTimeSeconds=5)
    found = messages.get("Messages") or []
    if len(found) != 1:
        raise BenchError("worker: no job on the queue")
    message = found[0]
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(int(time.time() * 1000))},
        "messageAttributes": {},
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs",
        "awsRegion": "us-east-1",
    }
    result = app.lambda_handler({"Records": [record]}, _context("w"))
    if result.get("batchItemFailures"):
        raise BenchError(f"worker: the job failed: {result}")
    table = boto3.client("dynamodb", endpoint_url=environment["AWS_ENDPOINT_URL"], region_name="us-east-1")
    item = table.get_item(TableName=environment["TASKS_TABLE"], Key={"id": {"S": task_id}}).get("Item") or {}
    if item.get("status", {}).get("S") != "completed":
        raise BenchError(f"worker: the task ended {item.get('status')}")
    return {"peak": _peak_mib()}


def _in_fresh_process(function: Any, *args: Any) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        result: dict[str, Any] = pool.submit(function, *args).result()
    return result


# --- environments, costs, lines -----------------------------------------------------------------------------------
def environment_of(function: str, servers: Any, upstream_key: str) -> dict[str, str]:
    """``function``'s environment (``bench.servers.function_environment``), with the tasks table and jobs queue
    every case's task may need."""
    from bench.servers import function_environment
    from local.resources import LocalResources

    resources = LocalResources(**servers.resources)
    return {
        **function_environment(servers, upstream_key, function),
        "JOBS_QUEUE_URL": resources.jobs_queue_url,
        "TASKS_TABLE": resources.tasks_table,
    }


def memory_sizes() -> dict[str, int]:
    from local.template import project_template

    resources = project_template()["Resources"]
    return {
        name: int(spec["Properties"].get("MemorySize", 128))
        for name, spec in resources.items()
        if spec.get("Type") == "AWS::Serverless::Function"
    }


def cost_per_1k(case: CostCase, handler_seconds: float, image_bytes: int, memory: dict[str, int]) -> float:
    """USD per 1,000 synchronous images of ``case``: Lambda (the streamed function for the upstream wait plus the
    handler's own time, and the authorizer), API Gateway, S3 (PUT, one download, a month of storage), DynamoDB."""
    p = PRICES
    seconds = case.upstream_seconds + handler_seconds
    lambda_gb_s = memory["GenerationsStreamFunction"] / 1024 * seconds
    lambda_gb_s += memory["AuthorizerFunction"] / 1024 * AUTHORIZER_MS / 1000
    per_image = (
        lambda_gb_s * p["lambda_arm64_gb_second"]
        + 2 * p["lambda_request"]
        + p["apigateway_rest_request"]
        + p["s3_put"]
        + p["s3_get"]
        + image_bytes / 1024**3 * p["s3_gb_month"]
        + DYNAMODB_WRITES_PER_REQUEST * p["dynamodb_write_unit"]
        + DYNAMODB_READS_PER_REQUEST * p["dynamodb_read_unit"]
    )
    return per_image * 1000


def measure(servers: Any, upstream_key: str) -> list[str]:
    """Run the four cases, write peaks.json, and return the ``peak-rss-mb`` and ``aws-cost-per-1k-images``
    lines."""
    generations_env = environment_of("GenerationsStreamFunction", servers, upstream_key)
    edits_env = environment_of("EditsStreamFunction", servers, upstream_key)
    submit_env = environment_of("EditsFunction", servers, upstream_key)
    worker_env = environment_of("WorkerFunction", servers, upstream_key)

    print("  capacity: generations n=10 3840x2160 ...", flush=True)
    generations = _in_fresh_process(_generations_case, generations_env)
    print("  capacity: edits 16 x 4096x4096 + mask ...", flush=True)
    body = _put_uploads(edits_env, _owner())
    edits = _in_fresh_process(_edits_case, edits_env, body)
    print("  capacity: worker, the same edit as a task ...", flush=True)
    task = _in_fresh_process(_submit_case, submit_env, body)
    worker = _in_fresh_process(_worker_case, worker_env, task["task"])
    print("  capacity: responses, 16 inputs (32 MB) and a 4K image ...", flush=True)
    responses_env = environment_of("ResponsesFunction", servers, upstream_key)
    responses = _in_fresh_process(_responses_case, responses_env, _responses_body(responses_env, _owner()))

    peaks = {
        "GenerationsStreamFunction": {"case": "n10-3840x2160", "peak_mib": round(generations["peak"], 1)},
        "EditsStreamFunction": {"case": "16x4096x4096-mask", "peak_mib": round(edits["peak"], 1)},
        "WorkerFunction": {"case": "edit-16x4096x4096-mask", "peak_mib": round(worker["peak"], 1)},
        "ResponsesFunction": {"case": "16-inputs-32mb-3840x2160", "peak_mib": round(responses["peak"], 1)},
    }
    PEAKS_PATH.write_text(json.dumps(peaks, indent=2) + "\n")
    lines = [
        f"peak-rss-mb generations n10-3840x2160 {generations['peak']:.1f}",
        f"peak-rss-mb edits 16x4096x4096-mask {edits['peak']:.1f}",
        f"peak-rss-mb worker edit-16x4096x4096-mask {worker['peak']:.1f}",
        f"peak-rss-mb responses 16-inputs-32mb-3840x2160 {responses['peak']:.1f}",
    ]
    memory = memory_sizes()
    for case in COST_CASES:
        usd = cost_per_1k(case, generations["timings"][case.key], generations["sizes"][case.key], memory)
        lines.append(f"aws-cost-per-1k-images {case.key} {usd:.3f}")
    return lines


def main() -> int:
    """``python -m bench.capacity``: only these measurements (the servers started and stopped here)."""
    import secrets

    from bench.servers import Servers

    upstream_key = f"sim-{secrets.token_hex(8)}"
    servers = Servers(upstream_key)
    try:
        lines = measure(servers, upstream_key)
    finally:
        servers.stop()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
