"""Image and token budgets against DynamoDB (moto): reservations are atomic and exact, settlements give back
what was not used, async holds settle once, and the usage read back is what was counted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from imagecore.accounts.budgets import Budget, BudgetExceeded, Cost, Spent, estimated_cost, seconds_until_reset
from imagecore.accounts.ledger import UsageLedger
from imagecore.domain.models import GenerationRequest
from imagecore.platform.observability import RequestRecord

NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def ledger(aws_resources: Any) -> UsageLedger:
    """The usage table as the template declares it (made by the local resources), empty."""
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    return UsageLedger(aws_resources.usage_table, client=dynamodb, clock=lambda: NOON)


def test_a_request_over_the_daily_image_budget_is_refused_with_nothing_counted(ledger: UsageLedger) -> None:
    budget = Budget(images_per_day=4)
    hold = ledger.reserve("key_a", budget, Cost(images=3, tokens=0))
    ledger.settle(hold, Spent(images=3, input_tokens=10, output_tokens=300, upstream_ms=1200))

    with pytest.raises(BudgetExceeded) as refused:
        ledger.reserve("key_a", budget, Cost(images=2, tokens=0))
    assert refused.value.status == 429
    assert refused.value.code == "budget_exceeded"
    assert "daily budget of 4 images" in refused.value.message and "3 used" in refused.value.message
    assert refused.value.headers["Retry-After"] == str(12 * 3600)  # noon to midnight UTC
    # the one image left can still be had
    ledger.settle(ledger.reserve("key_a", budget, Cost(images=1, tokens=0)), Spent(images=1))
    report = ledger.usage("key_a", budget, 1)
    assert report["days"][0]["images"] == 4
    assert report["budgets"]["images_per_day"] == {
        "limit": 4,
        "used": 4,
        "remaining": 0,
        "resets_in_seconds": 12 * 3600,
    }


def test_a_settlement_gives_back_what_was_not_made(ledger: UsageLedger) -> None:
    budget = Budget(images_per_day=4, tokens_per_month=10_000)
    hold = ledger.reserve("key_a", budget, Cost(images=4, tokens=5_000))
    ledger.settle(hold, Spent(images=1, input_tokens=20, output_tokens=1_000))  # the upstream made one image

    report = ledger.usage("key_a", budget, 1)
    assert report["budgets"]["images_per_day"]["used"] == 1
    assert report["budgets"]["tokens_per_month"]["used"] == 1_020
    ledger.reserve("key_a", budget, Cost(images=3, tokens=8_980))  # exactly what is left of both


def test_the_monthly_budget_counts_every_day_of_the_month(ledger: UsageLedger) -> None:
    budget = Budget(images_per_month=5)
    for day in (1, 10, 20):
        ledger.clock = lambda day=day: datetime(2026, 11, day, 9, tzinfo=UTC).timestamp()
        ledger.settle(ledger.reserve("key_a", budget, Cost(images=1, tokens=0)), Spent(images=1))
    ledger.clock = lambda: datetime(2026, 11, 30, 23, tzinfo=UTC).timestamp()
    with pytest.raises(BudgetExceeded, match="monthly budget of 5 images"):
        ledger.reserve("key_a", budget, Cost(images=3, tokens=0))
    ledger.clock = lambda: datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC).timestamp()  # a new month
    ledger.reserve("key_a", budget, Cost(images=5, tokens=0))


def test_accounts_do_not_share_budgets(ledger: UsageLedger) -> None:
    budget = Budget(images_per_day=2)
    ledger.reserve("key_a", budget, Cost(images=2, tokens=0))
    ledger.reserve("key_b", budget, Cost(images=2, tokens=0))
    with pytest.raises(BudgetExceeded):
        ledger.reserve("key_a", budget, Cost(images=1, tokens=0))


def test_an_async_hold_is_settled_once(ledger: UsageLedger) -> None:
    budget = Budget(images_per_day=10)
    hold = ledger.reserve("key_a", budget, Cost(images=4, tokens=0))
    ledger.hold_for_task("task_1", hold)

    assert ledger.settle_task("task_1", Spent(images=2, input_tokens=5, output_tokens=50)) is True
    assert ledger.settle_task("task_1", Spent(images=2, input_tokens=5, output_tokens=50)) is False  # redelivery
    report = ledger.usage("key_a", budget, 1)
    assert (report["days"][0]["images"], report["days"][0]["output_tokens"]) == (2, 50)
    assert report["budgets"]["images_per_day"]["used"] == 2
    assert report["days"][0]["requests"] == 0  # the request itself is counted when it is queued


def test_an_admission_hold_counts_failures_by_code_and_gives_everything_back(ledger: UsageLedger) -> None:
    from imagecore.accounts.admission import Admission
    from imagecore.accounts.caller import Caller
    from imagecore.domain.errors import UpstreamTimeout

    budget = Budget(images_per_day=3)
    caller = Caller(key_id="a", owner_id="key_a", budget=budget)
    admission = Admission(ledger)
    record = RequestRecord(operation="generations")
    ran: list[str] = []

    with pytest.raises(UpstreamTimeout), admission.hold(caller, Cost(images=3, tokens=0), images=3, record=record):
        record.upstream_latency_ms = 3000.0
        raise UpstreamTimeout("slow")
    with pytest.raises(BudgetExceeded), admission.hold(caller, Cost(images=4, tokens=0), images=4):
        ran.append("over the budget")
    assert ran == []

    day = ledger.usage("key_a", budget, 1)["days"][0]
    assert day["failures"] == {"budget_exceeded": 1, "upstream_timeout": 1}
    assert (day["requests"], day["images"], day["upstream_seconds"]) == (2, 0, 3.0)
    assert ledger.usage("key_a", budget, 1)["budgets"]["images_per_day"]["remaining"] == 3


def test_usage_lists_each_day_newest_first_with_totals(ledger: UsageLedger) -> None:
    for back, images in ((0, 2), (2, 5)):
        ledger.clock = lambda back=back: NOON - back * 86400
        ledger.settle(ledger.reserve("key_a", Budget(), Cost(images=images, tokens=0)), Spent(images=images))
    ledger.clock = lambda: NOON

    report = ledger.usage("key_a", Budget(), 3)
    assert [day["date"] for day in report["days"]] == ["2026-11-25", "2026-11-24", "2026-11-23"]
    assert [day["images"] for day in report["days"]] == [2, 0, 5]
    assert report["totals"]["images"] == 7 and report["totals"]["requests"] == 2
    assert report["budgets"] == {}
    assert ledger.usage("key_a", Budget(), 2)["totals"]["images"] == 2  # the older day is outside two days


def test_a_token_budget_reserves_the_most_a_request_can_cost() -> None:
    low = estimated_cost(GenerationRequest(prompt="a cat", size="1024x1024", quality="low", n=2))
    high = estimated_cost(GenerationRequest(prompt="a cat", size="1536x1024", quality="high"))
    auto = estimated_cost(GenerationRequest(prompt="a cat"))

    assert low.images == 2 and low.tokens >= 2 * 272
    assert high.tokens >= 4160 * 1.5
    assert auto.tokens >= high.tokens  # "auto" may be billed as high at the largest size


def test_periods_reset_at_utc_midnight_and_the_first_of_the_month() -> None:
    last_second = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    assert seconds_until_reset("day", last_second) == 1
    assert seconds_until_reset("month", last_second) == 1
    assert seconds_until_reset("month", datetime(2026, 2, 1, tzinfo=UTC).timestamp()) == 28 * 86400


def test_budgets_in_the_keys_secret_are_checked() -> None:
    assert Budget.from_mapping({"images_per_day": "5"}).images_per_day == 5
    with pytest.raises(ValueError, match="unknown budget"):
        Budget.from_mapping({"images_per_dya": 5})
    with pytest.raises(ValueError, match=">= 0"):
        Budget.from_mapping({"tokens_per_month": -1})


class CountingClient:
    """The DynamoDB client, counting the calls the ledger makes by operation."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append(name)
            return method(**kwargs)

        return call


def test_a_reservation_and_a_settlement_are_one_write_each(ledger: UsageLedger) -> None:
    counting = CountingClient(ledger.dynamodb)
    ledger.dynamodb = counting
    budget = Budget(images_per_day=10, images_per_month=100, tokens_per_day=10**6, tokens_per_month=10**7)

    hold = ledger.reserve("key_a", budget, Cost(images=2, tokens=9_000))
    assert counting.calls == ["update_item"]
    ledger.settle(hold, Spent(images=2, input_tokens=30, output_tokens=2_000, upstream_ms=900))
    assert counting.calls == ["update_item", "update_item"]
    # a key without budgets reserves nothing and settles in one write
    ledger.settle(ledger.reserve("key_b", Budget(), Cost(images=1, tokens=100)), Spent(images=1))
    assert counting.calls == ["update_item"] * 3

    report = ledger.usage("key_a", budget, 1)
    assert counting.calls[-1] == "query"
    assert report["days"][0] == {
        "date": "2026-11-25",
        "requests": 1,
        "images": 2,
        "input_tokens": 30,
        "output_tokens": 2_000,
        "upstream_seconds": 0.9,
        "failures": {},
    }
    assert report["budgets"]["images_per_month"]["used"] == 2
    assert report["budgets"]["tokens_per_day"]["used"] == 2_030


def test_usage_over_two_months_reads_each_day_from_its_month(ledger: UsageLedger) -> None:
    budget = Budget(images_per_day=50, images_per_month=60)
    for day, month, images in ((30, 11, 3), (1, 12, 4), (2, 12, 5)):
        ledger.clock = lambda day=day, month=month: datetime(2026, month, day, 8, tzinfo=UTC).timestamp()
        hold = ledger.reserve("key_a", budget, Cost(images=images, tokens=0))
        ledger.settle(hold, Spent(images=images, upstream_ms=1000))
    ledger.clock = lambda: datetime(2026, 12, 1, 6, tzinfo=UTC).timestamp()
    ledger.settle(ledger.reserve("key_a", budget, Cost(images=1, tokens=0)), Spent(failure="upstream_timeout"))

    ledger.clock = lambda: datetime(2026, 12, 2, 20, tzinfo=UTC).timestamp()
    report = ledger.usage("key_a", budget, 4)
    assert [(day["date"], day["requests"], day["images"]) for day in report["days"]] == [
        ("2026-12-02", 1, 5),
        ("2026-12-01", 2, 4),
        ("2026-11-30", 1, 3),
        ("2026-11-29", 0, 0),
    ]
    assert report["days"][1]["failures"] == {"upstream_timeout": 1}
    assert report["totals"]["images"] == 12
    # December's counters only: 4 + 5 (the request that failed gave its reserved image back)
    assert report["budgets"]["images_per_month"]["used"] == 9
    assert report["budgets"]["images_per_day"]["used"] == 5


def test_a_hold_whose_day_is_not_in_its_month_is_refused(ledger: UsageLedger) -> None:
    from imagecore.accounts.budgets import Hold

    with pytest.raises(ValueError, match="not in month"):
        ledger.settle(Hold("key_a", "2026-11-30", "2026-12"), Spent(images=1))


def test_a_billed_answer_that_was_cut_short_keeps_its_budget_spent(ledger: UsageLedger, aws_resources: Any) -> None:
    """The upstream committed a 200 (and billed it) but the body was cut: nothing reached the caller, and the
    budget and the client token's count are not given back; a failure before any 200 gives both back."""
    from imagecore.accounts.admission import Admission
    from imagecore.accounts.caller import Caller
    from imagecore.accounts.token_usage import ClientTokenGrant, TokenBudgetExceeded, TokenImageCounter
    from imagecore.domain.errors import UpstreamFailed

    counter = TokenImageCounter(
        aws_resources.token_usage_table, region="us-east-1", client=boto3.client("dynamodb", region_name="us-east-1")
    )
    token = ClientTokenGrant("ctk_cut", expires_at=int(NOON) + 600, max_images=4)
    caller = Caller("key_a", "key_a", token=token, budget=Budget(images_per_day=5))
    admission = Admission(ledger, counter)

    for code in ("upstream_incomplete", "upstream_error"):
        with (
            pytest.raises(UpstreamFailed),
            admission.hold(caller, Cost(images=2, tokens=100), images=2, record=RequestRecord(operation="generations")),
        ):
            raise UpstreamFailed("the upstream failed", code=code)

    report = ledger.usage("key_a", caller.budget, 1)
    assert report["budgets"]["images_per_day"]["remaining"] == 3  # the cut one's 2 stay spent, the other's came back
    assert report["days"][0]["failures"] == {"upstream_incomplete": 1, "upstream_error": 1}
    # the token: 2 of its 4 are used, so 2 more fit and a third does not
    counter.reserve("ctk_cut", 2, limit=4, expires_at=token.expires_at)
    with pytest.raises(TokenBudgetExceeded):
        counter.reserve("ctk_cut", 1, limit=4, expires_at=token.expires_at)
