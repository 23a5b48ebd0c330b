"""The service stores each image as soon as it is read, tells the caller (``events.stored``), and for a streamed
answer stores and announces each partial image (``events.partial``): against the simulator and moto S3."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from imagecore.domain.deadline import Deadline
from imagecore.domain.models import GenerationRequest
from imagecore.platform.observability import RequestRecord
from imagecore.storage.manifest import read_stored
from imagecore.storage.store import ImageToStore
from imagecore.usecases.delivery import ImageEvent, NoEvents
from imagecore.usecases.service import delivered
from tests.integration.conftest import BUCKET
from tests.integration.stack import png


def opened(s3: Any, key: str) -> Image.Image:
    image = Image.open(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()))
    image.load()
    return image


@pytest.fixture
def service(generations: Any) -> Any:
    return generations.deps().service


def streamed(partials: int, **fields: Any) -> GenerationRequest:
    request = GenerationRequest.model_validate({"prompt": "a harbour at dusk", "size": "1024x1024", **fields})
    # Streaming is switched on by the streamed edge; the model copy stands in for its request.
    return request.model_copy(update={"stream": True, "partial_images": partials})


class Heard(list[ImageEvent]):
    """Every event a generation reports, in order."""

    def partial(self, event: ImageEvent) -> None:
        self.append(event)

    def stored(self, event: ImageEvent) -> None:
        self.append(event)


def test_each_image_is_stored_before_the_next_one_is_read(service, simulator, aws) -> None:
    request = GenerationRequest.model_validate({"prompt": "tiles", "size": "1024x1024", "n": 3})
    seen: list[tuple[ImageEvent, list[str]]] = []

    class Listener(NoEvents):
        def stored(self, event: ImageEvent) -> None:
            keys = [obj["Key"] for obj in aws.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
            seen.append((event, keys))

    delivery = delivered(
        service.generation(request, Deadline.after(60), RequestRecord("generations"), events=Listener())
    )

    assert [event.index for event, _ in seen] == [0, 1, 2]
    for position, (event, keys_then) in enumerate(seen):
        assert event.kind == "image"
        assert event.key in keys_then  # in S3 when announced
        assert len(keys_then) == position + 1  # and the next one not yet
        assert opened(aws, event.key).size == (1024, 1024)
        assert event.fields["revised_prompt"].startswith("tiles")
    assert delivery.stored is not None and delivery.stored.keys == [event.key for event, _ in seen]
    assert delivery.images == []  # url answers keep no image bytes around
    assert simulator.calls == 1


@pytest.mark.parametrize("partials", [0, 1, 3])
def test_a_streamed_answer_stores_each_partial_as_a_preview(service, simulator, aws, partials: int) -> None:
    events = Heard()
    record = RequestRecord("generations")
    delivery = delivered(service.generation(streamed(partials), Deadline.after(60), record, events=events))

    assert [(event.kind, event.index) for event in events] == [("partial", i) for i in range(partials)] + [("image", 0)]
    assert delivery.stored is not None
    folder = delivery.stored.keys[0].rsplit("/", 1)[0]
    for event in events:
        assert event.key is not None
        assert opened(aws, event.key).size == (1024, 1024)
        assert Image.open(io.BytesIO(event.data)).size == (1024, 1024)
        if event.kind == "partial":
            assert event.key == f"{folder}/partial-{event.index}.png"
            assert event.fields["partial_image_index"] == event.index
            assert event.fields["size"] == "1024x1024" and "b64_json" not in event.fields
    assert delivery.summary["usage"]["total_tokens"] > 0
    assert simulator.last_request["json"]["stream"] is True
    assert (simulator.calls, record.attempts) == (1, 1)


def test_a_stream_failing_after_a_partial_keeps_the_preview_and_is_not_retried(service, simulator, aws) -> None:
    from imagecore.domain.errors import UpstreamFailed

    simulator.queue_faults({"mode": "sse_error", "after_partials": 1})
    events = Heard()
    record = RequestRecord("generations")
    with pytest.raises(UpstreamFailed):
        delivered(service.generation(streamed(2), Deadline.after(60), record, events=events))
    assert [event.kind for event in events] == ["partial"]
    assert opened(aws, events[0].key).size == (1024, 1024)
    assert (simulator.calls, record.attempts) == (1, 1)


def test_a_stream_cut_after_a_partial_is_incomplete_after_one_call(service, simulator, aws) -> None:
    from imagecore.domain.errors import UpstreamFailed

    simulator.queue_faults({"mode": "sse_cut", "after_partials": 2})
    record = RequestRecord("generations")
    with pytest.raises(UpstreamFailed) as raised:
        delivered(service.generation(streamed(3), Deadline.after(60), record))
    assert raised.value.code == "upstream_incomplete"
    assert (simulator.calls, record.attempts) == (1, 1)


def test_a_folder_a_run_left_without_its_result_is_rebuilt_in_order(service, aws) -> None:

    store, folder = service.store, "images/jobs/rebuilt"
    for index in (0, 2, 10):
        store.save_one(folder, str(index), ImageToStore(png((64, 32)), "png"))
    for index in (0, 10):  # image 2's record was never written: its run died between the two
        store.write_json(
            f"{folder}/{index}.json",
            {
                "index": index,
                "revised_prompt": f"drawn {index}",
                "size": "64x32",
                "output_format": "png",
                "created": 1_700_000_000,
                "model": "gpt-image-2",
                "quality": "low",
                "background": "opaque",
            },
        )
    store.save_one(folder, "partial-0", ImageToStore(png(), "png"))  # a preview is not an image of the answer
    store.save_one(f"{folder}/other", "3", ImageToStore(png(), "png"))  # nor is anything in a folder below

    rebuilt = read_stored(store, folder, {"model": "gpt-image-2", "quality": "high", "size": "1024x1024"})

    assert rebuilt is not None
    assert [(ref.key.rsplit("/", 1)[1], ref.revised_prompt) for ref in rebuilt.images] == [
        ("0.png", "drawn 0"),
        ("2.png", None),
        ("10.png", "drawn 10"),
    ]
    assert (rebuilt.size, rebuilt.quality, rebuilt.output_format, rebuilt.created) == (
        "64x32",
        "low",
        "png",
        1_700_000_000,
    )
    assert rebuilt.usage is None
    for ref in rebuilt.images:
        assert opened(aws, ref.key).size == (64, 32)
    assert read_stored(store, "images/jobs/empty", {}) is None
