"""A client token's image count in DynamoDB (moto, in process): reservations are conditional and atomic per
request, a refusal counts nothing, unmade images are given back, billed ones never."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from imagecore.accounts.admission import Admission
from imagecore.accounts.budgets import Cost, Spent
from imagecore.accounts.caller import Caller
from imagecore.accounts.token_usage import (
    KEEP_AFTER_EXPIRY_SECONDS,
    ClientTokenGrant,
    TokenHold,
    TokenImageCounter,
    TokenUsageUnavailable,
    images_to_give_back,
)
from imagecore.domain.errors import ServiceMisconfigured, StorageUnavailable, TokenBudgetExceeded, UpstreamFailed

TABLE = "token-usage"
EXPIRES = 1_900_000_000


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        )
        yield client


@pytest.fixture
def counter(dynamodb: Any) -> TokenImageCounter:
    return TokenImageCounter(TABLE, region="us-east-1", client=dynamodb)


def count(dynamodb: Any, token_id: str = "ctk_1") -> int | None:  # noqa: S107 - a token id, not a secret
    item = dynamodb.get_item(TableName=TABLE, Key={"id": {"S": token_id}}, ConsistentRead=True).get("Item")
    return int(item["images"]["N"]) if item else None


def grant(max_images: int | None = 3) -> ClientTokenGrant:
    return ClientTokenGrant(id="ctk_1", expires_at=EXPIRES, max_images=max_images)


def test_reservations_stop_at_the_limit_and_a_refusal_counts_nothing(counter, dynamodb):
    counter.reserve("ctk_1", 2, limit=3, expires_at=EXPIRES)
    assert count(dynamodb) == 2
    with pytest.raises(TokenBudgetExceeded) as refused:
        counter.reserve("ctk_1", 2, limit=3, expires_at=EXPIRES)
    assert (refused.value.status, refused.value.code, refused.value.type) == (
        429,
        "token_budget_exceeded",
        "insufficient_quota",
    )
    assert count(dynamodb) == 2
    counter.reserve("ctk_1", 1, limit=3, expires_at=EXPIRES)
    assert count(dynamodb) == 3
    item = dynamodb.get_item(TableName=TABLE, Key={"id": {"S": "ctk_1"}})["Item"]
    assert int(item["expires_at"]["N"]) == EXPIRES + KEEP_AFTER_EXPIRY_SECONDS  # gone after the token


def test_more_than_the_limit_at_once_is_refused_without_a_write(counter, dynamodb):
    with pytest.raises(TokenBudgetExceeded):
        counter.reserve("ctk_1", 4, limit=3, expires_at=EXPIRES)
    assert count(dynamodb) is None


def test_tokens_are_counted_apart(counter, dynamodb):
    counter.reserve("ctk_1", 3, limit=3, expires_at=EXPIRES)
    counter.reserve("ctk_2", 3, limit=3, expires_at=EXPIRES)
    assert (count(dynamodb, "ctk_1"), count(dynamodb, "ctk_2")) == (3, 3)


def admitted(counter: TokenImageCounter | None, token: ClientTokenGrant | None, n: int):
    """The client token's part of an admission hold for ``n`` images (no budgets)."""
    return Admission(token_images=counter).hold(Caller("key", "owner", token=token), Cost(images=n, tokens=0), images=n)


def test_a_success_gives_back_what_was_not_made(counter, dynamodb):
    with admitted(counter, grant(), 3) as hold:
        hold.settle(Spent(images=1), images=1)
    assert count(dynamodb) == 1


def test_images_made_beyond_the_reservation_count_and_close_the_token(counter, dynamodb):
    """A Responses request reserves one image; its text model drew three: all three count, over the limit."""
    with admitted(counter, grant(max_images=2), 1) as hold:
        assert count(dynamodb) == 1
        hold.settle(Spent(images=3), images=3)
    assert count(dynamodb) == 3
    with pytest.raises(TokenBudgetExceeded), admitted(counter, grant(max_images=2), 1):
        pass
    assert count(dynamodb) == 3


def test_a_failure_gives_everything_back(counter, dynamodb):
    with pytest.raises(UpstreamFailed), admitted(counter, grant(), 2):
        raise UpstreamFailed("no")
    assert count(dynamodb) == 0


def test_images_made_but_not_stored_stay_counted(counter, dynamodb):
    with pytest.raises(StorageUnavailable), admitted(counter, grant(), 2):
        raise StorageUnavailable("S3 refused them")
    assert count(dynamodb) == 2  # the upstream made (and billed) them


def test_without_a_limit_nothing_is_counted(dynamodb):
    calls: list[int] = []
    for token in (None, grant(max_images=None)):
        with admitted(None, token, 5) as hold:
            calls.append(1)
            hold.settle(Spent(images=5), images=5)
    assert calls == [1, 1]
    assert dynamodb.scan(TableName=TABLE)["Items"] == []


def test_a_limit_without_a_table_fails_closed():
    produced: list[int] = []
    with pytest.raises(ServiceMisconfigured), admitted(None, grant(), 1):
        produced.append(1)
    assert produced == []


def test_an_unreachable_table_is_a_503_and_nothing_runs(dynamodb):
    counter = TokenImageCounter("no-such-table", region="us-east-1", client=dynamodb)
    produced: list[int] = []
    with pytest.raises(TokenUsageUnavailable) as unavailable, admitted(counter, grant(), 1):
        produced.append(1)
    assert (unavailable.value.status, unavailable.value.code) == (503, "token_usage_unavailable")
    assert produced == []


@pytest.mark.parametrize(
    ("made", "failure", "upstream_calls", "back"),
    [
        (2, None, 1, 0),  # completed with all it asked
        (1, None, 1, 1),  # completed with fewer: the rest
        (0, None, 1, 2),
        (None, "content_policy_violation", 1, 2),  # the upstream refused: nothing billed
        (None, "upstream_error", 1, 2),
        (None, "storage_unavailable", 1, 0),  # made and billed, then lost
        (None, "job_interrupted", 2, 0),  # a run that asked died: it may have been billed
        (None, "job_abandoned", 0, 2),  # never got as far as the upstream
        (None, "job_abandoned", 1, 0),
        (None, "task_timeout", 0, 2),
        (None, "task_timeout", 1, 0),
    ],
)
def test_an_ended_task_gives_back_what_it_did_not_make(made, failure, upstream_calls, back):
    assert images_to_give_back(TokenHold("tok-1", 2), made, failure, upstream_calls) == back
