"""A synchronous generation or edit, remembered under its Idempotency-Key: where its images go, what an earlier
run under the key left, how the record refers to them, and the answer (with the refusal of one too large to
send inline, whose images stay stored and paid for under a key the caller can ask them with).

The record holds the key of the result's ``result.json``, not the result (its revised prompts can be as long as
the prompt). With an Idempotency-Key the images go to the key's own folder (derived from the caller, the route,
the key and the request), so a retry whose first run died after paying (the Lambda timed out or crashed between
storing the images and answering) finds them there and answers them instead of paying again. Powertools lets
such a retry run once the dead run's in-progress record has expired (until then the retry is a 409)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from imagecore.domain.errors import ImageServiceError, InvalidRequest, NotFound, StorageUnavailable
from imagecore.domain.fingerprint import digest
from imagecore.domain.models import GenerationResponse
from imagecore.platform.observability import current_record, logger
from imagecore.storage.manifest import StoredResult, folder_of, manifest_key, read_result, read_stored, write_result
from imagecore.storage.store import ImageStore, StorageError
from imagecore.usecases.delivery import Delivery
from imagecore.usecases.deps import ImageDeps
from imagecore.usecases.idempotency import Once


@dataclass(frozen=True)
class DeliveryCodec:
    """A delivery is remembered as the key of its ``result.json`` (written then), recalled by reading it."""

    store: ImageStore

    def remember(self, delivery: Delivery) -> dict[str, Any] | None:
        stored = delivery.stored
        if stored is None:
            return None
        try:
            return {"result": write_result(self.store, folder_of(stored), stored)}
        except StorageError:
            logger.warning("idempotency result not written: a retry runs again")
            return None

    def recall(self, remembered: dict[str, Any]) -> Delivery:
        if set(remembered) != {"result"}:  # a record from before results were kept by reference
            return Delivery.replay(StoredResult.from_dict(remembered))
        try:
            stored = read_result(self.store, remembered["result"])
        except StorageError:
            raise StorageUnavailable(
                "The images of this Idempotency-Key cannot be read right now; try again."
            ) from None
        if stored is None:
            raise NotFound("The images of this Idempotency-Key are gone.", param="Idempotency-Key")
        return Delivery.replay(stored)


def keyed_folder(once: Once, deps: ImageDeps) -> str | None:
    """The folder of a synchronous request with an Idempotency-Key (None without one, or without a table): the
    same for its retries, and not to be guessed without the key."""
    if once.key is None or not deps.idempotency.enabled:
        return None
    name = digest({"owner": once.owner, "scope": once.scope, "key": once.key, "request": once.payload})[:32]
    return f"images/keyed/{name}"


def left_in(store: ImageStore, folder: str, payload: Any) -> Delivery | None:
    """What an earlier run under the same Idempotency-Key left in its folder: its result, or the images it
    stored before it died (rebuilt, and written as its result); None when it left nothing. When S3 cannot
    say, nothing is run (running could pay a second time)."""
    asked = payload.get("parameters", payload) if isinstance(payload, dict) else {}
    try:
        stored = read_result(store, manifest_key(folder))
        if stored is None:
            stored = read_stored(store, folder, asked if isinstance(asked, dict) else {})
            if stored is None:
                return None
            current_record().images_recovered = len(stored.images)
            logger.warning("answered from the images a run that died had stored", extra={"folder": folder})
    except StorageError:
        raise StorageUnavailable("The images store cannot be read right now; nothing was run. Try again.") from None
    return Delivery.replay(stored)


def answer_images(delivery: Delivery, once: Once, response_format: str, deps: ImageDeps) -> GenerationResponse:
    """The answer. One too large to send inline is refused, but the images are stored and paid for: the refusal
    names the Idempotency-Key (the request's, or one made for it now) under which a retry asking ``url`` gets
    them without a second upstream call."""
    try:
        return deps.service.respond(delivery, response_format)
    except InvalidRequest as refused:
        if refused.code != "response_too_large" or not deps.idempotency.enabled or delivery.stored is None:
            raise
        key = once.key
        if key is None:
            key = "auto-" + secrets.token_hex(16)
            try:
                deps.idempotency.once(
                    once.ignoring_presentation().with_key(key), DeliveryCodec(deps.service.store), lambda: delivery
                )
            except ImageServiceError:
                logger.warning("refused inline answer not remembered")
                raise refused from None
        raise InvalidRequest(
            f"{refused.message} The images are stored: ask again with the header 'Idempotency-Key: {key}' "
            "and response_format 'url' to get them without a second upstream call.",
            param="response_format",
            code="response_too_large",
            headers={"Idempotency-Key": key},
        ) from None
