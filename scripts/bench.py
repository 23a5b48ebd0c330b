"""Benchmark of the generations handler's own overhead and memory (``make bench``; a script, not a timed test).

Usage::

    .venv/bin/python scripts/bench.py                   # default: 15 timed runs at 1024x1024, 8 at 3840x2160
    .venv/bin/python scripts/bench.py --quick           # smoke run: 3 timed runs, 1 memory run per scenario
    .venv/bin/python scripts/bench.py --runs 30 --json bench.json
    .venv/bin/python scripts/bench.py --scenario 4k-n4  # one scenario (repeatable)

Setup (everything on loopback, nothing leaves the machine):

- A *servers* process runs the embedded moto S3 server (``ThreadedMotoServer``, with the images bucket) and the
  upstream simulator (``local.simulator``, latency 0) on free ports. They live in a process of their own so that
  neither their CPU time nor their memory is counted as the handler's: the measured process holds only what a
  Lambda execution environment holds. Their wall time is counted, of course, where the handler waits on them.
- Each scenario runs in a fresh, spawned *worker* process, like a new execution environment: the environment the
  template gives the function is set, ``functions.generations.app`` is imported and its service built (the cold
  start), then the real ``lambda_handler`` is called with a fresh API Gateway event per call
  (``events/generations.json`` with the scenario's body, a new requestId, requestTimeEpoch = now) and a fake
  Lambda context. The function's own log line and EMF metrics are formatted as in AWS but written to /dev/null;
  the ``image request`` record is read from a logging handler added to the function's logger. botocore runs
  with ``BOTO_DISABLE_CRT=true``: the layer has no awscrt, so in Lambda botocore signs and checksums in pure
  Python; the dev venv has awscrt (aws-sam-cli pulls in boto3[crt]) and botocore would otherwise use it.

Scenarios: 1024x1024 and 3840x2160 PNG, n=1 and n=4, quality medium, response_format url, one prompt per
scenario (n=4 asks the simulator for four distinct images, ``prompt#0`` .. ``prompt#3``). Per scenario:

1. warm-up calls (``--warmup``, default 2, not counted): lazy imports finish, connections open, and the simulator
   renders and caches the images, so from then on the upstream serves a cached image (its "zero latency"). The
   first warm-up also downloads one presigned URL from the S3 server and checks it is the image asked for.
2. timed runs (``--runs``, default 15 at 1024x1024 and 8 at 3840x2160), ``gc.collect()`` before each, no tracing.
3. memory runs (``--memory-runs``, default 3) under tracemalloc, kept apart from the timed runs because tracing
   slows allocation down.

Every call must answer 200 with n S3 URLs, after exactly one upstream attempt, with one ``image request`` line of
outcome success; the simulator must have been called exactly once per handler call. Anything else stops the
benchmark with a message and exit status 1.

What the figures mean (ms are wall clock, ``time.perf_counter``; MiB = 2**20 bytes):

total
    the whole ``lambda_handler`` call, decorators included: Powertools' logger context, the metrics flush (EMF
    JSON printed), the resolver, request validation, the service, response validation and serialisation.
upstream
    what the handler waited on the upstream: the upstream client's own measurement of the call
    (``CallTrace.latency_ms``, logged as ``upstream_latency_ms``), from sending the request to reading the last
    byte of the answer. Decoding the answer in ``UpstreamClient._interpret`` (JSON parse, base64 decode, image
    sniffing) comes after that and counts as overhead. Included: building and sending the request, the
    simulator's work (parsing the request, base64-encoding the cached images, encoding the JSON), and the
    loopback transfer of the JSON answer into one buffer.
overhead
    total - upstream: all the handler does itself, i.e. the event, validation, decoding the images, the S3 PUTs
    (round trips to moto on loopback, moto's own handling included), presigning, the log line, the metrics and
    the response.
decode, s3 put, presign, other (breakdown of overhead, medians)
    decode = ``_interpret``; s3 put = ``ImageStore.save`` (botocore, the PUT round trips, moto); presign = the
    ``ImageStore.presign`` calls; other = overhead - decode - s3 put - presign. Over plain http (moto) botocore
    SHA-256-hashes every PUT body for SigV4, which it does not do over https to real S3; on the other hand real
    S3 adds network latency and TLS. So "s3 put" is a loopback figure, not what S3 costs in AWS.
logged upstream
    the function's own ``upstream_latency_ms`` (the same as upstream, shown for cross-checking).
image MiB
    decoded image bytes per request (the log line's ``bytes_returned``).
tracemalloc peak MiB
    highest Python-traced allocation during one request above the traced level before it (median of the memory
    runs). Memory that C code allocates without Python's allocator is not seen.
RSS growth MiB
    the worker's RSS high-water mark (``getrusage(RUSAGE_SELF).ru_maxrss``) after the timed runs minus its value
    after the cold start, before the first request: what handling the scenario's requests added to the peak
    memory the execution environment needs. ru_maxrss never goes down, hence one process per scenario, and the
    tracemalloc runs come after the reading (tracemalloc's own tables would count). "RSS peak" is the absolute
    high-water mark, to compare with the function's MemorySize (1024 MB in template.yaml).

p95 is the inclusive linear-interpolation percentile of the timed runs; with 8 runs it is close to the maximum.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import multiprocessing
import os
import platform
import resource
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # functions/ and local/ are imported from the repository root

HOST = "127.0.0.1"
REGION = "us-east-1"
BUCKET = "image-service-bench"
FUNCTION_TIMEOUT_S = 330  # template.yaml: GenerationsFunction Timeout
INTEGRATION_TIMEOUT_MS = 29_000  # template.yaml: IntegrationTimeoutMs default
MIB = 1024 * 1024


@dataclass(frozen=True)
class Scenario:
    key: str
    size: str
    n: int
    default_runs: int

    @property
    def name(self) -> str:
        return f"{self.size} png n={self.n}"

    @property
    def prompt(self) -> str:
        return f"benchmark {self.key}: a lighthouse on a cliff at dawn, watercolour"


SCENARIOS = (
    Scenario("1024-n1", "1024x1024", 1, 15),
    Scenario("1024-n4", "1024x1024", 4, 15),
    Scenario("4k-n1", "3840x2160", 1, 8),
    Scenario("4k-n4", "3840x2160", 4, 8),
)


class BenchError(Exception):
    """A run did not do what it should: the figures would mean nothing."""


# --- servers process: moto S3 + upstream simulator ------------------------------------------------------------
def _aws_environment() -> dict[str, str]:
    # moto accepts any credentials; these (and no config files) keep boto3 from looking for real ones.
    return {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _serve(conn: Any, upstream_key: str) -> None:
    """Entry point of the servers process: start both servers, report their URLs, serve until told to stop
    (or until the parent goes away), then report the simulator's call count and shut down."""
    import logging
    import threading

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log lines on the terminal
    try:
        import boto3
        from moto.server import ThreadedMotoServer
        from werkzeug.serving import make_server

        from local.simulator import SimulatorOptions, UpstreamSimulator

        moto = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
        moto.start()
        host, port = moto.get_host_and_port()
        s3_url = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=s3_url, region_name=REGION).create_bucket(Bucket=BUCKET)

        simulator = UpstreamSimulator(SimulatorOptions(api_key=upstream_key, latency_ms=0, keepalive_ms=0))
        upstream = make_server(HOST, 0, simulator, threaded=True)
        thread = threading.Thread(target=upstream.serve_forever, name="simulator", daemon=True)
        thread.start()
    except Exception as exc:
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    conn.send({"s3_url": s3_url, "upstream_url": f"http://{HOST}:{upstream.server_address[1]}/v1"})
    with contextlib.suppress(EOFError, OSError):
        conn.recv()  # "stop", or EOF when the parent is gone
    calls = simulator.calls
    upstream.shutdown()
    upstream.server_close()
    thread.join(timeout=10)
    moto.stop()
    with contextlib.suppress(OSError):
        conn.send({"calls": calls})


class Servers:
    """The servers process, seen from the parent."""

    def __init__(self, upstream_key: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, upstream_key), name="bench-servers", daemon=True)
        self._process.start()
        child.close()
        if not self._conn.poll(120):
            self.stop()
            raise BenchError("the S3 server and upstream simulator did not start within 120 s")
        try:
            info = self._conn.recv()
        except EOFError:
            self.stop()
            raise BenchError(
                f"the servers process exited while starting (exit code {self._process.exitcode})"
            ) from None
        if "error" in info:
            self.stop()
            raise BenchError(f"the S3 server or the upstream simulator failed to start: {info['error']}")
        self.s3_url: str = info["s3_url"]
        self.upstream_url: str = info["upstream_url"]

    def stop(self) -> int | None:
        """Stop both servers; the number of upstream calls the simulator received (None if unknown)."""
        calls = None
        with contextlib.suppress(OSError, EOFError):
            self._conn.send("stop")
            if self._conn.poll(30):
                calls = self._conn.recv().get("calls")
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
        self._conn.close()
        return calls


# --- worker process: one scenario in a fresh execution environment --------------------------------------------
@dataclass
class _LambdaContext:
    aws_request_id: str
    deadline: float
    function_name: str = "GenerationsFunction"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:GenerationsFunction"
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/GenerationsFunction"
    log_stream_name: str = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class _Probe:
    """Times three steps of the service by wrapping them on the instances (the code itself is untouched)."""

    def __init__(self, service: Any) -> None:
        self.seconds: dict[str, float] = {}
        self._wrap(service.upstream, "_interpret", "decode")
        self._wrap(service.store, "save", "s3_put")
        self._wrap(service.store, "presign", "presign")
        self.reset()

    def reset(self) -> None:
        self.seconds = {"decode": 0.0, "s3_put": 0.0, "presign": 0.0}

    def _wrap(self, target: Any, attribute: str, slot: str) -> None:
        original = getattr(target, attribute, None)
        if not callable(original):
            raise BenchError(f"{type(target).__name__}.{attribute} is gone: update scripts/bench.py's probe")

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[slot] += time.perf_counter() - started

        setattr(target, attribute, timed)


class _RecordTap:
    """Collects the ``request`` field of each ``image request`` log record (the dict the JSON line is built from)."""

    def __init__(self, logger: Any, message: str) -> None:
        import logging

        records: list[dict[str, Any]] = []

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.getMessage() == message:
                    records.append(dict(getattr(record, "request", None) or {}))

        self.records = records
        logger.addHandler(Handler())

    def take(self) -> dict[str, Any] | None:
        found = self.records[-1] if len(self.records) == 1 else None
        self.records.clear()
        return found


@contextlib.contextmanager
def _quiet(logger: Any) -> Iterator[None]:
    """The function's log lines and EMF metrics are still formatted, but written to /dev/null."""
    with open(os.devnull, "w") as sink:
        handler = logger.registered_handler
        previous = handler.setStream(sink) if hasattr(handler, "setStream") else None
        try:
            with contextlib.redirect_stdout(sink):
                yield
        finally:
            if previous is not None:
                handler.setStream(previous)


def _maxrss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _event(template: dict[str, Any], scenario: Scenario) -> dict[str, Any]:
    event = copy.deepcopy(template)
    event["body"] = json.dumps(
        {
            "model": "gpt-image-2",
            "prompt": scenario.prompt,
            "size": scenario.size,
            "quality": "medium",
            "output_format": "png",
            "n": scenario.n,
            "response_format": "url",
        }
    )
    now = time.time()
    context = event["requestContext"]
    context["requestId"] = str(uuid.uuid4())
    context["requestTimeEpoch"] = int(now * 1000)
    context["requestTime"] = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
    return event


def _check(scenario: Scenario, response: dict[str, Any], record: dict[str, Any] | None, s3_url: str) -> list[str]:
    """The call did what it should, or BenchError; the URLs it answered."""
    where = f"{scenario.name}"
    status = response.get("statusCode")
    if status != 200:
        raise BenchError(f"{where}: the handler answered {status}: {str(response.get('body'))[:600]}")
    body = json.loads(response["body"])
    urls = [item.get("url") for item in body.get("data") or []]
    prefix = f"{s3_url}/{BUCKET}/"
    if len(urls) != scenario.n or not all(isinstance(url, str) and url.startswith(prefix) for url in urls):
        raise BenchError(f"{where}: expected {scenario.n} URL(s) under {prefix}, got {urls}")
    if record is None:
        raise BenchError(f"{where}: not exactly one 'image request' log line was written for the call")
    expected = {"outcome": "success", "status": 200, "attempts": 1, "images_returned": scenario.n, "storage": "s3"}
    wrong = {k: record.get(k) for k, v in expected.items() if record.get(k) != v}
    if wrong or record.get("upstream_latency_ms") is None:
        raise BenchError(f"{where}: the log line says {wrong or record} (expected {expected})")
    if record.get("sizes_returned") != [scenario.size] * scenario.n:
        raise BenchError(f"{where}: the upstream returned sizes {record.get('sizes_returned')}")
    return urls


def _download_check(scenario: Scenario, url: str) -> None:
    import httpx

    from imagecore.images import inspect_image

    response = httpx.get(url, timeout=60)
    if response.status_code != 200:
        raise BenchError(f"{scenario.name}: GET of the presigned URL answered {response.status_code}")
    info = inspect_image(response.content)
    if (info.size, info.format) != (scenario.size, "png"):
        raise BenchError(f"{scenario.name}: the stored image is a {info.size} {info.format}")


def _run_scenario(job: dict[str, Any]) -> dict[str, Any]:
    """Entry point of a worker process; a dict either way (exceptions of this module do not unpickle in the
    parent, whose ``__main__`` is not the worker's ``__mp_main__``)."""
    try:
        return _scenario(job)
    except BenchError as exc:
        return {"error": str(exc)}


def _scenario(job: dict[str, Any]) -> dict[str, Any]:
    scenario = Scenario(**job["scenario"])
    s3_url = job["s3_url"]
    template = json.loads((ROOT / "events" / "generations.json").read_text())

    started = time.perf_counter()
    from functions.generations import app as function
    from imagecore.observability import REQUEST_LOG_MESSAGE, logger

    service = function.runtime().service
    cold_start_ms = (time.perf_counter() - started) * 1000
    rss_base = _maxrss_mib()

    probe = _Probe(service)
    tap = _RecordTap(logger, REQUEST_LOG_MESSAGE)

    def call() -> tuple[float, dict[str, Any], list[str]]:
        event = _event(template, scenario)
        context = _LambdaContext(str(uuid.uuid4()), time.monotonic() + FUNCTION_TIMEOUT_S)
        probe.reset()
        tap.records.clear()
        t0 = time.perf_counter()
        response = function.lambda_handler(event, context)
        elapsed_ms = (time.perf_counter() - t0) * 1000
        record = tap.take()
        urls = _check(scenario, response, record, s3_url)
        assert record is not None
        return elapsed_ms, record, urls

    samples: dict[str, list[float]] = {
        k: [] for k in ("total", "upstream", "overhead", "decode", "s3_put", "presign", "other", "logged_upstream")
    }
    image_bytes: set[int] = set()
    warmup_ms: list[float] = []
    peaks: list[float] = []
    with _quiet(logger):
        for index in range(job["warmup"]):
            elapsed_ms, _record, urls = call()
            warmup_ms.append(elapsed_ms)
            if index == 0:
                _download_check(scenario, urls[0])

        for _ in range(job["runs"]):
            gc.collect()
            total, record, _urls = call()
            decode = probe.seconds["decode"] * 1000
            upstream = record["upstream_latency_ms"]
            overhead = total - upstream
            s3_put, presign = probe.seconds["s3_put"] * 1000, probe.seconds["presign"] * 1000
            for key, value in (
                ("total", total),
                ("upstream", upstream),
                ("overhead", overhead),
                ("decode", decode),
                ("s3_put", s3_put),
                ("presign", presign),
                ("other", overhead - decode - s3_put - presign),
                ("logged_upstream", record["upstream_latency_ms"]),
            ):
                samples[key].append(value)
            image_bytes.add(record["bytes_returned"])
        rss_peak = _maxrss_mib()

        if job["memory_runs"]:
            import tracemalloc

            tracemalloc.start()
            try:
                for _ in range(job["memory_runs"]):
                    gc.collect()
                    tracemalloc.reset_peak()
                    before = tracemalloc.get_traced_memory()[0]
                    call()
                    peaks.append((tracemalloc.get_traced_memory()[1] - before) / MIB)
            finally:
                tracemalloc.stop()

    if len(image_bytes) > 1:
        raise BenchError(f"{scenario.name}: the image bytes changed between runs: {sorted(image_bytes)}")
    return {
        "scenario": scenario.key,
        "name": scenario.name,
        "size": scenario.size,
        "n": scenario.n,
        "warmup": job["warmup"],
        "runs": job["runs"],
        "memory_runs": job["memory_runs"],
        "upstream_calls": job["warmup"] + job["runs"] + job["memory_runs"],
        "cold_start_ms": round(cold_start_ms, 1),
        "warmup_ms": [round(v, 2) for v in warmup_ms],
        "image_bytes": image_bytes.pop() if image_bytes else None,
        "rss_base_mib": round(rss_base, 1),
        "rss_peak_mib": round(rss_peak, 1),
        "rss_growth_mib": round(rss_peak - rss_base, 1),
        "tracemalloc_peak_mib": [round(v, 2) for v in peaks],
        "samples_ms": {k: [round(v, 3) for v in values] for k, values in samples.items()},
    }


# --- parent: orchestration and report -------------------------------------------------------------------------
def _p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    samples = result["samples_ms"]

    def median(key: str) -> float:
        return statistics.median(samples[key])

    peaks = result["tracemalloc_peak_mib"]
    return {
        "overhead_p50_ms": median("overhead"),
        "overhead_p95_ms": _p95(samples["overhead"]),
        "total_p50_ms": median("total"),
        "upstream_p50_ms": median("upstream"),
        "logged_upstream_p50_ms": median("logged_upstream"),
        "decode_p50_ms": median("decode"),
        "s3_put_p50_ms": median("s3_put"),
        "presign_p50_ms": median("presign"),
        "other_p50_ms": median("other"),
        "image_mib": result["image_bytes"] / MIB,
        "tracemalloc_peak_mib": statistics.median(peaks) if peaks else None,
        "rss_growth_mib": result["rss_growth_mib"],
        "rss_base_mib": result["rss_base_mib"],
        "rss_peak_mib": result["rss_peak_mib"],
        "cold_start_ms": result["cold_start_ms"],
    }


def _git_revision() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)  # noqa: S603, S607
        return done.stdout.strip() if done.returncode == 0 else ""

    revision = git("rev-parse", "--short", "HEAD") or "unknown"
    return revision + (" (+ uncommitted changes)" if git("status", "--porcelain") else "")


def _machine() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_mib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mib = int(line.split()[1]) // 1024
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {}
    for package in ("aws-lambda-powertools", "boto3", "botocore", "httpx", "pydantic", "moto", "werkzeug"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": cpu_model,
        "memory_mib": memory_mib,
        "git": _git_revision(),
        "packages": versions,
    }


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_report(results: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    summaries = [(result, _summary(result)) for result in results]
    print()
    print("main table: medians over the timed runs unless p95; ms wall clock; MiB = 2^20 bytes")
    header = (
        f"{'scenario':<20}{'runs':>5}{'overhead p50':>14}{'overhead p95':>14}{'total p50':>11}{'upstream p50':>14}"
        f"{'image MiB':>11}{'tracemalloc peak MiB':>22}{'RSS growth MiB':>16}"
    )
    print(header)
    print("-" * len(header))
    for result, s in summaries:
        print(
            f"{result['name']:<20}{result['runs']:>5}{_fmt(s['overhead_p50_ms']):>14}{_fmt(s['overhead_p95_ms']):>14}"
            f"{_fmt(s['total_p50_ms']):>11}{_fmt(s['upstream_p50_ms']):>14}{_fmt(s['image_mib'], 2):>11}"
            f"{_fmt(s['tracemalloc_peak_mib']):>22}{_fmt(s['rss_growth_mib']):>16}"
        )
    print()
    print("where the overhead goes (each column its own median, so they need not add up exactly), and context")
    header = (
        f"{'scenario':<20}{'decode':>8}{'s3 put':>8}{'presign':>9}{'other':>8}{'logged upstream':>17}"
        f"{'cold start ms':>15}{'RSS base MiB':>14}{'RSS peak MiB':>14}"
    )
    print(header)
    print("-" * len(header))
    for result, s in summaries:
        print(
            f"{result['name']:<20}{_fmt(s['decode_p50_ms']):>8}{_fmt(s['s3_put_p50_ms']):>8}"
            f"{_fmt(s['presign_p50_ms'], 2):>9}{_fmt(s['other_p50_ms']):>8}{_fmt(s['logged_upstream_p50_ms']):>17}"
            f"{_fmt(s['cold_start_ms'], 0):>15}{_fmt(s['rss_base_mib']):>14}{_fmt(s['rss_peak_mib']):>14}"
        )
    print()
    print(
        "overhead = total - upstream; upstream = the logged upstream_latency_ms: request out, simulator work on a\n"
        "cached image, loopback transfer in (decoding the answer is overhead). s3 put is a\n"
        "round trip to moto over http (SHA-256 payload signing included): not what S3 costs in AWS.\n"
        "tracemalloc peak: Python allocations during one request (median of "
        f"{settings['memory_runs']} traced run(s)); RSS growth: ru_maxrss after the\n"
        "timed runs minus after the cold start, one fresh process per scenario. Definitions: scripts/bench.py."
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Handler overhead (total - upstream) and memory of POST /v1/images/generations, "
        "against a zero-latency local upstream and an embedded S3. Definitions in the module docstring.",
    )
    parser.add_argument("--runs", type=int, help="timed runs per scenario (default: 15 at 1024x1024, 8 at 4K)")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted warm-up calls per scenario (default 2)")
    parser.add_argument("--memory-runs", type=int, default=3, help="tracemalloc runs per scenario (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 timed runs and 1 memory run each")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[s.key for s in SCENARIOS],
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write machine facts and results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = args.runs or 3
        args.memory_runs = min(args.memory_runs, 1)
    if args.warmup < 1:
        parser.error("--warmup must be at least 1: the first call renders the images and opens connections")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.memory_runs < 0:
        parser.error("--memory-runs must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    began = time.perf_counter()
    scenarios = [s for s in SCENARIOS if not args.scenario or s.key in args.scenario]
    machine = _machine()
    print("image-service handler benchmark")
    print(f"  python    {machine['python']} ({sys.executable})")
    print(f"  platform  {machine['platform']}")
    print(
        f"  cpus      {machine['cpu_count']} ({machine['cpus_usable']} usable) {machine['cpu_model']}".rstrip()
        + (f", {machine['memory_mib']} MiB RAM" if machine["memory_mib"] else "")
    )
    print(f"  git       {machine['git']}")
    print("  packages  " + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()))

    # The function's environment (template.yaml Globals + GenerationsFunction), set before anything imports it;
    # spawned processes inherit it.
    upstream_key = f"sim-{secrets.token_hex(8)}"
    os.environ.update(_aws_environment())
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "UPSTREAM_API_KEY_SECRET_ID", "LOG_PROMPTS"):
        os.environ.pop(name, None)
    servers = Servers(upstream_key)
    calls: int | None = None
    results: list[dict[str, Any]] = []
    try:
        os.environ.update(
            {
                "POWERTOOLS_SERVICE_NAME": "image-service",
                "POWERTOOLS_METRICS_NAMESPACE": "ImageServiceBench",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "INFO",
                "IMAGES_BUCKET": BUCKET,
                "S3_ENDPOINT_URL": servers.s3_url,
                "UPSTREAM_BASE_URL": servers.upstream_url,
                "UPSTREAM_API_KEY": upstream_key,
                "ALLOW_HTTP_UPSTREAM": "true",
                "INTEGRATION_TIMEOUT_MS": str(INTEGRATION_TIMEOUT_MS),
                # The layer ships no awscrt, so in Lambda botocore signs and checksums in pure Python; the dev
                # venv has awscrt (aws-sam-cli wants boto3[crt]), which botocore would otherwise pick up.
                "BOTO_DISABLE_CRT": "true",
            }
        )
        print(f"  servers   S3 (moto) {servers.s3_url}, upstream simulator {servers.upstream_url} (latency 0)")
        print("  botocore  pure-Python signing and checksums (BOTO_DISABLE_CRT=true: the layer has no awscrt)")
        print(
            f"  runs      warm-up {args.warmup}, timed {args.runs or 'default (15 / 8 at 4K)'}, "
            f"tracemalloc {args.memory_runs}; one fresh worker process per scenario"
        )
        print()
        spawn = multiprocessing.get_context("spawn")
        for scenario in scenarios:
            job = {
                "scenario": asdict(scenario),
                "s3_url": servers.s3_url,
                "warmup": args.warmup,
                "runs": args.runs or scenario.default_runs,
                "memory_runs": args.memory_runs,
            }
            scenario_began = time.perf_counter()
            print(f"  {scenario.name:<20} ...", end="", flush=True)
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                result = pool.submit(_run_scenario, job).result()
            if "error" in result:
                print(" failed")
                raise BenchError(result["error"])
            print(f" done in {time.perf_counter() - scenario_began:.1f} s")
            results.append(result)
    finally:
        calls = servers.stop()

    expected_calls = sum(result["upstream_calls"] for result in results)
    if calls != expected_calls:
        raise BenchError(f"the simulator saw {calls} upstream calls, expected exactly {expected_calls}")
    settings = {"warmup": args.warmup, "runs": args.runs, "memory_runs": args.memory_runs, "quick": args.quick}
    _print_report(results, settings)
    elapsed = time.perf_counter() - began
    print(f"\nbenchmark finished in {elapsed:.1f} s")
    if args.json:
        document = {
            "machine": machine,
            "settings": settings,
            "elapsed_s": round(elapsed, 1),
            "scenarios": [{**result, "summary": _summary(result)} for result in results],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
        sys.exit(1)
