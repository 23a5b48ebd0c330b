"""``Idempotency-Key`` on POSTs, with Powertools Idempotency on DynamoDB.

A retry with the same key (same caller, same route) gets the first answer back for 24 hours: the same S3
objects (with fresh URLs), no second upstream call, no second bill. The same key with a different request is a
422; a retry while the first is still running is a 409. Failures are not remembered, so a retry after one runs
again.

A first run that dies (a timeout, a crash) leaves its record "in progress" until the time that invocation could
have lived is over (Powertools' in-progress expiry, from the Lambda context): until then a retry is a 409, after
it the retry runs. What it then runs is the caller's ``produce``; the synchronous image routes make that look in
the key's own folder first, so the images the dead run paid for are answered rather than paid again
(``runtime.ImageRuntime.deliver``).

A record stays small whatever the request: it holds a digest of the request and a reference to the result (the
S3 key of a ``result.json``, a task id), never the request, the prompt or the images, so no request is refused
for the size of its own record. And the store failing is never reported as "not run" once the request ran: the
caller gets what was made (or the error it met), the record is only a shortcut for a retry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.domain.errors import ImageServiceError, InvalidRequest
from imagecore.platform import aws
from imagecore.platform.observability import current_record, logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

HEADER = "idempotency-key"
EXPIRES_AFTER_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255

T = TypeVar("T")


class IdempotencyConflict(ImageServiceError):
    status = 409
    type = "invalid_request_error"
    code = "idempotency_request_in_progress"


class IdempotencyKeyReused(ImageServiceError):
    status = 422
    type = "invalid_request_error"
    code = "idempotency_key_reused"


class IdempotencyUnavailable(ImageServiceError):
    status = 503
    type = "server_error"
    code = "idempotency_unavailable"


class _NotRemembered(Exception):
    """Carries a result that must reach the caller but not be remembered (e.g. images S3 refused)."""

    def __init__(self, value: Any) -> None:
        super().__init__("not remembered")
        self.value = value


def idempotency_key(event: dict[str, Any]) -> str | None:
    """The ``Idempotency-Key`` header, whatever its case; None when absent."""
    for name, value in (event.get("headers") or {}).items():
        if name.lower() == HEADER and isinstance(value, str):
            key = value.strip()
            if not key:
                return None
            if len(key) > MAX_KEY_LENGTH or not key.isprintable():
                raise InvalidRequest(
                    f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters.", param="Idempotency-Key"
                )
            return key
    return None


def answer_once(
    guard: Idempotency | None,
    event: dict[str, Any],
    context: LambdaContext,
    *,
    scope: str,
    payload: Any,
    produce: Callable[[], T],
    encode: Callable[[T], dict[str, Any] | None],
    decode: Callable[[dict[str, Any]], T],
    key: str | None = None,
) -> T:
    """The one idempotent path of every POST: ``produce()`` once per (caller, route scope, Idempotency-Key).
    The header is checked even where no idempotency table is configured, so a bad key is refused alike. ``key``
    stands in for a request that sent none (a key the service made for it)."""
    key = idempotency_key(event) or key
    if guard is None:
        return produce()
    return guard.once(
        key=key,
        scope=f"{idempotency_subject()}#{scope}",
        payload=payload,
        context=context,
        produce=produce,
        encode=encode,
        decode=decode,
    )


def idempotency_subject() -> str:
    """Whose Idempotency-Keys a request's is among: its key's owner, or, sent with a client token, that token's
    (two browser users of one app who both pick ``order-42`` never get each other's images)."""
    record = current_record()
    owner = record.owner_id or "anonymous"
    return f"{owner}/{record.client_token_id}" if record.client_token_id else owner


def digest(payload: Any) -> str:
    """A stable fingerprint of a request: the same content gives the same digest (multipart boundaries and
    JSON key order do not matter, because callers pass the parsed request)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class Idempotency:
    """Powertools' idempotency utility, its DynamoDB persistence layer (which imports boto3) and the DynamoDB
    client are loaded and made with the first request carrying an Idempotency-Key: a cold start answering a
    request without one does not pay for them."""

    def __init__(self, table_name: str, *, region: str) -> None:
        self._table_name = table_name
        self._region = region

    @cached_property
    def client(self) -> Any:
        return aws.client("dynamodb", region_name=self._region)

    @cached_property
    def _store(self) -> DynamoDBPersistenceLayer:
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

        return DynamoDBPersistenceLayer(table_name=self._table_name, boto3_client=self.client)

    def once(
        self,
        *,
        key: str | None,
        scope: str,
        payload: Any,
        context: LambdaContext,
        produce: Callable[[], T],
        encode: Callable[[T], dict[str, Any] | None],
        decode: Callable[[dict[str, Any]], T],
    ) -> T:
        """``produce()`` once per (scope, key); a replay returns ``decode(<the remembered encode(first)>)``.
        When ``encode`` answers None the result goes to the caller but is not remembered."""
        if key is None:
            return produce()
        from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyPersistenceLayerError,
            IdempotencyValidationError,
        )

        fresh: list[T] = []
        replayed: list[bool] = []
        ran: list[bool] = []
        raised: list[BaseException] = []

        def mark_replay(response: Any, idempotent_data: DataRecord) -> Any:
            del idempotent_data  # only the fact of a replay matters here
            replayed.append(True)
            return response

        config = IdempotencyConfig(
            event_key_jmespath="key",
            payload_validation_jmespath="payload",
            expires_after_seconds=EXPIRES_AFTER_SECONDS,
            response_hook=mark_replay,
        )
        config.register_lambda_context(context)

        @idempotent_function(data_keyword_argument="request", persistence_store=self._store, config=config)
        def run(request: dict[str, Any]) -> dict[str, Any]:
            ran.append(True)
            try:
                value = produce()
            except BaseException as exc:
                raised.append(exc)
                raise
            fresh.append(value)
            encoded = encode(value)
            if encoded is None:
                raise _NotRemembered(value)
            return encoded

        try:
            remembered = run(request={"key": f"{scope}#{key}", "payload": digest(payload)})
        except _NotRemembered as kept:
            unremembered: T = kept.value
            return unremembered
        except (IdempotencyValidationError, IdempotencyAlreadyInProgressError) as refused:
            raise _refusal(refused) from None
        except IdempotencyPersistenceLayerError as failure:
            if not ran:
                raise IdempotencyUnavailable(
                    "The idempotency store did not answer; the request was not run. Try again.",
                ) from None
            # It ran: the caller gets what it made (or the error it met), only the record is missing.
            logger.warning("idempotency record not written", extra={"reason": str(failure)[:200]})
            current_record().idempotent_replay = False
            if fresh:
                return fresh[0]
            raise raised[0] from None
        current_record().idempotent_replay = bool(replayed)
        if fresh and not replayed:
            return fresh[0]
        return decode(remembered)


def _refusal(refused: Exception) -> ImageServiceError:
    from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyValidationError

    if isinstance(refused, IdempotencyValidationError):
        return IdempotencyKeyReused(
            "This Idempotency-Key was already used with a different request. Use a new key for a new request.",
            param="Idempotency-Key",
        )
    return IdempotencyConflict(
        "A request with this Idempotency-Key is still running; retry in a few seconds.",
        param="Idempotency-Key",
        headers={"Retry-After": "5"},
    )
