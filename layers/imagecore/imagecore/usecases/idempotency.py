"""``Idempotency-Key`` on POSTs, with Powertools Idempotency on DynamoDB.

A retry with the same key (same caller, same route) gets the first answer back for 24 hours: the same S3
objects (with fresh URLs), no second upstream call, no second bill. The same key with a different request is a
422; a retry while the first is still running is a 409. Failures are not remembered, so a retry after one runs
again.

A first run that dies (a timeout, a crash) leaves its record "in progress" until the time that invocation could
have lived is over (Powertools' in-progress expiry, from the Lambda context): until then a retry is a 409, after
it the retry runs. What it then runs is the use case given to ``Idempotency.once`` (the only function here that
takes one as a callable); the synchronous image use cases look in the key's own folder first, so the images
the dead run paid for are answered rather than paid again (``usecases.deliveries``).

A record stays small whatever the request: it holds a digest of the request and a reference to the result (the
S3 key of a ``result.json``, a task id), never the request, the prompt or the images, so no request is refused
for the size of its own record. And the store failing is never reported as "not run" once the request ran: the
caller gets what was made (or the error it met), the record is only a shortcut for a retry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from imagecore.domain.errors import ImageServiceError, InvalidRequest
from imagecore.domain.fingerprint import digest
from imagecore.platform import aws
from imagecore.platform.observability import current_record, logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

HEADER = "idempotency-key"
EXPIRES_AFTER_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


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


@dataclass(frozen=True)
class Once:
    """One POST as idempotency sees it: whose (the caller's owner id), which route (``scope``), which key (the
    request's ``Idempotency-Key``, or one the service made for it; None: no key) and which request (``payload``,
    compared by digest)."""

    owner: str
    scope: str
    key: str | None
    payload: Any
    context: LambdaContext

    @classmethod
    def of(cls, event: dict[str, Any], context: LambdaContext, *, scope: str, payload: Any) -> Once:
        """The request's; its ``Idempotency-Key`` is checked here, whether or not a table is configured, so a bad
        key is refused alike."""
        return cls(idempotency_subject(), scope, idempotency_key(event), payload, context)

    def with_key(self, key: str) -> Once:
        return replace(self, key=key)

    def ignoring_presentation(self) -> Once:
        """The same request as far as it decides which images are made: without ``response_format``, which
        changes how the same images are answered, not which."""
        return replace(self, payload=without_presentation(self.payload))


class Codec(Protocol[T]):
    """How a result is remembered (small: a reference, never the images) and recalled for a replay."""

    def remember(self, value: T) -> dict[str, Any] | None:
        """What the record keeps; None: the value reaches the caller but is not remembered."""

    def recall(self, remembered: dict[str, Any]) -> T:
        """The value a replay answers."""


@dataclass(frozen=True)
class ModelCodec(Generic[M]):
    """An answer small enough to be remembered whole (a pydantic model)."""

    model: type[M]

    def remember(self, value: M) -> dict[str, Any] | None:
        return value.model_dump()

    def recall(self, remembered: dict[str, Any]) -> M:
        return self.model.model_validate(remembered)


def without_presentation(payload: Any) -> Any:
    """The request without ``response_format`` (also in its ``parameters``)."""
    if not isinstance(payload, dict):
        return payload
    trimmed = {name: value for name, value in payload.items() if name != "response_format"}
    if isinstance(trimmed.get("parameters"), dict):
        trimmed["parameters"] = without_presentation(trimmed["parameters"])
    return trimmed


def idempotency_subject() -> str:
    """Whose Idempotency-Keys a request's is among: its key's owner, or, sent with a client token, that token's
    (two browser users of one app who both pick ``order-42`` never get each other's images)."""
    record = current_record()
    owner = record.owner_id or "anonymous"
    return f"{owner}/{record.client_token_id}" if record.client_token_id else owner


class Idempotency:
    """Powertools' idempotency utility, its DynamoDB persistence layer (which imports boto3) and the DynamoDB
    client are loaded and made with the first request carrying an Idempotency-Key: a cold start answering a
    request without one does not pay for them."""

    def __init__(self, table_name: str | None, *, region: str) -> None:
        self._table_name = table_name
        self._region = region

    @property
    def enabled(self) -> bool:
        """Whether results are remembered (an idempotency table is configured)."""
        return self._table_name is not None

    @cached_property
    def client(self) -> Any:
        return aws.client("dynamodb", region_name=self._region)

    @cached_property
    def _store(self) -> DynamoDBPersistenceLayer:
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

        assert self._table_name is not None
        return DynamoDBPersistenceLayer(table_name=self._table_name, boto3_client=self.client)

    def once(self, call: Once, codec: Codec[T], produce: Callable[[], T]) -> T:
        """The one idempotent path of every POST, and the only place a use case is passed as a callable:
        ``produce()`` once per (caller, route, key); a replay answers ``codec.recall`` of what
        ``codec.remember`` kept of the first. Without a key, or without a table, ``produce()``."""
        if call.key is None or not self.enabled:
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
        config.register_lambda_context(call.context)

        @idempotent_function(data_keyword_argument="request", persistence_store=self._store, config=config)
        def run(request: dict[str, Any]) -> dict[str, Any]:
            ran.append(True)
            try:
                value = produce()
            except BaseException as exc:
                raised.append(exc)
                raise
            fresh.append(value)
            encoded = codec.remember(value)
            if encoded is None:
                raise _NotRemembered(value)
            return encoded

        try:
            request = {"key": f"{call.owner}#{call.scope}#{call.key}", "payload": digest(call.payload)}
            remembered = run(request=request)
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
        return codec.recall(remembered)


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
