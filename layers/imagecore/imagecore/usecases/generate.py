"""Generate images: once per Idempotency-Key, within the caller's admission, stored as they are read."""

from __future__ import annotations

from dataclasses import dataclass

from imagecore.accounts.budgets import Spent, estimated_cost
from imagecore.accounts.caller import Caller
from imagecore.domain.deadline import Deadline
from imagecore.domain.models import GenerationRequest
from imagecore.platform.observability import current_record
from imagecore.usecases.deliveries import DeliveryCodec, keyed_folder, left_in
from imagecore.usecases.delivery import Delivery, ImageEvents
from imagecore.usecases.deps import ImageDeps
from imagecore.usecases.idempotency import Once


@dataclass(frozen=True)
class Generation:
    caller: Caller
    request: GenerationRequest
    deadline: Deadline
    once: Once  # the POST as idempotency sees it


def generate_images(command: Generation, deps: ImageDeps, events: ImageEvents | None = None) -> Delivery:
    """The stored images (a replay: those of the first request with the same Idempotency-Key). ``events`` hears
    of each image and preview as it is stored."""
    once = command.once.ignoring_presentation()
    return deps.idempotency.once(
        once, DeliveryCodec(deps.service.store), lambda: _generate(command, once, deps, events)
    )


def _generate(command: Generation, once: Once, deps: ImageDeps, events: ImageEvents | None) -> Delivery:
    folder = keyed_folder(once, deps)
    earlier = left_in(deps.service.store, folder, once.payload) if folder is not None else None
    if earlier is not None:
        return earlier
    record = current_record()
    request = command.request
    cost = estimated_cost(request)
    with (
        deps.admission.hold(command.caller, cost, images=request.n, deadline=command.deadline) as hold,
        deps.service.generation(request, command.deadline, record, folder, events=events) as answer,
    ):
        # The upstream has answered: its usage is written while its last image is still being stored.
        spent = Spent.from_record(record)
        hold.settle(spent, images=spent.images)
    return answer.delivery
