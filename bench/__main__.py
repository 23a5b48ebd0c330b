"""``python -m bench``: every case in its own fresh process, then cold starts, then the ratio lines."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import secrets
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from bench import capacity, coldstart, report
from bench.cases import CASES, ROOT, BenchError, quick
from bench.measure import run_case
from bench.servers import BUCKET, Servers, function_environment

DEFAULT_LAYER = ROOT / ".aws-sam" / "build" / "CoreLayer"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, help="measured runs per handler and case (default: 31 to 15 by size)")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted calls per handler and case (default 2)")
    parser.add_argument("--memory-runs", type=int, default=2, help="tracemalloc calls per handler (default 2)")
    parser.add_argument("--cold-runs", type=int, default=25, help="fresh processes per handler (default 25)")
    parser.add_argument("--layer", type=Path, default=DEFAULT_LAYER, help="packaged layer dir (make package)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 runs, smaller images, 2 cold starts")
    parser.add_argument(
        "--only",
        choices=("coldstart",),
        help="coldstart: only the cold starts, ending with their ratio line (no cases, no layer needed)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.warmup, args.memory_runs, args.cold_runs = 2, 1, 1, 2
    if min(1 if args.runs is None else args.runs, args.warmup, args.memory_runs, args.cold_runs) < 1:
        parser.error("every count must be at least 1")
    if not args.only and not args.layer.is_dir():
        parser.error(f"no packaged layer at {args.layer}: run make package first")
    return args


def _run_cases(args: argparse.Namespace, servers: Servers, upstream_key: str) -> dict[str, dict]:
    results = {}
    spawn = multiprocessing.get_context("spawn")
    # A quick run skips the one case no ratio line reads.
    for case in (quick(case) for case in CASES if case.key != "1024-n4") if args.quick else CASES:
        job = {
            "case": asdict(case),
            "s3_url": servers.s3_url,
            "upstream_url": servers.upstream_url,
            "bucket": BUCKET,
            "runs": args.runs or case.runs,
            "warmup": args.warmup,
            "memory_runs": args.memory_runs,
        }
        began = time.perf_counter()
        print(f"  {case.name:<22} ...", end="", flush=True)
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            result = pool.submit(run_case, job).result()
        if "error" in result:
            raise BenchError(result["error"])
        print(f" {time.perf_counter() - began:.1f} s")
        results[case.key] = {**result, "name": case.name}
    return results


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    began = time.perf_counter()
    print(f"image-service bench: python {platform.python_version()}, {os.cpu_count()} cpus, {platform.platform()}")
    runs = args.runs or ", ".join(f"{case.key} {case.runs}" for case in CASES)
    print(f"  runs per handler: {runs} (warm-up {args.warmup}, traced {args.memory_runs}), interleaved")
    upstream_key = f"sim-{secrets.token_hex(8)}"
    servers = Servers(upstream_key)
    try:
        environment = function_environment(servers, upstream_key)
        os.environ.update(environment)  # the case processes are spawned with the function's environment
        results = {} if args.only else _run_cases(args, servers, upstream_key)
        print("  cold starts ...", flush=True)
        cold = coldstart.cold_starts(environment, args.cold_runs)
        # Memory at the contract's worst cases and cost per 1,000 images (their upstream calls are not counted).
        # (not in a quick run: the worst cases are as large as in a full one)
        measure_capacity = not (args.only or args.quick)
        capacity_lines = capacity.measure(servers, upstream_key) if measure_capacity else []
    finally:
        calls = servers.stop()
    expected = sum(result["upstream_calls"] for result in results.values()) + capacity.UPSTREAM_CALLS * measure_capacity
    if calls != expected:
        raise BenchError(f"the simulator saw {calls} upstream calls, expected exactly {expected}")
    if args.only:
        report.print_cold(cold)
        print(f"\nbench finished in {time.perf_counter() - began:.0f} s\n{report.cold_ratio_line(cold)}")
        return 0
    report.print_cases(list(results.values()))
    report.print_cold(cold)
    print(f"\nbench finished in {time.perf_counter() - began:.0f} s; layer at {args.layer}")
    for line in capacity_lines:
        print(line)
    print("\n".join(report.ratio_lines(results, cold, report.unpacked_mb(args.layer))))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"\nbench aborted: {exc}", file=sys.stderr)
        sys.exit(1)
