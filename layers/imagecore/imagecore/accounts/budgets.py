"""Image and token budgets per key, and the per-day usage a caller can read back.

Requests are not what costs money: images and tokens are. A key may have a daily and a monthly budget in images
and/or tokens (its settings in the keys secret, handed to the functions by the authorizer). Before the upstream
is called a request reserves what it may cost, with one conditional atomic write over the day's and the month's
counters, so concurrent requests cannot together pass a budget by more than one request's worth; once the
upstream has answered it settles with what was really made and billed, again in one write.

Counters live in the usage table, one partition per account (the key's owner, so a server key's client tokens
count in it), one item per account and UTC month (``month#YYYY-MM``), so that a reservation and a settlement
are each a single ``UpdateItem`` on one item (no transaction, one round trip):
- ``spent_images`` / ``spent_tokens``: the month's budget counters (which include what is reserved);
- ``dDD_<name>`` for each day DD of the month: requests, images, input/output tokens, upstream milliseconds,
  ``failed_<code>`` per error code, and the day's budget counters ``spent_images`` / ``spent_tokens``;
and, in a partition of its own (``hold#<task id>``), what an async task reserved when it was queued, settled
once by the worker: the hold is deleted and read in one call, so a second delivery cannot settle it again.
Per-key figures stay here, never in CloudWatch dimensions.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, Literal, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from imagecore.domain.errors import ImageServiceError
from imagecore.platform import aws
from imagecore.platform.observability import RequestRecord, logger

T = TypeVar("T")
_FAULTS = (BotoCoreError, ClientError)

Period = Literal["day", "month"]
Unit = Literal["images", "tokens"]

# How long a month's counters are kept: its days' usage for the longest report (90 days), and a year in all.
MONTH_ITEM_DAYS = 400
HOLD_ITEM_DAYS = 2
MAX_USAGE_DAYS = 90

# Output tokens per 1024x1024 image for each quality (OpenAI's published table for GPT image models); "auto"
# is reserved as "high" so that a reservation is never below what a request can be billed.
_OUTPUT_TOKENS_1M = {"low": 272, "medium": 1056, "high": 4160, "auto": 4160}
_LARGEST_AUTO_PIXELS = 1536 * 1024
_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")
# Input tokens of one reference image of an edit (an upper bound of what the upstream reports).
_INPUT_IMAGE_TOKENS = 1536
_FAILURE_PREFIX = "failed_"
_PERIOD_WORD = {"day": "daily", "month": "monthly"}
_CODE_RE = re.compile(r"^[a-z0-9_]{1,64}$")


class BudgetExceeded(ImageServiceError):
    """The request would take the key over one of its image or token budgets: nothing was generated."""

    status = 429
    type = "rate_limit_error"
    code = "budget_exceeded"


class UsageUnavailable(ImageServiceError):
    status = 503
    type = "server_error"
    code = "usage_unavailable"


# --- budgets ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """A key's limits; None is no limit."""

    images_per_day: int | None = None
    images_per_month: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None

    FIELDS = ("images_per_day", "images_per_month", "tokens_per_day", "tokens_per_month")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Budget:
        """From the key settings (``{"images_per_day": 100, ...}``); unknown names and bad values are refused,
        so a typo in the keys secret cannot silently lift a limit."""
        values = dict(values or {})
        unknown = set(values) - set(cls.FIELDS)
        if unknown:
            raise ValueError(f"unknown budget(s): {', '.join(sorted(unknown))}; use {', '.join(cls.FIELDS)}")
        limits: dict[str, int | None] = {}
        for name in cls.FIELDS:
            value = values.get(name)
            if value in (None, ""):
                limits[name] = None
                continue
            number = int(value)
            if number < 0:
                raise ValueError(f"budget {name} must be >= 0")
            limits[name] = number
        return cls(**limits)

    def as_dict(self) -> dict[str, int]:
        return {name: value for name in self.FIELDS if (value := getattr(self, name)) is not None}

    def limit(self, unit: Unit, period: Period) -> int | None:
        value: int | None = getattr(self, f"{unit}_per_{period}")
        return value

    @property
    def limited(self) -> bool:
        return bool(self.as_dict())


# The authorizer context carries the budgets to the functions (strings or numbers, one field each).
CONTEXT_FIELDS = {name: "budget_" + name for name in Budget.FIELDS}


def budget_context(budget: Budget) -> dict[str, int]:
    return {CONTEXT_FIELDS[name]: value for name, value in budget.as_dict().items()}


@dataclass(frozen=True)
class Spender:
    """Whose usage a request counts in (a client token's counts in its parent key's), and that key's budget."""

    account: str
    budget: Budget


def budget_of(authorizer: Mapping[str, Any]) -> Budget:
    """The caller's budget from the request's authorizer context (none there: no limit)."""
    return Budget.from_mapping(
        {name: authorizer.get(context) for name, context in CONTEXT_FIELDS.items() if authorizer.get(context)}
    )


# --- what a request may cost ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cost:
    images: int
    tokens: int


def estimated_cost(request: Any, *, reference_images: int = 0) -> Cost:
    """What a generation or edit of ``n`` images may be billed at most: its images, and tokens from the size and
    quality (output), the prompt and any reference images (input)."""
    n = int(getattr(request, "n", 1) or 1)
    size = str(getattr(request, "size", "auto") or "auto")
    quality = str(getattr(request, "quality", "auto") or "auto")
    match = _SIZE_RE.match(size)
    pixels = int(match.group(1)) * int(match.group(2)) if match else _LARGEST_AUTO_PIXELS
    per_image = math.ceil(_OUTPUT_TOKENS_1M.get(quality, _OUTPUT_TOKENS_1M["high"]) * pixels / (1024 * 1024))
    prompt_tokens = math.ceil(len(str(getattr(request, "prompt", "") or "")) / 2) + 16
    return Cost(images=n, tokens=per_image * n + prompt_tokens + _INPUT_IMAGE_TOKENS * reference_images)


@dataclass(frozen=True)
class Spent:
    """What one request really cost, and how it ended."""

    images: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    upstream_ms: int = 0
    failure: str | None = None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @classmethod
    def from_record(cls, record: RequestRecord, failure: str | None = None) -> Spent:
        """From the request's record: the images it answered (or, after a billed answer that could not be
        stored, that the upstream made), the tokens the upstream reported, the time spent waiting for it."""
        usage = record.usage or {}
        return cls(
            images=int(record.images_returned or 0),
            input_tokens=_int(usage.get("input_tokens")),
            output_tokens=_int(usage.get("output_tokens")),
            upstream_ms=round(record.upstream_latency_ms or 0),
            failure=failure,
        )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


# --- periods --------------------------------------------------------------------------------------------------
def day_of(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def month_of(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m")


def seconds_until_reset(period: Period, now: float) -> int:
    """Seconds until the budget period that contains ``now`` ends (UTC midnight, or the first of next month)."""
    moment = datetime.fromtimestamp(now, UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1) if period == "day" else (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return max(1, math.ceil((end - moment).total_seconds()))


@dataclass(frozen=True)
class Hold:
    """What a request reserved, and where: settled once with what it really cost."""

    account: str
    day: str
    month: str
    images: int = 0
    tokens: int = 0

    def to_item(self) -> dict[str, Any]:
        return {
            "owner": {"S": self.account},
            "day": {"S": self.day},
            "month": {"S": self.month},
            "images": {"N": str(self.images)},
            "tokens": {"N": str(self.tokens)},
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Hold:
        return cls(
            account=item["owner"]["S"],
            day=item["day"]["S"],
            month=item["month"]["S"],
            images=int(item["images"]["N"]),
            tokens=int(item["tokens"]["N"]),
        )


# --- the ledger ---------------------------------------------------------------------------------------------
@dataclass
class UsageLedger:
    """The usage table: budget reservations, settlements and the per-day usage of each account."""

    table: str
    region: str = "us-east-1"
    client: Any = None
    clock: Callable[[], float] = time.time

    @cached_property
    def dynamodb(self) -> Any:
        """The given client, or one made on first use."""
        return self.client or aws.client("dynamodb", region_name=self.region)

    # reserving -----------------------------------------------------------------------------------------------
    def reserve(self, account: str, budget: Budget, cost: Cost) -> Hold:
        """Count ``cost`` against the account's budgets, or raise ``BudgetExceeded`` with nothing counted. A key
        without budgets reserves nothing (its usage is still counted when it settles)."""
        now = self.clock()
        hold = Hold(account, day_of(now), month_of(now))
        if not budget.limited:
            return hold
        hold = Hold(account, hold.day, hold.month, images=cost.images, tokens=cost.tokens)
        for unit, amount in (("images", cost.images), ("tokens", cost.tokens)):
            for period in ("day", "month"):
                limit = budget.limit(unit, period)  # type: ignore[arg-type]
                if limit is not None and amount > limit:
                    raise self._exceeded(hold, budget, unit, period, now)  # type: ignore[arg-type]
        try:
            self.dynamodb.update_item(**self._reservation(hold, budget))
        except _FAULTS as exc:
            if _error_code(exc) == "ConditionalCheckFailedException":
                raise self._over_which(hold, budget, cost, now) from None
            raise _unavailable(exc) from exc
        return hold

    def _reservation(self, hold: Hold, budget: Budget) -> dict[str, Any]:
        """One conditional write: the hold added to the day's and the month's counters, if every budget the key
        has still has room for it."""
        day = _day_prefix(hold)
        conditions: list[str] = []
        values = {":images": {"N": str(hold.images)}, ":tokens": {"N": str(hold.tokens)}, ":expires": self._expiry()}
        for unit, amount in (("images", hold.images), ("tokens", hold.tokens)):
            for period, counter in (("day", f"{day}spent_{unit}"), ("month", f"spent_{unit}")):
                limit = budget.limit(unit, period)  # type: ignore[arg-type]
                if limit is not None:
                    conditions.append(f"(attribute_not_exists({counter}) OR {counter} <= :room_{period}_{unit})")
                    values[f":room_{period}_{unit}"] = {"N": str(limit - amount)}
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": self._key(hold.account, hold.month),
            "UpdateExpression": f"ADD spent_images :images, spent_tokens :tokens, {day}spent_images :images, "
            f"{day}spent_tokens :tokens SET expires_at = if_not_exists(expires_at, :expires)",
            "ExpressionAttributeValues": values,
        }
        if conditions:
            update["ConditionExpression"] = " AND ".join(conditions)
        return update

    def _over_which(self, hold: Hold, budget: Budget, cost: Cost, now: float) -> BudgetExceeded:
        """Which budget the refused reservation would have passed (read back, for the message)."""
        try:
            spent = self._spent(hold)
        except _FAULTS:  # the refusal stands; only its message is less precise
            spent = {}
        for period in ("day", "month"):
            for unit, amount in (("images", cost.images), ("tokens", cost.tokens)):
                limit = budget.limit(unit, period)  # type: ignore[arg-type]
                used = spent.get(period, {}).get(unit, 0)
                if limit is not None and used + amount > limit:
                    return self._exceeded(hold, budget, unit, period, now, used)  # type: ignore[arg-type]
        return self._exceeded(hold, budget, "images", "day", now)

    def _exceeded(
        self, hold: Hold, budget: Budget, unit: Unit, period: Period, now: float, used: int | None = None
    ) -> BudgetExceeded:
        limit = budget.limit(unit, period)
        amount = hold.images if unit == "images" else hold.tokens
        wait = seconds_until_reset(period, now)
        spent = f"{used} used, " if used is not None else ""
        return BudgetExceeded(
            f"This request ({amount} {unit} at most) would go over the key's {_PERIOD_WORD[period]} budget of "
            f"{limit} {unit} "
            f"({spent}resets in {wait} s, at the start of the next UTC {period}). Nothing was generated.",
            param="n" if unit == "images" else None,
            headers={"Retry-After": str(wait)},
        )

    def hold_for_task(self, task_id: str, hold: Hold) -> None:
        """Keep an async task's reservation until the worker settles it."""
        try:
            self.dynamodb.put_item(
                TableName=self.table,
                Item={
                    **_hold_key(task_id),
                    **hold.to_item(),
                    "expires_at": {"N": str(int(self.clock()) + HOLD_ITEM_DAYS * 86400)},
                },
            )
        except _FAULTS as exc:
            raise _unavailable(exc) from exc

    # settling ------------------------------------------------------------------------------------------------
    def settle(self, hold: Hold, spent: Spent, *, requests: int = 1) -> None:
        """Count the request and what it really cost (giving back the rest of its reservation), in one write. A
        failure here only leaves the counters off: the request's answer does not depend on it."""
        try:
            self.dynamodb.update_item(**self._settlement(hold, spent, requests))
        except _FAULTS as exc:
            logger.warning("usage not counted", extra={"error": type(exc).__name__, "code": _error_code(exc)})

    def _settlement(self, hold: Hold, spent: Spent, requests: int) -> dict[str, Any]:
        day = _day_prefix(hold)
        adds = {
            f"{day}requests": requests,
            f"{day}images": spent.images,
            f"{day}input_tokens": spent.input_tokens,
            f"{day}output_tokens": spent.output_tokens,
            f"{day}upstream_ms": spent.upstream_ms,
            f"{day}spent_images": spent.images - hold.images,
            f"{day}spent_tokens": spent.tokens - hold.tokens,
            "spent_images": spent.images - hold.images,
            "spent_tokens": spent.tokens - hold.tokens,
        }
        names = {f"#a{index}": name for index, name in enumerate(adds)}
        values = {f":a{index}": {"N": str(value)} for index, value in enumerate(adds.values())}
        if spent.failure:
            code = spent.failure if _CODE_RE.match(spent.failure) else "other"
            names["#failed"] = f"{day}{_FAILURE_PREFIX}{code}"
            values[":one"] = {"N": "1"}
        parts = [f"{name} {value}" for name, value in zip(names, values, strict=False)]
        values[":expires"] = self._expiry()
        return {
            "TableName": self.table,
            "Key": self._key(hold.account, hold.month),
            "UpdateExpression": "ADD " + ", ".join(parts) + " SET expires_at = if_not_exists(expires_at, :expires)",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def settle_task(self, task_id: str, spent: Spent) -> bool:
        """Settle the reservation an async task made when it was queued, once: the hold is removed in the same
        call that reads it. False when there is none (already settled, or the task had no caller)."""
        try:
            old = self.dynamodb.delete_item(TableName=self.table, Key=_hold_key(task_id), ReturnValues="ALL_OLD").get(
                "Attributes"
            )
        except _FAULTS as exc:  # the counters stay as reserved
            logger.warning("task usage not settled", extra={"error": type(exc).__name__})
            return False
        if not old:
            return False
        # The request was counted when it was queued.
        self.settle(Hold.from_item(old), spent, requests=0)
        return True

    # reading -------------------------------------------------------------------------------------------------
    def usage(self, account: str, budget: Budget, days: int) -> dict[str, Any]:
        """The account's usage per day for the last ``days`` UTC days (today included, newest first), and what
        is left of each budget."""
        now = self.clock()
        first = day_of(now - (days - 1) * 86400)
        try:
            items = self._query(account, f"month#{first[:7]}", f"month#{month_of(now)}")
        except _FAULTS as exc:
            raise _unavailable(exc) from exc
        by_month = {item["period"]["S"].removeprefix("month#"): item for item in items}
        report = []
        for back in range(days):
            day = day_of(now - back * 86400)
            report.append(_day_report(day, _day_view(by_month.get(day[:7]), day)))
        this_month = by_month.get(month_of(now))
        return {
            "object": "usage",
            "days": report,
            "totals": _totals(report),
            "budgets": _remaining(
                budget,
                {"day": _spent_of(_day_view(this_month, day_of(now))), "month": _spent_of(this_month)},
                now,
            ),
        }

    def _query(self, account: str, low: str, high: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "account = :account AND period BETWEEN :low AND :high",
            "ExpressionAttributeValues": {":account": {"S": account}, ":low": {"S": low}, ":high": {"S": high}},
            "ConsistentRead": True,
        }
        while True:
            page = self.dynamodb.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _spent(self, hold: Hold) -> dict[str, dict[str, int]]:
        """The day's and the month's budget counters of the hold's account, as they are now."""
        key = self._key(hold.account, hold.month)
        item = self.dynamodb.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        return {"day": _spent_of(_day_view(item, hold.day)), "month": _spent_of(item)}

    # helpers -------------------------------------------------------------------------------------------------
    @staticmethod
    def _key(account: str, month: str) -> dict[str, Any]:
        return {"account": {"S": account}, "period": {"S": f"month#{month}"}}

    def _expiry(self) -> dict[str, str]:
        return {"N": str(int(self.clock()) + MONTH_ITEM_DAYS * 86400)}


def _hold_key(task_id: str) -> dict[str, Any]:
    return {"account": {"S": f"hold#{task_id}"}, "period": {"S": "hold"}}


def _day_prefix(hold: Hold) -> str:
    """Where the hold's day lives in its month's item: ``dDD_``."""
    if not hold.day.startswith(hold.month):
        raise ValueError(f"day {hold.day} is not in month {hold.month}")
    return f"d{hold.day[8:10]}_"


def _day_view(month_item: Mapping[str, Any] | None, day: str) -> dict[str, Any]:
    """One day's attributes of a month's item, without their ``dDD_`` prefix."""
    prefix = f"d{day[8:10]}_"
    return {name.removeprefix(prefix): value for name, value in (month_item or {}).items() if name.startswith(prefix)}


def _spent_of(counters: Mapping[str, Any] | None) -> dict[str, int]:
    counters = counters or {}
    return {
        "images": int(counters.get("spent_images", {}).get("N", 0)),
        "tokens": int(counters.get("spent_tokens", {}).get("N", 0)),
    }


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def _unavailable(exc: Exception) -> UsageUnavailable:
    logger.warning("usage table unavailable", extra={"error": type(exc).__name__})
    return UsageUnavailable("The key's usage could not be read right now; nothing was generated. Try again.")


def _day_report(day: str, item: Mapping[str, Any] | None) -> dict[str, Any]:
    item = item or {}

    def number(name: str) -> int:
        return int(item.get(name, {}).get("N", 0))

    failures = {
        name.removeprefix(_FAILURE_PREFIX): int(value["N"])
        for name, value in sorted(item.items())
        if name.startswith(_FAILURE_PREFIX) and int(value["N"])
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


def _totals(days: list[dict[str, Any]]) -> dict[str, Any]:
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


def _remaining(budget: Budget, spent: dict[str, dict[str, int]], now: float) -> dict[str, Any]:
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
