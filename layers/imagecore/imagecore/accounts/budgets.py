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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from imagecore.domain.errors import ImageServiceError
from imagecore.platform.observability import RequestRecord

T = TypeVar("T")

Period = Literal["day", "month"]
Unit = Literal["images", "tokens"]

MAX_USAGE_DAYS = 90

# Output tokens per 1024x1024 image for each quality (OpenAI's published table for GPT image models); "auto"
# is reserved as "high" so that a reservation is never below what a request can be billed.
_OUTPUT_TOKENS_1M = {"low": 272, "medium": 1056, "high": 4160, "auto": 4160}
_LARGEST_AUTO_PIXELS = 1536 * 1024
_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")
# Input tokens of one reference image of an edit (an upper bound of what the upstream reports).
_INPUT_IMAGE_TOKENS = 1536


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
