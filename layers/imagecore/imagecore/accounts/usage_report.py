"""The usage a caller reads back: per UTC day (requests, images, tokens, upstream time, failures by code), totals,
and what is left of each budget, from the month items of the usage table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imagecore.accounts.budgets import Budget, seconds_until_reset

FAILURE_PREFIX = "failed_"


def day_view(month_item: Mapping[str, Any] | None, day: str) -> dict[str, Any]:
    """One day's attributes of a month's item, without their ``dDD_`` prefix."""
    prefix = f"d{day[8:10]}_"
    return {name.removeprefix(prefix): value for name, value in (month_item or {}).items() if name.startswith(prefix)}


def budget_counters(counters: Mapping[str, Any] | None) -> dict[str, int]:
    counters = counters or {}
    return {
        "images": int(counters.get("spent_images", {}).get("N", 0)),
        "tokens": int(counters.get("spent_tokens", {}).get("N", 0)),
    }


def day_report(day: str, item: Mapping[str, Any] | None) -> dict[str, Any]:
    item = item or {}

    def number(name: str) -> int:
        return int(item.get(name, {}).get("N", 0))

    failures = {
        name.removeprefix(FAILURE_PREFIX): int(value["N"])
        for name, value in sorted(item.items())
        if name.startswith(FAILURE_PREFIX) and int(value["N"])
    }
    return {
        "date": day,
        "requests": number("requests"),
        "images": number("images"),
        "input_tokens": number("input_tokens"),
        "output_tokens": number("output_tokens"),
        "upstream_seconds": round(number("upstream_ms") / 1000, 3),
        "failures": failures,
    }


def totals(days: list[dict[str, Any]]) -> dict[str, Any]:
    failures: dict[str, int] = {}
    for day in days:
        for code, count in day["failures"].items():
            failures[code] = failures.get(code, 0) + count
    return {
        "requests": sum(day["requests"] for day in days),
        "images": sum(day["images"] for day in days),
        "input_tokens": sum(day["input_tokens"] for day in days),
        "output_tokens": sum(day["output_tokens"] for day in days),
        "upstream_seconds": round(sum(day["upstream_seconds"] for day in days), 3),
        "failures": dict(sorted(failures.items())),
    }


def remaining(budget: Budget, spent: dict[str, dict[str, int]], now: float) -> dict[str, Any]:
    """Each configured budget: its limit, what is used (reservations in flight included), what is left."""
    answer: dict[str, Any] = {}
    for name, limit in budget.as_dict().items():
        unit, _, period = name.partition("_per_")
        used = spent.get(period, {}).get(unit, 0)
        answer[name] = {
            "limit": limit,
            "used": used,
            "remaining": max(0, limit - used),
            "resets_in_seconds": seconds_until_reset(period, now),  # type: ignore[arg-type]
        }
    return answer
