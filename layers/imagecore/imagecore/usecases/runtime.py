"""The dependencies the image functions share, built once per execution environment, and the idempotent way
a POST runs its use case: synchronously (the stored images) or as an async task (the queued task)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.budgets import (
    Cost,
    Hold,
    Spender,
    Spent,
    UsageLedger,
    reserve_or_count_refusal,
    within_budget,
)
from imagecore.accounts.token_usage import ClientTokenGrant, TokenHold, TokenImageCounter, counted_images
from imagecore.domain.deadline import Deadline, request_deadline
from imagecore.domain.errors import (
    ImageServiceError,
    InvalidRequest,
    NotFound,
    ServiceMisconfigured,
    StorageUnavailable,
    TasksUnavailable,
)
from imagecore.domain.models import GenerationResponse
from imagecore.jobs.tasks import JobQueue, Task, TaskStore, TaskStoreError, TaskSubmitter
from imagecore.jobs.webhook_urls import UrlPolicy
from imagecore.platform.observability import current_record, logger
from imagecore.platform.settings import GenerationSettings
from imagecore.storage.manifest import StoredResult, folder_of, manifest_key, read_result, read_stored, write_result
from imagecore.storage.store import StorageError
from imagecore.usecases.idempotency import Idempotency, answer_once, digest, idempotency_key
from imagecore.usecases.service import Delivery, ImageService

T = TypeVar("T")


def images_made(delivery: Delivery) -> int:
    """How many images a fresh delivery holds: the stored ones, or (S3 refused them) the ones in hand."""
    return len(delivery.stored.images) if delivery.stored is not None else len(delivery.images)


@dataclass
class ImageRuntime:
    service: ImageService
    idempotency: Idempotency | None
    submitter: TaskSubmitter | None
    ledger: UsageLedger | None = None
    token_images: TokenImageCounter | None = None

    @classmethod
    def from_settings(cls, settings: GenerationSettings) -> ImageRuntime:
        region = settings.aws_region
        submitter = None
        if settings.tasks_table and settings.jobs_queue_url:
            submitter = TaskSubmitter(
                TaskStore(settings.tasks_table, region=region),
                JobQueue(settings.jobs_queue_url, region=region),
                UrlPolicy(allow_loopback=settings.webhook_allow_loopback),
            )
        idempotency = Idempotency(settings.idempotency_table, region=region) if settings.idempotency_table else None
        ledger = UsageLedger(settings.usage_table, region=region) if settings.usage_table else None
        token_images = (
            TokenImageCounter(settings.token_usage_table, region=region) if settings.token_usage_table else None
        )
        return cls(ImageService.from_settings(settings), idempotency, submitter, ledger, token_images)

    def within_budget(self, spender: Spender, cost: Cost, produce: Callable[[], T]) -> T:
        """A generation or edit within the caller's image and token budgets: ``cost`` is reserved before the
        upstream is called (429 ``budget_exceeded`` when it would go over) and settled with the real usage."""
        return within_budget(self.ledger, spender.account, spender.budget, cost, current_record(), produce)

    def queue_within_budget(self, spender: Spender, cost: Cost, task_id: str, queue: Callable[[], Task]) -> Task:
        """An async task within the caller's budgets: ``cost`` is reserved before it is queued and kept under the
        task's id, for the worker to settle with what the task really made (given back if it is not queued)."""
        if self.ledger is None:
            return queue()
        ledger = self.ledger
        hold = reserve_or_count_refusal(ledger, spender.account, spender.budget, cost)
        try:
            ledger.hold_for_task(task_id, hold)
        except ImageServiceError as error:
            ledger.settle(hold, Spent(failure=error.code))
            raise
        try:
            task = queue()
        except BaseException as error:
            code = error.code if isinstance(error, ImageServiceError) else TasksUnavailable.code
            ledger.settle_task(task_id, Spent(failure=code))
            raise
        # The request counts now; its images and tokens when the worker settles the hold.
        ledger.settle(Hold(spender.account, hold.day, hold.month), Spent())
        return task

    def counted(self, token: ClientTokenGrant | None, n: int, produce: Callable[[], Delivery]) -> Delivery:
        """A generation or edit within the client token's image limit: ``n`` images are reserved before the
        upstream is called, and what was not made is given back."""
        return counted_images(self.token_images, token, n, produce, made=images_made)

    def charged(
        self, spender: Spender, token: ClientTokenGrant | None, cost: Cost, n: int, produce: Callable[[], Delivery]
    ) -> Delivery:
        """A generation or edit of ``n`` images within the caller's budgets (``within_budget``) and its client
        token's image limit (``counted``)."""
        return self.within_budget(spender, cost, lambda: self.counted(token, n, produce))

    def counted_task(self, token: ClientTokenGrant | None, n: int, make: Callable[[TokenHold | None], T]) -> T:
        """An async task within the client token's image limit: its ``n`` images are counted when it is queued
        (all given back if it could not be queued). ``make`` queues it with what it holds (``None``: nothing
        counted), which travels with the task: the worker gives back the images it did not make when it ends it."""
        hold = TokenHold(token.id, n) if token is not None and token.max_images is not None else None
        return counted_images(self.token_images, token, n, lambda: make(hold), made=lambda _task: n)

    def deadline(self, event: dict[str, Any], context: LambdaContext) -> Deadline:
        """When the upstream call of this API request must be over (see ``request_deadline``)."""
        settings = self.service.settings
        return request_deadline(
            event,
            context,
            integration_timeout_ms=settings.integration_timeout_ms,
            margin_seconds=settings.storage_margin_seconds,
        )

    def deliver(
        self,
        event: dict[str, Any],
        context: LambdaContext,
        *,
        scope: str,
        payload: Any,
        produce: Callable[[str | None], Delivery],
        key: str | None = None,
    ) -> Delivery:
        """A synchronous generation or edit, once per Idempotency-Key (the request's, or ``key``): a replay is the
        same stored images.

        The record holds the key of the result's ``result.json``, not the result (its revised prompts can be as
        long as the prompt). ``response_format`` is left out of the comparison: it changes how the same images
        are answered, not which, so a retry asking ``url`` after a refused inline answer gets the paid images.

        ``produce(folder)`` stores the images in ``folder``: with an Idempotency-Key it is the key's own (derived
        from the caller, the route, the key and the request), so a retry whose first run died after paying (the
        Lambda timed out or crashed between storing the images and answering) finds them there and answers them
        instead of paying again. Powertools lets such a retry run once the dead run's in-progress record has
        expired (it lasts as long as that invocation could live; until then the retry is a 409)."""
        request_key = idempotency_key(event) or key
        trimmed = _without_presentation(payload)
        folder = None
        if self.idempotency is not None and request_key is not None:
            owner = current_record().owner_id or "anonymous"
            folder = keyed_folder(owner, scope, request_key, trimmed)

        def produce_once() -> Delivery:
            earlier = self._left_in(folder, trimmed) if folder is not None else None
            return earlier if earlier is not None else produce(folder)

        return answer_once(
            self.idempotency,
            event,
            context,
            scope=scope,
            payload=trimmed,
            produce=produce_once,
            encode=self._remember,
            decode=self._recall,
            key=key,
        )

    def answer(
        self,
        event: dict[str, Any],
        context: LambdaContext,
        *,
        scope: str,
        payload: Any,
        produce: Callable[[str | None], Delivery],
        response_format: str,
    ) -> GenerationResponse:
        """Deliver (once per Idempotency-Key) and answer. An answer too large to send inline is refused, but the
        images are stored and paid for: the refusal names the Idempotency-Key (the request's, or one the service
        made for it) under which a retry asking ``url`` gets them without a second upstream call."""
        delivery = self.deliver(event, context, scope=scope, payload=payload, produce=produce)
        try:
            return self.service.respond(delivery, response_format)
        except InvalidRequest as refused:
            if refused.code != "response_too_large" or self.idempotency is None or delivery.stored is None:
                raise
            key = idempotency_key(event)
            if key is None:
                key = "auto-" + secrets.token_hex(16)
                try:
                    self.deliver(event, context, scope=scope, payload=payload, produce=lambda _: delivery, key=key)
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

    def _left_in(self, folder: str, payload: Any) -> Delivery | None:
        """What an earlier run under the same Idempotency-Key left in its folder: its result, or the images it
        stored before it died (rebuilt, and written as its result); None when it left nothing. When S3 cannot
        say, nothing is run (running could pay a second time)."""
        asked = payload.get("parameters", payload) if isinstance(payload, dict) else {}
        try:
            stored = read_result(self.service.store, manifest_key(folder))
            if stored is None:
                stored = read_stored(self.service.store, folder, asked if isinstance(asked, dict) else {})
                if stored is None:
                    return None
                current_record().images_recovered = len(stored.images)
                logger.warning("answered from the images a run that died had stored", extra={"folder": folder})
        except StorageError:
            raise StorageUnavailable("The images store cannot be read right now; nothing was run. Try again.") from None
        return Delivery.replay(stored)

    def _remember(self, delivery: Delivery) -> dict[str, Any] | None:
        stored = delivery.stored
        if stored is None:
            return None
        try:
            return {"result": write_result(self.service.store, folder_of(stored), stored)}
        except StorageError:
            logger.warning("idempotency result not written: a retry runs again")
            return None

    def _recall(self, remembered: dict[str, Any]) -> Delivery:
        if set(remembered) != {"result"}:  # a record from before results were kept by reference
            return Delivery.replay(StoredResult.from_dict(remembered))
        try:
            stored = read_result(self.service.store, remembered["result"])
        except StorageError:
            raise StorageUnavailable(
                "The images of this Idempotency-Key cannot be read right now; try again."
            ) from None
        if stored is None:
            raise NotFound("The images of this Idempotency-Key are gone.", param="Idempotency-Key")
        return Delivery.replay(stored)

    def submit(
        self,
        event: dict[str, Any],
        context: LambdaContext,
        *,
        scope: str,
        payload: Any,
        make_task: Callable[[TaskSubmitter], Task],
    ) -> Task:
        """The queued task, once per Idempotency-Key: a replay is the task the first request made, as it stands
        now. The record holds the task id, not the task, so it stays small whatever the request."""
        submitter = self.tasks_submitter()

        def produce() -> Task:
            try:
                return make_task(submitter)
            except (TaskStoreError, StorageError):
                raise TasksUnavailable("The task could not be queued; nothing was run. Try again.") from None

        def recall(remembered: dict[str, Any]) -> Task:
            if set(remembered) != {"task_id"}:  # a record from before tasks were kept by reference
                return Task.from_item(remembered)
            try:
                task = submitter.tasks.get(remembered["task_id"])
            except TaskStoreError:
                raise TasksUnavailable(
                    "The task of this Idempotency-Key cannot be read right now; try again."
                ) from None
            if task is None:
                raise NotFound(
                    "The task of this Idempotency-Key is gone.", param="Idempotency-Key", code="task_not_found"
                )
            return task

        task = answer_once(
            self.idempotency,
            event,
            context,
            scope=scope,
            payload=payload,
            produce=produce,
            encode=lambda made: {"task_id": made.id},
            decode=recall,
        )
        current_record().task_id = task.id
        return task

    def check_webhook_url(self, url: str | None) -> None:
        """Refused before anything is reserved or kept: a 400 on ``webhook_url``."""
        if url is not None:
            self.tasks_submitter().check_webhook_url(url)

    def tasks_submitter(self) -> TaskSubmitter:
        if self.submitter is None:
            raise ServiceMisconfigured("Async tasks are not configured (TASKS_TABLE, JOBS_QUEUE_URL).")
        return self.submitter

    def now(self) -> int:
        """The tasks' clock (seconds since the epoch)."""
        return self.tasks_submitter().tasks.now()


def keyed_folder(owner: str, scope: str, key: str, payload: Any) -> str:
    """The folder of a synchronous request with an Idempotency-Key: the same for its retries, and not to be
    guessed without the key."""
    name = digest({"owner": owner, "scope": scope, "key": key, "request": payload})[:32]
    return f"images/keyed/{name}"


def _without_presentation(payload: Any) -> Any:
    """The request as far as it decides which images are made: without ``response_format``."""
    if not isinstance(payload, dict):
        return payload
    trimmed = {name: value for name, value in payload.items() if name != "response_format"}
    if isinstance(trimmed.get("parameters"), dict):
        trimmed["parameters"] = _without_presentation(trimmed["parameters"])
    return trimmed
