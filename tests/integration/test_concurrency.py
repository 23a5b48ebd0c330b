"""Per-key concurrency leases in DynamoDB (moto): at most ``limit`` live leases per subject, expired ones do not
count and are pruned, every exit gives the lease back, and concurrent requests from threads never take more
slots than there are."""

from __future__ import annotations

import threading
from typing import Any

import boto3
import pytest

from imagecore.accounts.concurrency import ConcurrencyExceeded, ConcurrencyLeases, Slot, slots_for
from imagecore.accounts.ledger import UsageLedger

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def leases(aws_resources: Any, clock: Clock) -> ConcurrencyLeases:
    return ConcurrencyLeases(
        aws_resources.usage_table, client=boto3.client("dynamodb", region_name="us-east-1"), clock=clock
    )


def test_a_key_holds_at_most_its_limit_and_a_released_slot_is_free_again(leases: ConcurrencyLeases) -> None:
    slot = Slot("own_a", 2)
    first = leases.acquire(slot, NOW + 60)
    leases.acquire(slot, NOW + 60)

    with pytest.raises(ConcurrencyExceeded) as refused:
        leases.acquire(slot, NOW + 60)
    assert refused.value.status == 429
    assert refused.value.code == "concurrency_exceeded"
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 5
    assert "at most 2 at once" in refused.value.message
    # another key is not affected
    leases.acquire(Slot("own_b", 2), NOW + 60)

    leases.release("own_a", first)
    assert leases.in_flight("own_a") == 1
    leases.acquire(slot, NOW + 60)
    assert leases.in_flight("own_a") == 2


def test_expired_leases_do_not_count_and_are_pruned(
    leases: ConcurrencyLeases, clock: Clock, aws_resources: Any
) -> None:
    slot = Slot("own_a", 1)
    leases.acquire(slot, NOW + 30)  # a crashed invocation never gives this back
    with pytest.raises(ConcurrencyExceeded):
        leases.acquire(slot, NOW + 30)

    clock.now = NOW + 32
    leases.acquire(slot, NOW + 90)
    item = leases.dynamodb.get_item(
        TableName=aws_resources.usage_table, Key={"account": {"S": "lease#own_a"}, "period": {"S": "leases"}}
    )["Item"]
    assert len(item["leases"]["M"]) == 1  # the expired one was dropped
    assert int(item["expires_at"]["N"]) > NOW + 90  # the item goes by TTL after its last lease


def test_a_lease_under_the_limit_is_one_write_and_a_full_item_is_read_first(leases: ConcurrencyLeases) -> None:
    calls: list[str] = []
    leases.dynamodb.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
    slot = Slot("own_a", 2)
    first = leases.acquire(slot, NOW + 60)  # no item yet: read, then created
    assert calls == ["UpdateItem", "GetItem", "PutItem"]

    calls.clear()
    leases.acquire(slot, NOW + 60)
    assert calls == ["UpdateItem"]

    calls.clear()
    with pytest.raises(ConcurrencyExceeded):
        leases.acquire(slot, NOW + 60)
    assert calls == ["UpdateItem", "GetItem"]

    calls.clear()
    leases.release("own_a", first)
    leases.acquire(slot, NOW + 60)
    assert calls == ["UpdateItem", "UpdateItem"]
    assert leases.in_flight("own_a") == 2


def test_hold_gives_back_on_every_exit_and_takes_nothing_when_a_slot_is_full(leases: ConcurrencyLeases) -> None:
    slots = slots_for("own_a", 3, "ctk_1", 1)
    assert [slot.subject for slot in slots] == ["token#ctk_1", "own_a"]

    with pytest.raises(RuntimeError), leases.hold(slots, NOW + 60):
        assert leases.in_flight("own_a") == 1 and leases.in_flight("token#ctk_1") == 1
        raise RuntimeError("the upstream failed")
    assert leases.in_flight("own_a") == 0 and leases.in_flight("token#ctk_1") == 0

    with leases.hold(slots, NOW + 60):
        # the token's own limit of 1 refuses a second request of it before the key's slot is touched
        with pytest.raises(ConcurrencyExceeded) as refused, leases.hold(slots, NOW + 60):
            pass
        assert "this client token" in refused.value.message
        assert leases.in_flight("own_a") == 1
        # another token of the same key only has the key's limit
        with leases.hold(slots_for("own_a", 3, "ctk_2", None), NOW + 60):
            assert leases.in_flight("own_a") == 2
    assert leases.in_flight("own_a") == 0


def test_no_limit_takes_no_lease() -> None:
    assert slots_for("own_a", None, None, None) == []
    assert slots_for("own_a", 0, "ctk_1", None) == []


@pytest.fixture
def served_dynamodb(served_aws: Any) -> tuple[Any, str]:
    """DynamoDB over HTTP with the local stack's moto app (one DynamoDB call at a time, as DynamoDB applies a
    conditional write atomically), the usage table made there."""
    return served_aws.client("dynamodb"), served_aws.resources.usage_table


def test_concurrent_requests_from_threads_never_hold_more_than_the_limit(served_dynamodb: Any) -> None:
    client, table = served_dynamodb
    leases = ConcurrencyLeases(table, client=client)
    slot, limit, threads = Slot("own_greedy", 3), 3, 12
    start = threading.Barrier(threads)
    done_trying = threading.Semaphore(0)
    release = threading.Event()
    outcomes: list[str] = []
    lock = threading.Lock()

    def request() -> None:
        start.wait()
        try:
            with leases.hold([slot], leases.clock() + 60):
                with lock:
                    outcomes.append("served")
                done_trying.release()
                release.wait(30)  # every one that got a slot holds it until all have tried
        except ConcurrencyExceeded:
            with lock:
                outcomes.append("refused")
            done_trying.release()

    workers = [threading.Thread(target=request) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for _ in range(threads):
        assert done_trying.acquire(timeout=60)
    held = leases.in_flight("own_greedy")
    release.set()
    for worker in workers:
        worker.join(30)

    assert outcomes.count("served") == limit
    assert outcomes.count("refused") == threads - limit
    assert held == limit
    assert leases.in_flight("own_greedy") == 0  # every lease was given back


def test_a_running_task_waits_for_a_slot_then_runs_anyway_and_counts_meanwhile(leases: ConcurrencyLeases) -> None:
    slot = Slot("own_a", 1)
    waits: list[float] = []
    busy = leases.acquire(slot, NOW + 60)  # a synchronous request of the key holds its only slot

    with leases.hold_waiting(slot, NOW + 60, wait_seconds=3, sleep=waits.append):
        assert waits == [1.0, 1.0, 1.0]  # it waited, then ran rather than be dropped
        assert leases.in_flight("own_a") == 2
    assert leases.in_flight("own_a") == 1

    leases.release("own_a", busy)
    # a synchronous request of the same key is refused while the task runs
    with leases.hold_waiting(slot, NOW + 60, wait_seconds=3, sleep=waits.append), pytest.raises(ConcurrencyExceeded):
        leases.acquire(slot, NOW + 60)
    assert leases.in_flight("own_a") == 0


def test_the_leases_beside_the_ledger_work_through_its_one_client(aws_resources: Any, clock: Clock) -> None:
    ledger = UsageLedger(aws_resources.usage_table, region="us-east-1", clock=clock)
    leases = ConcurrencyLeases.beside(ledger)

    assert leases.dynamodb is ledger.dynamodb  # one client made for the table, not one per user
    assert (leases.table, leases.region, leases.clock) == (ledger.table, ledger.region, ledger.clock)
    leases.release("own_b", leases.acquire(Slot("own_b", 1), NOW + 60))
