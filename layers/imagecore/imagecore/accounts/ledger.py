"""The usage table (DynamoDB): budget reservations made with one conditional write, settlements, async tasks' holds,
and the reading of an account's usage (see ``budgets`` for the layout)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from imagecore.accounts.budgets import (
    Budget,
    BudgetExceeded,
    Cost,
    Hold,
    Period,
    Spent,
    Unit,
    UsageUnavailable,
    day_of,
    month_of,
    seconds_until_reset,
)
from imagecore.accounts.usage_report import FAILURE_PREFIX, budget_counters, day_report, day_view, remaining, totals
from imagecore.accounts.usage_table import FAULTS, UsageTable, error_code
from imagecore.platform.observability import logger

# How long a month's counters are kept: its days' usage for the longest report (90 days), and a year in all.
MONTH_ITEM_DAYS = 400


HOLD_ITEM_DAYS = 2


_PERIOD_WORD = {"day": "daily", "month": "monthly"}


_CODE_RE = re.compile(r"^[a-z0-9_]{1,64}$")


# --- the ledger ---------------------------------------------------------------------------------------------
@dataclass
class UsageLedger(UsageTable):
    """The usage table: budget reservations, settlements and the per-day usage of each account."""

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
        except FAULTS as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
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
        except FAULTS:  # the refusal stands; only its message is less precise
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
        except FAULTS as exc:
            raise _unavailable(exc) from exc

    # settling ------------------------------------------------------------------------------------------------
    def settle(self, hold: Hold, spent: Spent, *, requests: int = 1) -> None:
        """Count the request and what it really cost (giving back the rest of its reservation), in one write. A
        failure here only leaves the counters off: the request's answer does not depend on it."""
        try:
            self.dynamodb.update_item(**self._settlement(hold, spent, requests))
        except FAULTS as exc:
            logger.warning("usage not counted", extra={"error": type(exc).__name__, "code": error_code(exc)})

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
            names["#failed"] = f"{day}{FAILURE_PREFIX}{code}"
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
        except FAULTS as exc:  # the counters stay as reserved
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
        except FAULTS as exc:
            raise _unavailable(exc) from exc
        by_month = {item["period"]["S"].removeprefix("month#"): item for item in items}
        report = []
        for back in range(days):
            day = day_of(now - back * 86400)
            report.append(day_report(day, day_view(by_month.get(day[:7]), day)))
        this_month = by_month.get(month_of(now))
        return {
            "object": "usage",
            "days": report,
            "totals": totals(report),
            "budgets": remaining(
                budget,
                {"day": budget_counters(day_view(this_month, day_of(now))), "month": budget_counters(this_month)},
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
        return {"day": budget_counters(day_view(item, hold.day)), "month": budget_counters(item)}

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


def _unavailable(exc: Exception) -> UsageUnavailable:
    logger.warning("usage table unavailable", extra={"error": type(exc).__name__})
    return UsageUnavailable("The key's usage could not be read right now; nothing was generated. Try again.")
