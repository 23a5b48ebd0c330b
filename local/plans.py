"""API Gateway usage plans for the local stack: each key's throttle (rate, burst) and request quota.

The plans are read from template.yaml (its ``AWS::ApiGateway::UsagePlan`` resources and their parameters'
defaults), keyed by the name after the stack's (``${AWS::StackName}-trial`` is plan ``trial``). The authorizer
names a request's usage key (``usageIdentifierKey``); the local keys that name a plan in ``API_KEYS``
(``trial-key@trial``) are on it. As in AWS, the throttle and the quota are checked before any function runs,
and answered with the THROTTLED and QUOTA_EXCEEDED gateway responses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Plan:
    name: str
    rate: float | None  # requests per second
    burst: int | None
    quota: int | None  # requests per period
    period: str = "DAY"  # DAY, WEEK or MONTH (UTC)


def _value(value: Any, parameters: Mapping[str, Any], overrides: Mapping[str, str]) -> Any:
    if isinstance(value, dict) and "Ref" in value:
        name = value["Ref"]
        return overrides[name] if name in overrides else (parameters.get(name) or {}).get("Default")
    return value


def _plan_name(value: Any) -> str:
    """``{"Fn::Sub": "${AWS::StackName}-trial"}`` -> ``trial``."""
    text = value.get("Fn::Sub", "") if isinstance(value, dict) else str(value)
    return str(text).rsplit("}-", 1)[-1] if "}" in str(text) else str(text)


def parse_overrides(text: str) -> dict[str, str]:
    """``sam deploy --parameter-overrides`` syntax: ``Name=Value Name=Value``."""
    overrides = {}
    for pair in text.split():
        name, equals, value = pair.partition("=")
        if not equals:
            raise ValueError(f"PARAMETER_OVERRIDES: '{pair}' is not Name=Value")
        overrides[name] = value
    return overrides


def read_plans(template: Mapping[str, Any], overrides: Mapping[str, str] | None = None) -> dict[str, Plan]:
    """The template's usage plans, with its parameters' defaults or the values in ``overrides``."""
    parameters = template.get("Parameters") or {}
    unknown = sorted(set(overrides or {}) - set(parameters))
    if unknown:
        raise ValueError(f"PARAMETER_OVERRIDES: the template has no parameter {', '.join(unknown)}")

    def value(raw: Any) -> Any:
        return _value(raw, parameters, overrides or {})

    plans = {}
    for resource in (template.get("Resources") or {}).values():
        if resource.get("Type") != "AWS::ApiGateway::UsagePlan":
            continue
        props = resource.get("Properties") or {}
        throttle, quota = props.get("Throttle") or {}, props.get("Quota") or {}
        rate, burst = value(throttle.get("RateLimit")), value(throttle.get("BurstLimit"))
        limit, period = value(quota.get("Limit")), value(quota.get("Period"))
        name = _plan_name(props.get("UsagePlanName"))
        plans[name] = Plan(
            name=name,
            rate=float(rate) if rate is not None else None,
            burst=int(burst) if burst is not None else None,
            quota=int(limit) if limit is not None else None,
            period=str(period or "DAY"),
        )
    return plans


def period_of(period: str, now: float) -> str:
    moment = datetime.fromtimestamp(now, UTC)
    if period == "MONTH":
        return moment.strftime("%Y-%m")
    if period == "WEEK":
        year, week, _ = moment.isocalendar()
        return f"{year}-W{week:02d}"
    return moment.strftime("%Y-%m-%d")


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class UsagePlans:
    """The plans and which usage key is on which; ``admit`` is API Gateway's per-key check."""

    plans: dict[str, Plan]
    keys: dict[str, str]  # usage key -> plan name
    clock: Callable[[], float] = time.time
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _counts: dict[tuple[str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.keys.values()) - set(self.plans))
        if unknown:
            raise ValueError(f"unknown usage plan(s) {', '.join(unknown)}; the template has {', '.join(self.plans)}")

    def admit(self, usage_key: str | None) -> str | None:
        """None when the request may go on; else the gateway response that refuses it (THROTTLED first, as
        API Gateway checks the throttle before the quota, and a throttled request does not count)."""
        plan = self.plans.get(self.keys.get(usage_key or "", ""))
        if plan is None or usage_key is None:
            return None
        now = self.clock()
        with self._lock:
            if plan.rate is not None and plan.burst is not None and not self._take(usage_key, plan, now):
                return "THROTTLED"
            if plan.quota is not None:
                counted = (usage_key, period_of(plan.period, now))
                if self._counts.get(counted, 0) >= plan.quota:
                    return "QUOTA_EXCEEDED"
                self._counts[counted] = self._counts.get(counted, 0) + 1
        return None

    def _take(self, usage_key: str, plan: Plan, now: float) -> bool:
        assert plan.rate is not None and plan.burst is not None
        bucket = self._buckets.setdefault(usage_key, _Bucket(float(plan.burst), now))
        bucket.tokens = min(float(plan.burst), bucket.tokens + (now - bucket.at) * plan.rate)
        bucket.at = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True
