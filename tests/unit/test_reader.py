"""The upstream answer reader: the three framings, split at every byte, the fallback for escapes, the limits,
and what becomes of odd metadata."""

from __future__ import annotations

import base64
import io
import itertools
import json
from collections.abc import Iterable
from typing import Any

import pytest
from PIL import Image

from functions.upstream_simulator.simulator import declared_size_png
from imagecore.upstream.bodies import JsonBody, SseBody
from imagecore.upstream.fields import normalise_fields, normalise_usage
from imagecore.upstream.reader import (
    BodyIncomplete,
    BodyMalformed,
    BodyTooLarge,
    ImageUnusable,
    ReadImage,
    ReadLimits,
    StreamFailed,
)

LIMITS = ReadLimits(max_body_bytes=1 << 20, max_image_bytes=256 << 10)


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 30, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


RED, BLUE = png(8, 4), png(6, 2, (0, 0, 255))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def body_bytes(images: Iterable[bytes] = (RED, BLUE), **extra: Any) -> bytes:
    document = {
        "created": 1_760_000_000,
        "data": [{"b64_json": b64(data), "revised_prompt": f'say "{i}" \\ é'} for i, data in enumerate(images)],
        "usage": {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8, "details": {"image_tokens": 1}},
        "size": "8x4",
        **extra,
    }
    return b" \n \n" + json.dumps(document).encode()


def read_json(chunks: Iterable[bytes], limits: ReadLimits = LIMITS) -> tuple[dict[str, Any], list[ReadImage]]:
    images: list[ReadImage] = []
    reader = JsonBody(limits, images.append)
    for chunk in chunks:
        reader.feed(chunk)
    return reader.close(), images


def split(data: bytes, *cuts: int) -> list[bytes]:
    points = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


class TestJsonBody:
    def test_every_split_point_gives_the_same_images_and_fields(self) -> None:
        data = body_bytes()
        expected_body, expected = read_json([data])
        assert [image.data for image in expected] == [RED, BLUE]
        assert [image.info.size for image in expected] == ["8x4", "6x2"]
        assert expected[1].fields["revised_prompt"] == 'say "1" \\ é'
        assert expected_body["usage"]["total_tokens"] == 8
        assert [item["b64_json"] for item in expected_body["data"]] == [True, True]
        for cut in range(1, len(data)):
            body, images = read_json(split(data, cut))
            assert body == expected_body, cut
            assert [(i.index, i.data, i.fields) for i in images] == [(i.index, i.data, i.fields) for i in expected]

    def test_one_byte_at_a_time(self) -> None:
        data = body_bytes()
        body, images = read_json(data[i : i + 1] for i in range(len(data)))
        assert [image.data for image in images] == [RED, BLUE]
        assert body["created"] == 1_760_000_000

    @pytest.mark.parametrize("sizes", [(1, 2, 3), (2, 5), (3, 3, 7), (5, 1, 1, 6)])
    def test_ragged_chunks_split_base64_quanta_every_way(self, sizes: tuple[int, ...]) -> None:
        """Chunks whose lengths are not multiples of 4 leave 1-3 characters over, sometimes more than the
        next chunk completes: the images come out byte for byte."""
        data = body_bytes((RED, BLUE, RED * 2))
        chunks, position = [], 0
        for size in itertools.cycle(sizes):
            if position >= len(data):
                break
            chunks.append(data[position : position + size])
            position += size
        _, images = read_json(chunks)
        assert [image.data for image in images] == [RED, BLUE, RED * 2]
        assert all(type(image.data) is bytes for image in images)

    def test_each_image_is_handed_on_before_the_next_one_is_read(self) -> None:
        data = body_bytes()
        seen: list[tuple[int, int]] = []
        reader = JsonBody(LIMITS, lambda image: seen.append((image.index, fed)))
        second_item = data.index(b64(BLUE).encode())
        fed = 0
        for position in range(len(data)):
            fed = position
            reader.feed(data[position : position + 1])
        reader.close()
        assert [index for index, _ in seen] == [0, 1]
        assert seen[0][1] < second_item  # the first image left before the second one's bytes came

    @pytest.mark.parametrize("escape", ["\\/", "\\u002f", "\\u002F"])
    def test_json_escapes_inside_the_base64_fall_back_to_a_full_parse_of_that_string(self, escape: str) -> None:
        wrapped = b64(RED * 3)  # long enough to hold a '/' or two
        text = json.dumps({"data": [{"b64_json": "@@"}]}).replace("@@", wrapped.replace("/", escape))
        # line-wrapped base64 (escaped newlines) is decoded too
        text = text.replace(wrapped[:8].replace("/", escape), wrapped[:8].replace("/", escape) + "\\n", 1)
        assert escape in text and "\\n" in text
        data = text.encode()
        for cut in range(1, len(data)):
            _, images = read_json(split(data, cut), ReadLimits(1 << 20, 1 << 20))
            assert images[0].data == RED * 3, cut
        _, images = read_json([data], ReadLimits(1 << 20, 1 << 20))
        assert base64.b64encode(images[0].data).decode() == wrapped

    def test_every_prefix_of_a_body_is_incomplete(self) -> None:
        data = body_bytes()
        for end in range(len(data)):
            with pytest.raises(BodyIncomplete):
                read_json([data[:end]])

    @pytest.mark.parametrize(
        "data",
        [b"<html>bad gateway</html>", b'["an", "array"]', b'{"data": []} trailing', b'{"a" 1}', b'{"a": 1]'],
        ids=["html", "array", "trailing", "missing-colon", "mismatched"],
    )
    def test_what_is_not_a_json_object_is_malformed(self, data: bytes) -> None:
        with pytest.raises(BodyMalformed):
            read_json([data])

    @pytest.mark.parametrize(
        "payload",
        ["!!notbase64!!", "QUJD=A==", b64(b"hello, not an image"), b64(RED[:-20]), ""],
        ids=["alphabet", "padding", "not-an-image", "truncated", "empty"],
    )
    def test_an_unusable_image_string_is_refused(self, payload: str) -> None:
        with pytest.raises(ImageUnusable, match=r"data\[0\]|base64|empty"):
            read_json([json.dumps({"data": [{"b64_json": payload}]}).encode()])

    @pytest.mark.parametrize("size", [(50_000, 50_000), (4000, 4000)], ids=["bomb", "over-max-pixels"])
    def test_an_image_declaring_too_many_pixels_is_refused_without_decoding_it(self, size: tuple[int, int]) -> None:
        bomb = declared_size_png(*size)
        with pytest.raises(ImageUnusable, match=r"data\[0\]"):
            read_json([json.dumps({"data": [{"b64_json": b64(bomb)}]}).encode()])

    def test_keep_alive_whitespace_is_skipped_not_kept(self) -> None:
        reader = JsonBody(ReadLimits(max_body_bytes=64 << 20, max_image_bytes=1 << 20), lambda image: None)
        for _ in range(500):
            reader.feed(b" \n" * 32768)
        reader.feed(body_bytes())
        assert reader.close()["created"] == 1_760_000_000
        assert len(reader._scanner._kept) < 1000  # what it does not keep is the point

    def test_a_body_past_the_limit_is_cut_off(self) -> None:
        reader = JsonBody(ReadLimits(max_body_bytes=100_000, max_image_bytes=1 << 20), lambda image: None)
        with pytest.raises(BodyTooLarge):
            for _ in range(100):
                reader.feed(b" " * 4096)

    def test_an_image_past_its_limit_is_cut_off_while_it_is_read(self) -> None:
        reader = JsonBody(ReadLimits(max_body_bytes=1 << 30, max_image_bytes=100_000), lambda image: None)
        reader.feed(b'{"data": [{"b64_json": "')
        with pytest.raises(BodyTooLarge):
            for _ in range(100):
                reader.feed(b"A" * 8192)

    def test_fields_past_their_limit_are_cut_off(self) -> None:
        limits = ReadLimits(max_body_bytes=1 << 30, max_image_bytes=1 << 20, max_fields_bytes=10_000)
        reader = JsonBody(limits, lambda image: None)
        reader.feed(b'{"revised_prompt": "')
        with pytest.raises(BodyTooLarge):
            for _ in range(10):
                reader.feed(b"x" * 4096)

    def test_a_b64_json_elsewhere_is_kept_as_a_field_not_streamed(self) -> None:
        body, images = read_json([json.dumps({"data": [], "other": {"b64_json": "QUJD"}}).encode()])
        assert images == []
        assert body["other"] == {"b64_json": "QUJD"}


def sse(*events: tuple[str | None, dict[str, Any]], newline: str = "\n") -> bytes:
    out = [": keep-alive comment", ""]
    for name, data in events:
        if name:
            out.append(f"event: {name}")
        out.append("data: " + json.dumps(data))
        out.append("")
    return (newline.join(out) + newline).encode()


def partial(index: int, data: bytes) -> tuple[str, dict[str, Any]]:
    fields = {"partial_image_index": index, "size": "8x4", "quality": "low", "background": "opaque"}
    return "image_generation.partial_image", {
        "type": "image_generation.partial_image",
        "b64_json": b64(data),
        "output_format": "png",
        "created_at": 1_760_000_000,
        **fields,
    }


def completed(data: bytes) -> tuple[str, dict[str, Any]]:
    return "image_generation.completed", {
        "type": "image_generation.completed",
        "b64_json": b64(data),
        "size": "8x4",
        "created_at": 1_760_000_001,
        "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
    }


def read_sse(chunks: Iterable[bytes]) -> tuple[Any, list[ReadImage], list[ReadImage]]:
    images: list[ReadImage] = []
    partials: list[ReadImage] = []
    reader = SseBody(LIMITS, images.append, partials.append)
    for chunk in chunks:
        reader.feed(chunk)
    return reader.close(), images, partials


class TestSseBody:
    @pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
    def test_every_split_point_gives_the_partials_then_the_image(self, newline: str) -> None:
        data = sse(partial(0, BLUE), partial(1, BLUE), completed(RED), newline=newline)
        for cut in range(1, len(data)):
            outcome, images, partials = read_sse(split(data, cut))
            assert [(p.index, p.data) for p in partials] == [(0, BLUE), (1, BLUE)], cut
            assert partials[0].fields["quality"] == "low"
            assert [image.data for image in images] == [RED]
            assert outcome.fields["usage"]["total_tokens"] == 3
            assert (outcome.images, outcome.partials) == (1, 2)

    def test_the_event_name_may_come_from_the_data_type_alone(self) -> None:
        _, data = completed(RED)
        _, images, _ = read_sse([sse((None, data))])
        assert [image.data for image in images] == [RED]

    def test_an_error_event_raises_the_upstream_error(self) -> None:
        error = {"type": "error", "error": {"message": "boom", "type": "server_error", "code": "upstream_error"}}
        with pytest.raises(StreamFailed) as raised:
            read_sse([sse(partial(0, BLUE), ("error", error))])
        assert raised.value.error["message"] == "boom"
        assert raised.value.after_events is True

    def test_a_stream_that_ends_before_its_image_is_incomplete(self) -> None:
        data = sse(partial(0, BLUE), completed(RED))
        for end in range(len(data) - 2):
            with pytest.raises(BodyIncomplete):
                read_sse([data[:end]])

    def test_an_unusable_partial_is_dropped_but_a_bad_final_image_is_not(self) -> None:
        _, images, partials = read_sse([sse(partial(0, b"not an image"), completed(RED))])
        assert (partials, [image.data for image in images]) == ([], [RED])
        with pytest.raises(ImageUnusable):
            read_sse([sse(completed(b"not an image"))])

    def test_done_marker_and_unknown_events_are_skipped(self) -> None:
        data = sse(("ping", {"type": "ping"}), completed(RED)) + b"data: [DONE]\n\n"
        _, images, _ = read_sse([data])
        assert len(images) == 1

    def test_the_body_limit_holds_for_events_too(self) -> None:
        reader = SseBody(ReadLimits(max_body_bytes=50_000, max_image_bytes=1 << 20), lambda image: None, None)
        with pytest.raises(BodyTooLarge):
            for _ in range(100):
                reader.feed(b": keep-alive\n\n" * 100)


class TestLimits:
    def test_the_largest_answer_follows_n_and_size(self) -> None:
        one = ReadLimits.for_request({"n": 1, "size": "1024x1024"})
        four_k = ReadLimits.for_request({"n": 4, "size": "3840x2160"})
        assert one.max_image_bytes >= 1024 * 1024 * 4
        assert four_k.max_body_bytes >= 4 * (3840 * 2160 * 4) * 4 // 3
        assert four_k.max_body_bytes < 250 << 20
        streamed = ReadLimits.for_request({"n": 1, "size": "1024x1024", "stream": True, "partial_images": 3})
        assert streamed.max_body_bytes > 3 * one.max_body_bytes

    @pytest.mark.parametrize("body", [{"n": "lots", "size": 7}, {"n": 10**9, "size": "auto"}, {}])
    def test_odd_requests_still_get_a_bounded_limit(self, body: dict[str, Any]) -> None:
        limits = ReadLimits.for_request(body)
        assert 0 < limits.max_body_bytes <= 10 * (8_294_400 * 4 + (2 << 20)) * 4 // 3 + (2 << 20)


class TestNormalise:
    @pytest.mark.parametrize(
        "created, expected",
        [(1_760_000_000, 1_760_000_000), (10**20, None), (-5, None), ("1760000000", 1_760_000_000), ("soon", None)],
    )
    def test_created(self, created: Any, expected: int | None) -> None:
        assert normalise_fields({"created": created}).get("created") == expected

    def test_usage_keeps_only_whole_counts(self) -> None:
        usage = {
            "input_tokens": "lots",
            "output_tokens": 7,
            "total_tokens": True,
            "input_tokens_details": {"text_tokens": 3, "image_tokens": -1},
        }
        assert normalise_usage(usage) == {"output_tokens": 7, "input_tokens_details": {"text_tokens": 3}}
        assert normalise_usage("lots") is None
        assert normalise_usage({"input_tokens": "lots"}) is None

    def test_text_fields_must_be_short_strings(self) -> None:
        fields = normalise_fields({"model": 3, "size": "x" * 500, "quality": "high", "background": None})
        assert fields == {"data": None, "quality": "high"}
