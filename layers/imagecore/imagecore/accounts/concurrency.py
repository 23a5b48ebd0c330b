"""Per-key concurrency: how many image requests a key (and a client token of it) may have in flight at once.

A request that lasts minutes is not bounded by requests-per-second limits, so one key could hold every
execution an image function has. Each in-flight request (sync, streamed, Responses, or an async task while
the worker runs it) holds a *lease*: an id with an expiry, kept in one item per subject (a key's owner id, or
a client token's id) in the usage table (``account = "lease#<subject>"``, ``period = "leases"``).

Taking a lease is one conditional ``UpdateItem`` when the item holds fewer leases than the limit, expired ones
included (the usual case: a request gives its lease back when it ends). Otherwise (no item yet, or the limit
reached on paper) it reads the item, drops the leases that have expired, and writes the live ones plus the new
one back with one conditional write on the item's ``version`` (created only if absent): the write succeeds only
if nobody changed the item since it was read, so two concurrent requests cannot both take the last slot; the
loser reads again. Every write bumps the version. Giving a lease back removes its id in one update. A lease
expires with the request's deadline, so an invocation that crashed (or a Lambda that timed out) holds no slot
past it.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from imagecore.accounts.usage_table import FAULTS, UsageTable, error_code
from imagecore.domain.errors import ImageServiceError
from imagecore.platform.observability import logger

LEASE_PREFIX = "lease#"
LEASE_PERIOD = "leases"
# How many times a contended write is read again and retried before the request is refused as busy.
MAX_ATTEMPTS = 30
# The item outlives its last lease by this much (DynamoDB TTL), then goes by itself.
KEEP_SECONDS = 3600
# What a refusal tells the client to wait: a slot frees when a request ends, which is not known in advance.
RETRY_AFTER_SECONDS = 5
# A lease's expiry never falls sooner than this after it was taken, whatever the deadline says.
MIN_LEASE_SECONDS = 5


class ConcurrencyExceeded(ImageServiceError):
    """The key (or client token) already has as many image requests in flight as it may: nothing was run."""

    status = 429
    type = "rate_limit_error"
    code = "concurrency_exceeded"


@dataclass(frozen=True)
class Slot:
    """One limit a request takes a lease under: ``subject`` (a key's owner id, or ``token#<id>``) and its
    maximum of leases in flight."""

    subject: str
    limit: int
    what: str = "this API key"


def slots_for(owner: str, key_limit: int | None, token_id: str | None, token_limit: int | None) -> list[Slot]:
    """The leases a request takes: its key's (a client token's requests count in its parent key's), and the
    token's own when it carries a lower limit. A limit of None or 0 is no limit."""
    slots = []
    if token_id is not None and token_limit:
        slots.append(Slot(f"token#{token_id}", token_limit, "this client token"))
    if key_limit:
        slots.append(Slot(owner, key_limit))
    return slots


@dataclass
class ConcurrencyLeases(UsageTable):
    """The leases, in the usage table."""

    @contextmanager
    def hold(self, slots: Sequence[Slot], expires_at: float) -> Iterator[None]:
        """Hold a lease in each slot while the block runs (``ConcurrencyExceeded``, with none held, when one is
        full); all are given back however the block ends."""
        taken: list[tuple[Slot, str]] = []
        try:
            for slot in slots:
                taken.append((slot, self.acquire(slot, expires_at)))
            yield
        finally:
            for slot, lease_id in reversed(taken):
                self.release(slot.subject, lease_id)

    @contextmanager
    def hold_waiting(
        self, slot: Slot, expires_at: float, *, wait_seconds: float, sleep: Callable[[float], None] = time.sleep
    ) -> Iterator[None]:
        """A lease for work that must run anyway (an async task the worker took from the queue): while the slot
        is full it waits for one to free (up to ``wait_seconds``), then holds one regardless, so the key's
        synchronous requests are refused while its tasks run and no task is ever dropped."""
        waited = 0.0
        while True:
            try:
                lease_id = self.acquire(slot, expires_at)
                break
            except ConcurrencyExceeded:
                if waited >= wait_seconds:
                    lease_id = self.acquire(Slot(slot.subject, 2**31), expires_at)
                    break
                sleep(1.0)
                waited += 1.0
        try:
            yield
        finally:
            self.release(slot.subject, lease_id)

    def acquire(self, slot: Slot, expires_at: float) -> str:
        """A new lease id under ``slot``, valid until ``expires_at`` (epoch seconds); ``ConcurrencyExceeded``
        when ``slot.limit`` live leases are already out."""
        lease_id = secrets.token_hex(8)
        try:
            if self._add(slot, lease_id, self._expiry(expires_at)):
                return lease_id
        except FAULTS as exc:
            return self._unavailable(exc, lease_id)
        for _attempt in range(MAX_ATTEMPTS):
            now = self.clock()
            try:
                item = self.dynamodb.get_item(
                    TableName=self.table, Key=self._key(slot.subject), ConsistentRead=True
                ).get("Item")
            except FAULTS as exc:
                return self._unavailable(exc, lease_id)
            live = {
                lease: int(value["N"])
                for lease, value in ((item or {}).get("leases", {}).get("M", {})).items()
                if int(value["N"]) > now
            }
            if len(live) >= slot.limit:
                raise self._refusal(slot, live.values(), now)
            live[lease_id] = self._expiry(expires_at)
            try:
                if self._write(slot.subject, live, item):
                    return lease_id
            except FAULTS as exc:
                return self._unavailable(exc, lease_id)
            time.sleep(random.uniform(0.002, 0.02))  # noqa: S311 - jitter, not a secret
        logger.warning("concurrency lease contended", extra={"attempts": MAX_ATTEMPTS})
        raise self._refusal(slot, (), self.clock())

    def release(self, subject: str, lease_id: str) -> None:
        """Give a lease back (a fault is logged: the lease then ends at its expiry)."""
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key=self._key(subject),
                UpdateExpression="REMOVE leases.#lease ADD version :one",
                ConditionExpression="attribute_exists(account)",
                ExpressionAttributeNames={"#lease": lease_id},
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
        except FAULTS as exc:
            logger.warning("concurrency lease not given back", extra={"error": type(exc).__name__})

    def in_flight(self, subject: str) -> int:
        """How many live leases ``subject`` holds now."""
        item = self.dynamodb.get_item(TableName=self.table, Key=self._key(subject), ConsistentRead=True).get("Item")
        now = self.clock()
        return sum(1 for value in (item or {}).get("leases", {}).get("M", {}).values() if int(value["N"]) > now)

    def _expiry(self, expires_at: float) -> int:
        return int(max(expires_at, self.clock() + MIN_LEASE_SECONDS)) + 1

    def _add(self, slot: Slot, lease_id: str, expiry: int) -> bool:
        """Add a lease with one write if the item holds fewer than ``slot.limit`` leases, live or not; False (and
        nothing written) otherwise, or when there is no item yet. The item's TTL moves to this lease's expiry plus
        ``KEEP_SECONDS``: every lease ends within a request's deadline, far less than that."""
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key=self._key(slot.subject),
                UpdateExpression="SET leases.#lease = :expiry, expires_at = :keep ADD version :one",
                ConditionExpression="attribute_exists(leases) AND size(leases) < :limit",
                ExpressionAttributeNames={"#lease": lease_id},
                ExpressionAttributeValues={
                    ":expiry": {"N": str(expiry)},
                    ":keep": {"N": str(expiry + KEEP_SECONDS)},
                    ":one": {"N": "1"},
                    ":limit": {"N": str(slot.limit)},
                },
            )
        except FAULTS as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _write(self, subject: str, live: dict[str, int], item: dict[str, Any] | None) -> bool:
        """Write ``live`` as the subject's leases if the item is still as read; False if it changed."""
        version = int(item["version"]["N"]) if item and "version" in item else 0
        put: dict[str, Any] = {
            "TableName": self.table,
            "Item": {
                **self._key(subject),
                "leases": {"M": {lease: {"N": str(expiry)} for lease, expiry in live.items()}},
                "version": {"N": str(version + 1)},
                "expires_at": {"N": str(max(live.values()) + KEEP_SECONDS)},
            },
        }
        if item is None:
            put["ConditionExpression"] = "attribute_not_exists(account)"
        else:
            put["ConditionExpression"] = "version = :version"
            put["ExpressionAttributeValues"] = {":version": {"N": str(version)}}
        try:
            self.dynamodb.put_item(**put)
        except FAULTS as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _unavailable(self, exc: BaseException, lease_id: str) -> str:
        """The table cannot be read: the request goes on without a lease (a limit on fairness is not worth
        refusing every request for); the release of this id then changes nothing."""
        logger.warning("concurrency lease not taken", extra={"error": type(exc).__name__})
        return lease_id

    @staticmethod
    def _refusal(slot: Slot, expiries: Any, now: float) -> ConcurrencyExceeded:
        soonest = min(expiries, default=now + RETRY_AFTER_SECONDS)
        retry_after = max(1, min(RETRY_AFTER_SECONDS, round(soonest - now)))
        return ConcurrencyExceeded(
            f"Too many image requests in flight for {slot.what}: at most {slot.limit} at once. Wait for one to "
            f"finish, or retry after {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

    @staticmethod
    def _key(subject: str) -> dict[str, Any]:
        return {"account": {"S": LEASE_PREFIX + subject}, "period": {"S": LEASE_PERIOD}}
