"""Edit images: the checked reference images (and mask) forwarded to the upstream, once per Idempotency-Key,
within the caller's admission, the results stored as they are read."""

from __future__ import annotations

from dataclasses import dataclass

from imagecore.accounts.budgets import Spent, estimated_cost
from imagecore.accounts.caller import Caller
from imagecore.domain.deadline import Deadline
from imagecore.platform.observability import current_record
from imagecore.usecases.deliveries import DeliveryCodec, keyed_folder, left_in
from imagecore.usecases.delivery import Delivery, ImageEvents
from imagecore.usecases.deps import ImageDeps
from imagecore.usecases.edits import EditInput
from imagecore.usecases.idempotency import Once


@dataclass(frozen=True)
class Edit:
    caller: Caller
    edit: EditInput
    deadline: Deadline
    once: Once  # the POST as idempotency sees it (its payload: ``edit_fingerprint``)


def edit_images(command: Edit, deps: ImageDeps, events: ImageEvents | None = None) -> Delivery:
    """The stored images (a replay: those of the first request with the same Idempotency-Key). ``events`` hears
    of each image and preview as it is stored."""
    once = command.once.ignoring_presentation()
    return deps.idempotency.once(once, DeliveryCodec(deps.service.store), lambda: _edit(command, once, deps, events))


def _edit(command: Edit, once: Once, deps: ImageDeps, events: ImageEvents | None) -> Delivery:
    folder = keyed_folder(once, deps)
    earlier = left_in(deps.service.store, folder, once.payload) if folder is not None else None
    if earlier is not None:
        return earlier
    record = current_record()
    edit = command.edit
    cost = estimated_cost(edit.parameters, reference_images=len(edit.images))
    with (
        deps.admission.hold(command.caller, cost, images=edit.parameters.n, deadline=command.deadline) as hold,
        deps.service.editing(edit, command.deadline, record, folder, events=events) as answer,
    ):
        # The upstream has answered: its usage is written while its last image is still being stored.
        spent = Spent.from_record(record)
        hold.settle(spent, images=spent.images)
    return answer.delivery
