"""Tables of one bench run and the ``ratio`` lines that end it (compared run to run, so their shape is fixed)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.coldstart import HANDLERS as COLD_HANDLERS
from bench.measure import HANDLERS, UNMETERED


def p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def unpacked_mb(directory: Path) -> float:
    """Bytes of every file under ``directory`` in MB as Lambda counts them (2^20)."""
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file()) / (1024 * 1024)


def summary(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Medians (and p95) per handler; overhead = total - the median bare upstream transfer of the same answer."""
    samples = result["samples"]
    upstream = statistics.median(samples["upstream"])
    rows = {}
    for name in (name for name in (*HANDLERS, UNMETERED) if name in samples):
        own = samples[name]
        overheads = [total - upstream for total in own["total"]]
        rows[name] = {
            "total": statistics.median(own["total"]),
            "total_p95": p95(own["total"]),
            "overhead": statistics.median(overheads),
            "overhead_p95": p95(overheads),
            "peak": statistics.median(own["peak"]) if own["peak"] else float("nan"),
            "rss": statistics.median(own["rss"]),
        }
    rows["reference"] = {"upstream": upstream, "floor": statistics.median(samples["floor"])}
    return rows


def print_cases(results: list[dict[str, Any]]) -> None:
    print("\nper case: ms wall clock (medians unless p95), MiB = 2^20 bytes; naive = the 30-line reference handler;")
    print("unmetered (smallest case only) = the generations handler without its usage write, for information;")
    header = (
        f"{'case':<22}{'handler':<13}{'total':>9}{'p95':>9}{'overhead':>10}{'p95':>9}"
        f"{'tracemalloc peak':>18}{'RSS growth':>12}"
    )
    print(header + "\n" + "-" * len(header))
    for result in results:
        rows = summary(result)
        for name in (name for name in (*HANDLERS, UNMETERED) if name in rows):
            row = rows[name]
            print(
                f"{result['name']:<22}{name:<13}{row['total']:>9.1f}{row['total_p95']:>9.1f}{row['overhead']:>10.1f}"
                f"{row['overhead_p95']:>9.1f}{row['peak']:>18.1f}{row['rss']:>12.1f}"
            )
        reference = rows["reference"]
        print(f"{'':<22}{'upstream':<13}{reference['upstream']:>9.1f}   (bare client reading the same answer)")
        print(f"{'':<22}{'floor':<13}{reference['floor']:>9.1f}   (base64 decode + PUT of the same bytes only)")


def print_cold(cold: dict[str, list[float]]) -> None:
    print("\ncold start (fresh process: import + build dependencies, tracing as deployed, layer requirements only), ms")
    for name in COLD_HANDLERS:
        wall, cpu = cold[name], cold[f"{name} cpu"]
        print(
            f"  {name:<13} median {statistics.median(wall):7.1f}  p95 {p95(wall):7.1f}  "
            f"CPU median {statistics.median(cpu):7.1f}  runs {len(wall)}"
        )
    cpu_ratio = statistics.median(cold["generations cpu"]) / statistics.median(cold["naive cpu"])
    print(f"  CPU-time ratio {cpu_ratio:.2f} (less disturbed than wall clock by other load on the machine)")
    streamed = statistics.median(cold["streamed"]) / statistics.median(cold["naive"])
    print(
        f"  streamed: the synchronous route's function as the Web Adapter starts it (uvicorn, then the same import\n"
        f"  and build, then the ASGI edge): {streamed:.2f}x the naive handler, for information (no target)"
    )
    libraries = statistics.median(cold["libraries"]) / statistics.median(cold["naive"])
    print(
        f"  libraries: the naive handler, then every library module the generations function loads, none of its\n"
        f"  own code: {libraries:.2f}x the naive handler, for information (the floor under the ratio line)"
    )


def ratio_lines(results: dict[str, dict[str, Any]], cold: dict[str, list[float]], layer_mb: float) -> list[str]:
    rows = {key: summary(result) for key, result in results.items()}

    def overhead(key: str) -> float:
        return rows[key]["generations"]["overhead"] / rows[key]["naive"]["overhead"]

    return [
        f"ratio overhead 1024-n1 {overhead('1024-n1'):.2f}",
        f"ratio overhead 4k-n4 {overhead('4k-n4'):.2f}",
        f"ratio memory 4k-n4 {rows['4k-n4']['generations']['peak'] / rows['4k-n4']['naive']['peak']:.2f}",
        f"ratio memory-flat 4k {rows['4k-n4']['generations']['peak'] / rows['4k-n1']['generations']['peak']:.2f}",
        cold_ratio_line(cold),
        f"layer-mb {layer_mb:.1f}",
    ]


def cold_ratio_line(cold: dict[str, list[float]]) -> str:
    """Wall clock, median against median."""
    ratio = statistics.median(cold["generations"]) / statistics.median(cold["naive"])
    return f"ratio cold-start generations {ratio:.2f}"
