"""One case in one fresh process: the naive handler and the generations handler called in turn against the same
servers, with the bare upstream transfer and the physical floor measured in the same rounds.

Figures per handler: ``total`` (the handler call, wall clock), ``overhead`` (total minus the median bare upstream
transfer of the same answer: what the handler adds to reading the body), ``rss`` (the process's peak RSS during
the call above its RSS before it: the peak is reset through ``/proc/self/clear_refs`` before every call), and in
separate traced calls the tracemalloc peak above the traced level before the call. The floor is decoding the
base64 text of the same answer and PUTting the bytes, nothing else.

The generations handler writes its usage before it answers, as it does in Lambda: ``total`` includes it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import gc
import json
import os
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.cases import MIB, BenchError, Case, api_event, check_stored, checked_urls

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

HANDLERS = ("naive", "generations")
# The generations handler with its usage table left out (no per-request usage write), in the smallest case only
# (where that one DynamoDB write weighs most, and its images are too small to load the servers): shown for
# information, so that what the write costs here can be read off; no ratio line uses it.
UNMETERED = "unmetered"


def handlers_of(case: Case) -> tuple[str, ...]:
    return (*HANDLERS, UNMETERED) if case.key == "1024-n1" else HANDLERS


_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"/proc/self/status has no {field}")


def timed_with_rss(call: Callable[[], Any]) -> tuple[float, float]:
    """Wall-clock ms of ``call`` and its peak RSS above the RSS before it, in MiB (Linux: writing 5 to
    clear_refs resets the peak)."""
    gc.collect()
    _CLEAR_REFS.write_text("5")
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    call()
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, (_status_kib("VmHWM") - before) / 1024


def traced_peak_mib(call: Callable[[], Any]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        call()
        return (tracemalloc.get_traced_memory()[1] - before) / MIB
    finally:
        tracemalloc.stop()


@contextlib.contextmanager
def quiet(logger: Any) -> Iterator[None]:
    """The function's log lines and EMF metrics are still formatted, but written to /dev/null."""
    with open(os.devnull, "w") as sink:
        handler = logger.registered_handler
        previous = handler.setStream(sink)
        try:
            with contextlib.redirect_stdout(sink):
                yield
        finally:
            handler.setStream(previous)


class Bench:
    """The handlers, built as at a cold start, and the plain clients for the reference transfers."""

    def __init__(self, job: dict[str, Any]) -> None:
        from bench import naive
        from functions.generations import app
        from imagecore.accounts.admission import Admission
        from local.context import LambdaContext

        self.case = Case(**job["case"])
        self.job = job
        metered = app.deps()
        unmetered = dataclasses.replace(metered, admission=Admission(None, metered.admission.token_images))

        def without_usage(event: dict[str, Any], context: Any) -> dict[str, Any]:
            app.app.dependency_overrides[app.deps] = lambda: unmetered
            try:
                response: dict[str, Any] = app.lambda_handler(event, context)
            finally:
                app.app.dependency_overrides.pop(app.deps, None)
            return response

        self.handlers = {"naive": naive.lambda_handler, "generations": app.lambda_handler, "unmetered": without_usage}
        self._context = LambdaContext
        self._http, self._s3 = naive.http, naive.s3

    def context(self, name: str) -> Any:
        """A new invocation of the handler's function."""
        return self._context(function_name=name, timeout_s=330.0)

    def call(self, name: str, context: Any = None) -> list[str]:
        response = self.handlers[name](api_event(self.case), context or self.context(name))
        return checked_urls(self.case, name, response, self.job["s3_url"], self.job["bucket"])

    def fetch(self) -> bytes:
        """The upstream answer, read to its last byte by a bare client."""
        url = self.job["upstream_url"] + "/images/generations"
        with self._http.stream("POST", url, json=self.case.request()) as response:
            return b"".join(response.iter_raw())

    def empty_bucket(self) -> None:
        """Delete what the round stored (untimed), so the S3 server's memory holds one round at most."""
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.job["bucket"])
        for page in pages:
            if page.get("Contents"):
                objects: list[ObjectIdentifierTypeDef] = [{"Key": item["Key"]} for item in page["Contents"]]
                self._s3.delete_objects(Bucket=self.job["bucket"], Delete={"Objects": objects, "Quiet": True})

    def floor(self, texts: list[str]) -> None:
        for index, text in enumerate(texts):
            key = f"floor/{uuid.uuid4().hex}-{index}.png"
            self._s3.put_object(Bucket=self.job["bucket"], Key=key, Body=base64.b64decode(text))


def timed_ms(call: Callable[[], Any]) -> float:
    gc.collect()
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def _warm_up(bench: Bench) -> None:
    for index in range(bench.job["warmup"]):
        for name in handlers_of(bench.case):
            urls = bench.call(name)
            if index == 0:
                check_stored(bench.case, name, urls[0])
        bench.empty_bucket()


def _rounds(bench: Bench, samples: dict[str, Any]) -> None:
    texts = [item["b64_json"] for item in json.loads(bench.fetch())["data"]]
    for round_ in range(bench.job["runs"]):
        handlers = handlers_of(bench.case)
        order = handlers if round_ % 2 == 0 else handlers[::-1]
        for name in order:
            elapsed, rss = timed_with_rss(functools.partial(bench.call, name, bench.context(name)))
            samples[name]["total"].append(elapsed)
            samples[name]["rss"].append(rss)
        samples["upstream"].append(timed_ms(bench.fetch))
        samples["floor"].append(timed_ms(lambda: bench.floor(texts)))
        bench.empty_bucket()
    for round_ in range(bench.job["memory_runs"]):
        for name in HANDLERS if round_ % 2 == 0 else HANDLERS[::-1]:  # the ratio lines' handlers only
            samples[name]["peak"].append(traced_peak_mib(functools.partial(bench.call, name)))
        bench.empty_bucket()


def run_case(job: dict[str, Any]) -> dict[str, Any]:
    """Entry point of a case process; a dict either way (the parent cannot unpickle this module's errors)."""
    try:
        from imagecore.platform.observability import logger

        bench = Bench(job)
        handlers = handlers_of(Case(**job["case"]))
        samples: dict[str, Any] = {name: {"total": [], "rss": [], "peak": []} for name in handlers}
        samples.update(upstream=[], floor=[])
        with quiet(logger):
            _warm_up(bench)
            _rounds(bench, samples)
        # each handler's calls, one bare transfer a round, and the one that fetched the floor's texts
        upstream_calls = (
            len(handlers) * (job["warmup"] + job["runs"]) + len(HANDLERS) * job["memory_runs"] + job["runs"] + 1
        )
        return {"case": job["case"], "samples": samples, "upstream_calls": upstream_calls}
    except BenchError as exc:
        return {"error": str(exc)}
