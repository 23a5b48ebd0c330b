"""Admission: what a generation or edit must hold before the upstream is asked, entered around the work.

```python
with admission.hold(caller, cost, images=n) as hold:
    with service.generation(...) as answer:  # the upstream has answered; its last image is being stored
        spent = Spent.from_record(record)
        hold.settle(spent, images=spent.images)
delivery = answer.delivery
```

A hold is a list of reservations entered in order (the key's image and token budget in the usage ledger, then
the client token's image count); a refusal by one gives back those entered before it. On the way out, in the
reverse order, each is settled with what the work really cost when ``settle`` was called, or released when the
work raised (whatever it raised, ``BaseException`` included): a failure is counted with its error code, and the
client token gets back the images that were not made.

An async task holds the same way while it is queued (``hold_task``): the request counts now, while its images
and tokens stay reserved under the task's id for the worker to settle (``UsageLedger.settle_task``, the token's
``TokenHold`` on the task); if it is not queued, everything is given back.

The per-key concurrency leases come first (``LeaseReservation``, one per slot of the caller: its key's, and its
client token's own when lower): a request over its key's limit is refused at once, before any budget is touched.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from imagecore.accounts.budgets import BudgetExceeded, Cost, Hold, Spent, day_of, month_of
from imagecore.accounts.caller import Caller
from imagecore.accounts.concurrency import ConcurrencyLeases, Slot
from imagecore.accounts.ledger import UsageLedger
from imagecore.accounts.token_usage import TokenHold, TokenImageCounter
from imagecore.domain.deadline import Deadline
from imagecore.domain.errors import (
    BILLED_FAILURE_CODES,
    ImageServiceError,
    ServiceMisconfigured,
    StorageUnavailable,
    TasksUnavailable,
)
from imagecore.platform.observability import RequestRecord, current_record
from imagecore.platform.settings import ImageSettings

# What a failure that is not one of the service's own errors is counted as.
INTERNAL_ERROR = "internal_error"


class Reservation(Protocol):
    """One thing a request holds while it runs."""

    def reserve(self) -> None:
        """Take it, or raise (nothing taken)."""

    def settle(self, spent: Spent, images: int) -> None:
        """The work is done: it cost ``spent`` and made ``images`` images."""

    def release(self, error: BaseException) -> None:
        """The work (or a later reservation) failed with ``error``."""


def failure_code(error: BaseException, fallback: str = INTERNAL_ERROR) -> str | None:
    return error.code if isinstance(error, ImageServiceError) else fallback


# --- the reservations ---------------------------------------------------------------------------------------
@dataclass
class LeaseReservation:
    """One concurrency lease (``imagecore.accounts.concurrency``): taken before anything else (429
    ``concurrency_exceeded`` at once when the slot is full), given back however the work ends, and expiring by
    itself at ``expires_at`` should the invocation die holding it."""

    leases: ConcurrencyLeases
    slot: Slot
    expires_at: float
    lease_id: str | None = None

    def reserve(self) -> None:
        self.lease_id = self.leases.acquire(self.slot, self.expires_at)

    def settle(self, spent: Spent, images: int) -> None:
        del spent, images
        self._give_back()

    def release(self, error: BaseException) -> None:
        del error
        self._give_back()

    def _give_back(self) -> None:
        if self.lease_id is not None:
            self.leases.release(self.slot.subject, self.lease_id)
            self.lease_id = None


@dataclass
class BudgetReservation:
    """The key's image and token budgets, reserved with one conditional write; settled with the request's real
    usage (a failure with its code and what its record says it used). A refusal is itself counted."""

    ledger: UsageLedger
    caller: Caller
    cost: Cost
    record: RequestRecord
    hold: Hold | None = None

    def reserve(self) -> None:
        self.hold = reserve_or_count_refusal(self.ledger, self.caller, self.cost)

    def settle(self, spent: Spent, images: int) -> None:
        assert self.hold is not None
        self.ledger.settle(self.hold, spent)

    def release(self, error: BaseException) -> None:
        assert self.hold is not None
        spent = Spent.from_record(self.record, failure=failure_code(error))
        if spent.failure in BILLED_FAILURE_CODES:
            # The upstream billed an answer the caller never got (a 200 cut short): what was reserved stays spent.
            spent = dataclasses.replace(
                spent,
                images=max(spent.images, self.cost.images),
                output_tokens=max(spent.output_tokens, self.cost.tokens - spent.input_tokens),
            )
        self.ledger.settle(self.hold, spent)


@dataclass
class TaskBudgetReservation:
    """An async task's budget reservation, kept under its id for the worker: the request counts when it is
    queued, its images and tokens when the worker settles the hold; all given back if it is not queued."""

    ledger: UsageLedger
    caller: Caller
    cost: Cost
    task_id: str
    hold: Hold | None = None

    def reserve(self) -> None:
        hold = reserve_or_count_refusal(self.ledger, self.caller, self.cost)
        try:
            self.ledger.hold_for_task(self.task_id, hold)
        except ImageServiceError as error:
            self.ledger.settle(hold, Spent(failure=error.code))
            raise
        self.hold = hold

    def settle(self, spent: Spent, images: int) -> None:
        del spent, images  # the worker settles what the task really cost
        assert self.hold is not None
        self.ledger.settle(Hold(self.hold.account, self.hold.day, self.hold.month), Spent())

    def release(self, error: BaseException) -> None:
        self.ledger.settle_task(self.task_id, Spent(failure=failure_code(error, TasksUnavailable.code)))


@dataclass
class TokenImagesReservation:
    """A client token's ``max_images``: ``n`` images counted before the upstream is asked; what was not made is
    given back (all of it on a failure, none when the upstream made and billed images that were then lost)."""

    counter: TokenImageCounter | None
    token_id: str
    limit: int
    expires_at: int
    n: int

    def reserve(self) -> None:
        if self.counter is None:
            raise ServiceMisconfigured("Client-token image limits are not configured (TOKEN_USAGE_TABLE).")
        self.counter.reserve(self.token_id, self.n, limit=self.limit, expires_at=self.expires_at)

    def settle(self, spent: Spent, images: int) -> None:
        assert self.counter is not None
        if images > self.n:  # a Responses request reserves one image; its text model may draw more
            self.counter.count_more(self.token_id, images - self.n)
        else:
            self.counter.release(self.token_id, self.n - images)

    def release(self, error: BaseException) -> None:
        assert self.counter is not None
        # made (and billed) images stay counted: lost before storing, or a billed answer cut short
        billed = isinstance(error, StorageUnavailable) or failure_code(error) in BILLED_FAILURE_CODES
        if not billed:
            self.counter.release(self.token_id, self.n)


# --- the hold -------------------------------------------------------------------------------------------------
@dataclass
class AdmissionHold:
    """What one request holds; ``settle`` once the work is done."""

    reservations: list[Reservation]
    token_hold: TokenHold | None = None  # an async task's client-token images, kept on the task
    settled: bool = field(default=False, init=False)
    entered: list[Reservation] = field(default_factory=list, init=False)

    def settle(self, spent: Spent, *, images: int) -> None:
        """The work is done: each reservation is settled with what it really cost and made."""
        for reservation in reversed(self.entered):
            reservation.settle(spent, images)
        self.settled = True

    def _enter(self) -> None:
        for reservation in self.reservations:
            try:
                reservation.reserve()
            except BaseException as refused:
                self._release(refused)
                raise
            self.entered.append(reservation)

    def _release(self, error: BaseException) -> None:
        for reservation in reversed(self.entered):
            reservation.release(error)
        self.entered.clear()


@dataclass
class Admission:
    """The concurrency leases, the usage ledger (budgets) and the client tokens' image counts; any may be
    unconfigured. A lease lasts until the request's deadline plus ``lease_margin_seconds`` (storing and
    answering after the upstream)."""

    ledger: UsageLedger | None = None
    token_images: TokenImageCounter | None = None
    leases: ConcurrencyLeases | None = None
    lease_margin_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: ImageSettings) -> Admission:
        """What an image function's settings configure (the leases live in the usage table)."""
        region = settings.aws_region
        ledger = UsageLedger(settings.usage_table, region=region) if settings.usage_table else None
        return cls(
            ledger,
            TokenImageCounter(settings.token_usage_table, region=region) if settings.token_usage_table else None,
            ConcurrencyLeases.beside(ledger) if ledger else None,
            lease_margin_seconds=settings.storage_margin_seconds,
        )

    @contextmanager
    def hold(
        self,
        caller: Caller,
        cost: Cost,
        *,
        images: int,
        record: RequestRecord | None = None,
        deadline: Deadline | None = None,
    ) -> Iterator[AdmissionHold]:
        """A generation or edit of ``images`` images that may cost ``cost``: reserved on entry (429 before
        anything runs when the caller's concurrency, a budget or the token's limit would be passed), settled or
        released on exit. A failure is counted with what the request's ``record`` (the current one by default)
        says it used. ``deadline``: when the work must be over (the leases expire a margin after it)."""
        record = record or current_record()
        reservations: list[Reservation] = list(self.leases_for(caller, deadline))
        if self.ledger is not None:
            reservations.append(BudgetReservation(self.ledger, caller, cost, record))
        reservations.extend(self._token_images(caller, images))
        with self._held(AdmissionHold(reservations)) as hold:
            yield hold

    @contextmanager
    def hold_task(self, caller: Caller, cost: Cost, *, images: int, task_id: str) -> Iterator[AdmissionHold]:
        """An async task being queued: ``hold.token_hold`` goes on the task; ``hold.settle`` once it is queued
        (its figures are ignored: the worker settles the task's real cost)."""
        reservations: list[Reservation] = []
        if self.ledger is not None:
            reservations.append(TaskBudgetReservation(self.ledger, caller, cost, task_id))
        counted = self._token_images(caller, images)
        reservations.extend(counted)
        token_hold = TokenHold(counted[0].token_id, images) if counted else None
        with self._held(AdmissionHold(reservations, token_hold)) as hold:
            yield hold

    @staticmethod
    @contextmanager
    def _held(hold: AdmissionHold) -> Iterator[AdmissionHold]:
        hold._enter()
        try:
            yield hold
        except BaseException as error:
            if not hold.settled:
                hold._release(error)
            raise
        if not hold.settled:  # left without a word: nothing was made
            hold.settle(Spent(), images=0)

    def leases_for(self, caller: Caller, deadline: Deadline | None) -> list[LeaseReservation]:
        """A lease in each of the caller's concurrency slots (none without a table or a limit)."""
        if self.leases is None:
            return []
        remaining = deadline.remaining() if deadline is not None else 300.0
        expires_at = time.time() + max(0.0, remaining) + self.lease_margin_seconds
        return [LeaseReservation(self.leases, slot, expires_at) for slot in caller.slots()]

    def _token_images(self, caller: Caller, images: int) -> list[TokenImagesReservation]:
        token = caller.token
        if token is None or token.max_images is None:
            return []
        return [TokenImagesReservation(self.token_images, token.id, token.max_images, token.expires_at, images)]


def reserve_or_count_refusal(ledger: UsageLedger, caller: Caller, cost: Cost) -> Hold:
    """``ledger.reserve``; a refusal is counted as a request that failed with ``budget_exceeded``."""
    try:
        return ledger.reserve(caller.owner_id, caller.budget, cost)
    except BudgetExceeded:
        now = ledger.clock()
        ledger.settle(Hold(caller.owner_id, day_of(now), month_of(now)), Spent(failure=BudgetExceeded.code))
        raise
