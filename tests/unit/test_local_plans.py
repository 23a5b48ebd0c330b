"""The local gateway's usage plans: read from template.yaml like API Gateway's, throttle then quota per key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from local.gateway import load_template
from local.plans import Plan, UsagePlans, parse_overrides, period_of, read_plans

TEMPLATE = load_template(Path(__file__).resolve().parents[2] / "template.yaml")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_templates_plans_at_their_defaults() -> None:
    plans = read_plans(TEMPLATE)
    parameters = TEMPLATE["Parameters"]

    assert set(plans) == {"free", "trial", "standard"}
    for name, plan in plans.items():
        prefix = name.capitalize() + "Plan"
        assert plan == Plan(
            name=name,
            rate=float(parameters[prefix + "RateLimit"]["Default"]),
            burst=int(parameters[prefix + "BurstLimit"]["Default"]),
            quota=int(parameters[prefix + "QuotaLimit"]["Default"]),
            period=parameters[prefix + "QuotaPeriod"]["Default"],
        )


def test_overrides_replace_defaults_and_unknown_parameters_are_refused() -> None:
    plans = read_plans(TEMPLATE, parse_overrides("TrialPlanQuotaLimit=5 TrialPlanQuotaPeriod=MONTH"))
    assert (plans["trial"].quota, plans["trial"].period) == (5, "MONTH")
    with pytest.raises(ValueError, match="no parameter TrialPlanQuota"):
        read_plans(TEMPLATE, {"TrialPlanQuota": "5"})
    with pytest.raises(ValueError, match="Name=Value"):
        parse_overrides("TrialPlanQuotaLimit")


def test_a_burst_then_the_rate() -> None:
    clock = Clock(1_000.0)
    plans = UsagePlans({"p": Plan("p", rate=2.0, burst=3, quota=None)}, {"uk": "p"}, clock=clock)

    assert [plans.admit("uk") for _ in range(4)] == [None, None, None, "THROTTLED"]
    clock.now += 0.5  # one more request's worth at 2 a second
    assert [plans.admit("uk") for _ in range(2)] == [None, "THROTTLED"]


def test_the_quota_counts_per_key_and_resets_with_its_period() -> None:
    clock = Clock(datetime(2026, 11, 25, 23, 59, tzinfo=UTC).timestamp())
    plans = UsagePlans({"p": Plan("p", rate=None, burst=None, quota=2)}, {"a": "p", "b": "p"}, clock=clock)

    assert [plans.admit("a") for _ in range(3)] == [None, None, "QUOTA_EXCEEDED"]
    assert plans.admit("b") is None  # its own quota
    clock.now += 120  # the next UTC day
    assert plans.admit("a") is None


def test_a_throttled_request_does_not_count_against_the_quota() -> None:
    clock = Clock(0.0)
    plans = UsagePlans({"p": Plan("p", rate=1.0, burst=1, quota=2)}, {"a": "p"}, clock=clock)

    assert [plans.admit("a"), plans.admit("a")] == [None, "THROTTLED"]
    clock.now += 1
    assert plans.admit("a") is None
    clock.now += 1
    assert plans.admit("a") == "QUOTA_EXCEEDED"


def test_keys_on_no_plan_pass_and_unknown_plans_are_refused_at_start() -> None:
    plans = UsagePlans({"p": Plan("p", rate=1.0, burst=1, quota=1)}, {"a": "p"})
    assert [plans.admit(None), plans.admit("someone-else")] == [None, None]
    with pytest.raises(ValueError, match="unknown usage plan"):
        UsagePlans({"p": Plan("p", rate=1.0, burst=1, quota=1)}, {"a": "gold"})


def test_quota_periods() -> None:
    moment = datetime(2026, 11, 25, 12, tzinfo=UTC).timestamp()
    assert [period_of(p, moment) for p in ("DAY", "WEEK", "MONTH")] == ["2026-11-25", "2026-W48", "2026-11"]
