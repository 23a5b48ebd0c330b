"""Submit an async task (a generation or an edit): within the caller's admission, its record written and its job
queued, once per Idempotency-Key (a replay is the task the first request made, as it stands now).

The async routes are functions of their own: they never call the upstream (the worker runs the task), so what
they work with, ``TaskDeps``, holds no upstream client, and their cold start loads none of its code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imagecore.accounts.admission import Admission
from imagecore.accounts.budgets import Cost, Spent
from imagecore.accounts.caller import Caller
from imagecore.domain.errors import NotFound, ServiceMisconfigured, TasksUnavailable
from imagecore.domain.models import ImageRequest
from imagecore.jobs.submitter import JobQueue, TaskSubmitter
from imagecore.jobs.tasks import Task, TaskKind, TaskStore, TaskStoreError, new_task_id, task_folder
from imagecore.jobs.webhook_urls import UrlPolicy
from imagecore.platform.observability import current_record
from imagecore.platform.settings import ImageSettings, use_prompt_digest_key
from imagecore.storage.store import ImageStore, StorageError, UploadStore
from imagecore.usecases.edits import InputImage
from imagecore.usecases.idempotency import Idempotency, Once
from imagecore.usecases.pending_edits import PendingEdit


@dataclass
class TaskDeps:
    """What the async routes work with, built once per execution environment from the function's settings: the
    task queue, the images bucket (an edit's inputs are kept there for the worker, a task's links presigned from
    it), idempotency and admission."""

    settings: ImageSettings
    store: ImageStore
    submitter: TaskSubmitter
    idempotency: Idempotency
    admission: Admission

    @classmethod
    def from_settings(cls, settings: ImageSettings) -> TaskDeps:
        if not (settings.tasks_table and settings.jobs_queue_url):
            raise ServiceMisconfigured("Async tasks are not configured (TASKS_TABLE, JOBS_QUEUE_URL).")
        region = settings.aws_region
        use_prompt_digest_key(settings)
        return cls(
            settings=settings,
            store=ImageStore.from_settings(settings),
            submitter=TaskSubmitter(
                TaskStore(settings.tasks_table, region=region),
                JobQueue(settings.jobs_queue_url, region=region),
                UrlPolicy(allow_loopback=settings.webhook_allow_loopback),
            ),
            idempotency=Idempotency(settings.idempotency_table or None, region=region),
            admission=Admission.from_settings(settings),
        )

    def now(self) -> int:
        """The tasks' clock (seconds since the epoch)."""
        return self.submitter.tasks.now()


@dataclass(frozen=True)
class TaskSubmission:
    caller: Caller
    kind: TaskKind
    parameters: ImageRequest
    request: dict[str, Any]  # the parameters the task keeps
    cost: Cost
    once: Once  # the POST as idempotency sees it
    inputs: list[tuple[str, InputImage]] = field(default_factory=list)  # an edit's images, kept for the worker
    pending: PendingEdit | None = None  # an edit whose images the worker reads and checks
    task_id: str = field(default_factory=new_task_id)


@dataclass(frozen=True)
class TaskCodec:
    """A task is remembered by its id, so the record stays small whatever the request; a replay reads it."""

    tasks: TaskStore

    def remember(self, task: Task) -> dict[str, Any] | None:
        return {"task_id": task.id}

    def recall(self, remembered: dict[str, Any]) -> Task:
        if set(remembered) != {"task_id"}:  # a record from before tasks were kept by reference
            return Task.from_item(remembered)
        try:
            task = self.tasks.get(remembered["task_id"])
        except TaskStoreError:
            raise TasksUnavailable("The task of this Idempotency-Key cannot be read right now; try again.") from None
        if task is None:
            raise NotFound("The task of this Idempotency-Key is gone.", param="Idempotency-Key", code="task_not_found")
        return task


def submit_task(command: TaskSubmission, deps: TaskDeps, uploads: UploadStore | None = None) -> Task:
    """The queued task. Its cost is reserved now and kept under its id for the worker to settle; its client
    token's images are counted now and travel with it. ``uploads`` keeps an edit's inputs for the worker. A
    ``webhook_url`` that may not be called is a 400 before any of it."""
    deps.submitter.check_webhook_url(command.parameters.webhook_url)
    record = current_record()
    record.operation = command.once.scope.replace("/", ".")
    command.parameters.describe(record, include_prompt=deps.settings.log_prompts)
    if command.inputs:
        record.images_in = sum(1 for role, _ in command.inputs if role == "image")
    task = deps.idempotency.once(command.once, TaskCodec(deps.submitter.tasks), lambda: _submit(command, deps, uploads))
    record.task_id = task.id
    return task


def _submit(command: TaskSubmission, deps: TaskDeps, uploads: UploadStore | None) -> Task:
    caller, task_id = command.caller, command.task_id
    try:
        with deps.admission.hold_task(caller, command.cost, images=command.parameters.n, task_id=task_id) as hold:
            if command.pending is not None:
                kept = command.pending.keep(deps.store, caller.owner_id, task_id)
            else:
                kept = uploads.keep_inputs(caller.owner_id, task_id, command.inputs) if uploads is not None else []
            task = deps.submitter.submit(
                task_id=task_id,
                owner=caller.owner_id,
                kind=command.kind,
                request={name: value for name, value in command.request.items() if name != "webhook_url"},
                folder=task_folder(task_id),
                inputs=kept,
                token_hold=hold.token_hold,
                max_concurrent=caller.max_concurrent,
                webhook_url=command.parameters.webhook_url,
            )
            hold.settle(Spent(), images=command.parameters.n)
    except (TaskStoreError, StorageError):
        raise TasksUnavailable("The task could not be queued; nothing was run. Try again.") from None
    return task
