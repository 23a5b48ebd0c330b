"""``make loadtest``: a bounded overload against a local stack this script starts itself, with tight limits.

The stack: the upstream simulator answering after a fixed latency, the image functions' reserved concurrency
at a few (``GenerationsReservedConcurrency``), and two keys: a greedy one that keeps many synchronous
generations in flight at once (never waiting between them, ignoring Retry-After) and submits async tasks, and a
polite one that sends one request at a time. Per-key concurrency leases keep the greedy key to its share, so the
polite key is served; what is over a limit is refused at once (429 concurrency_exceeded, or 503 overloaded when
a function is at its reserved concurrency), never a bare 500.

It runs for ``--seconds`` (about a minute), then waits for every accepted async task to end, stops the stack and
prints one line:

    loadtest offered N served S refused R errors5xx E lost L refusal-p99-ms P polite-served-pct Q

offered: requests sent; served: 2xx; refused: 429 or 503 with Retry-After (clean refusals); errors5xx: any other
5xx or a request that got no answer; lost: accepted async tasks that did not complete; refusal-p99-ms: the 99th
percentile of how long a refusal took; polite-served-pct: the polite key's requests served. Targets: E = 0,
L = 0, P < 1000, Q >= 90. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx

GREEDY = "isk-loadtest-greedy"
POLITE = "isk-loadtest-polite"
BODY = {"prompt": "a lighthouse at dawn", "size": "1024x1024", "quality": "low"}


@dataclass
class Tally:
    offered: int = 0
    served: int = 0
    refused: int = 0
    errors: int = 0
    refusal_ms: list[float] = field(default_factory=list)
    polite_offered: int = 0
    polite_served: int = 0
    tasks: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, key: str, status: int | None, took_ms: float, retry_after: bool, task: str | None) -> None:
        with self.lock:
            self.offered += 1
            polite = key == POLITE
            self.polite_offered += polite
            if status is not None and 200 <= status < 300:
                self.served += 1
                self.polite_served += polite
                if task:
                    self.tasks.append(task)
            elif status in (429, 503) and retry_after:
                self.refused += 1
                self.refusal_ms.append(took_ms)
            elif status is None or status >= 500:
                self.errors += 1


def _send(client: httpx.Client, api: str, key: str, tally: Tally, *, asynchronous: bool) -> None:
    path = "/images/generations/async" if asynchronous else "/images/generations"
    started = time.monotonic()
    try:
        response = client.post(api + path, json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    except httpx.HTTPError:
        tally.record(key, None, (time.monotonic() - started) * 1000, False, None)
        return
    took = (time.monotonic() - started) * 1000
    task = response.json().get("id") if asynchronous and response.status_code == 202 else None
    tally.record(key, response.status_code, took, "Retry-After" in response.headers, task)


def _greedy(api: str, tally: Tally, until: float, index: int) -> None:
    with httpx.Client() as client:
        count = 0
        while time.monotonic() < until:
            _send(client, api, GREEDY, tally, asynchronous=index == 0 and count % 4 == 0)
            count += 1
            time.sleep(0.05)  # greedy, but not a busy loop on a shared machine


def _polite(api: str, tally: Tally, until: float) -> None:
    with httpx.Client() as client:
        while time.monotonic() < until:
            _send(client, api, POLITE, tally, asynchronous=False)
            time.sleep(0.5)


def _lost(api: str, tasks: list[str], wait_s: float) -> int:
    """Accepted async tasks that have not completed within ``wait_s``."""
    pending = set(tasks)
    deadline = time.monotonic() + wait_s
    with httpx.Client() as client:
        while pending and time.monotonic() < deadline:
            for task in list(pending):
                answer = client.get(f"{api}/images/tasks/{task}", headers={"Authorization": f"Bearer {GREEDY}"})
                status = answer.json().get("status") if answer.status_code == 200 else None
                if status == "completed":
                    pending.discard(task)
                elif status == "failed":
                    return len(pending)
            if pending:
                time.sleep(1)
    return len(pending)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the overload lasts (default 60)")
    parser.add_argument("--latency-ms", type=int, default=3000, help="the upstream's fixed latency (default 3000)")
    parser.add_argument("--reserved", type=int, default=6, help="image functions' reserved concurrency (default 6)")
    parser.add_argument("--greedy-threads", type=int, default=6, help="greedy clients at once (default 6)")
    args = parser.parse_args(argv)

    from local.server import LocalStack, StackConfig

    config = StackConfig(
        port=0,
        aws_port=0,
        api_keys=[f"{GREEDY}:concurrent=2", f"{POLITE}:concurrent=2"],
        simulator_latency_ms=args.latency_ms,
        log_level="ERROR",
        parameter_overrides=f"GenerationsReservedConcurrency={args.reserved}",
    )
    tally = Tally()
    # The stack's log and access lines go nowhere (the functions' loggers keep the stream they find): one line out.
    out, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115 - for the run
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with LocalStack(config) as stack:
        api = stack.api_url
        until = time.monotonic() + args.seconds
        threads = [threading.Thread(target=_greedy, args=(api, tally, until, i)) for i in range(args.greedy_threads)]
        threads.append(threading.Thread(target=_polite, args=(api, tally, until)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        lost = _lost(api, tally.tasks, wait_s=max(60.0, args.latency_ms / 1000 * len(tally.tasks)))
    polite = 100.0 * tally.polite_served / tally.polite_offered if tally.polite_offered else 0.0
    sys.stdout = out
    print(
        f"loadtest offered {tally.offered} served {tally.served} refused {tally.refused} errors5xx {tally.errors} "
        f"lost {lost} refusal-p99-ms {percentile(tally.refusal_ms, 0.99):.0f} polite-served-pct {polite:.1f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
