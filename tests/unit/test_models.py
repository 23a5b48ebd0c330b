"""The request model enforces every rule of the gpt-image-2 contract, and the API edge turns each violation
into an OpenAI-style 400 (or 415) naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from imagecore.domain.errors import InvalidRequest, UnsupportedMediaType
from imagecore.domain.models import GenerationRequest
from imagecore.domain.validation import validation_error
from imagecore.edge.request_body import require_content_type

PROMPT = "A lighthouse on a cliff at dusk, oil painting"


def request(**fields: Any) -> GenerationRequest:
    return GenerationRequest.model_validate({"prompt": PROMPT, **fields})


def errors_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as caught:
        GenerationRequest.model_validate(body)
    return caught.value.errors()


def refused(**fields: Any) -> list[dict[str, Any]]:
    return errors_of({"prompt": PROMPT, **fields})


def refused_fields(**fields: Any) -> set[str]:
    return {str(e["loc"][0]) for e in refused(**fields) if e["loc"]}


def as_powertools(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Powertools reports body errors with 'body' in front of the pydantic location."""
    return [{**e, "loc": ("body", *e["loc"])} for e in errors]


# --- size -----------------------------------------------------------------------------------------------


class TestSize:
    @pytest.mark.parametrize(
        "size",
        [
            "auto",
            "1024x1024",
            "1536x1024",
            "1024x1536",
            "3840x2160",  # longest edge exactly 3840, pixels exactly 8,294,400
            "2160x3840",
            "2304x768",  # ratio exactly 3 (1,769,472 pixels)
            "768x2304",
            "1024x640",  # exactly 655,360 pixels
            "640x1024",
        ],
    )
    def test_accepts_sizes_at_every_edge(self, size: str) -> None:
        assert request(size=size).size == size

    def test_longest_edge_above_3840_is_refused(self) -> None:
        errors = refused(size="3856x1296")  # 16-aligned, ratio < 3, pixels in range: only the edge is wrong
        assert errors[0]["loc"] == ("size",)
        assert "at most 3840" in errors[0]["msg"]

    @pytest.mark.parametrize("size", ["1024x1000", "1032x1024", "1024x1032", "1000x1000"])
    def test_edges_must_be_multiples_of_16(self, size: str) -> None:
        errors = refused(size=size)
        assert errors[0]["loc"] == ("size",)
        assert "multiples of 16" in errors[0]["msg"]

    @pytest.mark.parametrize("size", ["2320x768", "768x2320"])
    def test_aspect_ratio_above_3_is_refused(self, size: str) -> None:
        errors = refused(size=size)
        assert errors[0]["loc"] == ("size",)
        assert "at most 3 times" in errors[0]["msg"]

    def test_just_below_the_minimum_pixel_count_is_refused(self) -> None:
        errors = refused(size="1008x640")  # 645,120 < 655,360
        assert errors[0]["loc"] == ("size",)
        assert "between 655,360 and 8,294,400" in errors[0]["msg"]
        assert "645,120" in errors[0]["msg"]

    def test_just_above_the_maximum_pixel_count_is_refused(self) -> None:
        errors = refused(size="3840x2176")  # 8,355,840 > 8,294,400
        assert errors[0]["loc"] == ("size",)
        assert "8,355,840" in errors[0]["msg"]

    @pytest.mark.parametrize(
        "size",
        [
            "1024",
            "1024x",
            "x1024",
            "0x1024",
            "1024x0",
            "01024x1024",
            "1024X1024",
            "1024*1024",
            " 1024x1024",
            "1024x1024 ",
            "1024x1024\n",  # a trailing newline must not slip through to the upstream
            "-16x1024",
            "1024.0x1024",
            "",
            "AUTO",
        ],
    )
    def test_malformed_sizes_are_refused(self, size: str) -> None:
        assert refused_fields(size=size) == {"size"}

    def test_size_must_be_a_string(self) -> None:
        errors = refused(size=1024)
        assert errors[0]["loc"] == ("size",)
        assert errors[0]["type"] == "string_type"

    def test_large_sizes_are_flagged_for_the_long_timeout(self) -> None:
        assert request(size="3840x2160").is_large
        assert not request(size="2560x1440").is_large
        assert not request(size="auto").is_large
        assert request(size="1536x1024").image_size is not None
        assert str(request(size="1536x1024").image_size) == "1536x1024"


# --- the other fields -------------------------------------------------------------------------------------


class TestModelField:
    @pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-2-2026-04-21"])
    def test_both_gpt_image_2_names_are_accepted(self, model: str) -> None:
        assert request(model=model).model == model

    def test_defaults_to_gpt_image_2(self) -> None:
        assert request().model == "gpt-image-2"

    def test_other_models_are_refused(self) -> None:
        errors = refused(model="dall-e-3")
        assert errors[0]["loc"] == ("model",)
        assert errors[0]["type"] == "literal_error"


class TestPrompt:
    def test_is_required(self) -> None:
        errors = errors_of({"size": "1024x1024"})
        assert errors[0]["loc"] == ("prompt",)
        assert errors[0]["type"] == "missing"

    def test_empty_is_refused(self) -> None:
        assert refused_fields(prompt="") == {"prompt"}

    @pytest.mark.parametrize("prompt", [" ", "   \n\t  "])
    def test_whitespace_only_is_refused(self, prompt: str) -> None:
        errors = refused(prompt=prompt)
        assert errors[0]["loc"] == ("prompt",)
        assert "empty" in errors[0]["msg"]

    def test_exactly_32000_characters_is_accepted(self) -> None:
        assert len(request(prompt="a" * 32_000).prompt) == 32_000

    def test_32001_characters_is_refused(self) -> None:
        errors = refused(prompt="a" * 32_001)
        assert errors[0]["loc"] == ("prompt",)
        assert errors[0]["type"] == "string_too_long"

    def test_must_be_a_string(self) -> None:
        assert refused_fields(prompt=42) == {"prompt"}


class TestN:
    @pytest.mark.parametrize("n", [1, 2, 10])
    def test_one_to_ten_is_accepted(self, n: int) -> None:
        assert request(n=n).n == n

    @pytest.mark.parametrize("n", [0, 11, -1, "2", 2.5, 2.0, True, None])
    def test_anything_else_is_refused(self, n: Any) -> None:
        assert refused_fields(n=n) == {"n"}


class TestEnums:
    @pytest.mark.parametrize("quality", ["low", "medium", "high", "auto"])
    def test_quality_values(self, quality: str) -> None:
        assert request(quality=quality).quality == quality

    @pytest.mark.parametrize("quality", ["hd", "standard", "HIGH", ""])
    def test_unknown_quality_is_refused(self, quality: str) -> None:
        assert refused_fields(quality=quality) == {"quality"}

    @pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
    def test_output_format_values(self, output_format: str) -> None:
        assert request(output_format=output_format).output_format == output_format

    @pytest.mark.parametrize("output_format", ["jpg", "gif", "PNG"])
    def test_unknown_output_format_is_refused(self, output_format: str) -> None:
        assert refused_fields(output_format=output_format) == {"output_format"}

    @pytest.mark.parametrize("moderation", ["auto", "low"])
    def test_moderation_values(self, moderation: str) -> None:
        assert request(moderation=moderation).moderation == moderation

    def test_unknown_moderation_is_refused(self) -> None:
        assert refused_fields(moderation="off") == {"moderation"}

    @pytest.mark.parametrize("background", ["auto", "opaque"])
    def test_background_values(self, background: str) -> None:
        assert request(background=background).background == background

    def test_transparent_background_is_refused_because_gpt_image_2_cannot_do_it(self) -> None:
        errors = refused(background="transparent")
        assert errors[0]["loc"] == ("background",)
        assert errors[0]["type"] == "transparent_unsupported"
        assert "gpt-image-2 does not support transparent" in errors[0]["msg"]

    def test_unknown_background_is_refused(self) -> None:
        assert refused_fields(background="white") == {"background"}

    @pytest.mark.parametrize("response_format", ["url", "b64_json"])
    def test_response_format_values(self, response_format: str) -> None:
        assert request(response_format=response_format).response_format == response_format

    def test_response_format_defaults_to_url(self) -> None:
        assert request().response_format == "url"

    def test_unknown_response_format_is_refused(self) -> None:
        assert refused_fields(response_format="base64") == {"response_format"}

    def test_user_is_a_string(self) -> None:
        assert request(user="user-1234").user == "user-1234"
        assert refused_fields(user=1234) == {"user"}


class TestOutputCompression:
    @pytest.mark.parametrize("output_format", ["jpeg", "webp"])
    @pytest.mark.parametrize("compression", [0, 50, 100])
    def test_accepted_with_lossy_formats(self, output_format: str, compression: int) -> None:
        assert request(output_format=output_format, output_compression=compression).output_compression == compression

    def test_refused_with_png(self) -> None:
        errors = refused(output_format="png", output_compression=80)
        assert errors[0]["loc"] == ("output_compression",)
        assert "jpeg" in errors[0]["msg"] and "'png'" in errors[0]["msg"]

    def test_refused_with_the_default_format(self) -> None:
        assert refused_fields(output_compression=80) == {"output_compression"}

    @pytest.mark.parametrize("compression", [101, -1, "80", 80.5])
    def test_out_of_range_or_wrong_type_is_refused(self, compression: Any) -> None:
        assert refused_fields(output_format="jpeg", output_compression=compression) == {"output_compression"}


class TestStreaming:
    def test_stream_true_is_a_valid_request(self) -> None:
        assert request(stream=True).stream is True

    def test_stream_false_is_accepted(self) -> None:
        assert request(stream=False).stream is False

    def test_partial_images_without_stream_is_refused_on_a_synchronous_route(self) -> None:
        with pytest.raises(InvalidRequest) as caught:
            request(partial_images=2).check_synchronous()
        assert caught.value.param == "partial_images"
        assert "only with stream" in caught.value.message

    @pytest.mark.parametrize("partial_images", [None, 0, 1, 2, 3])
    def test_stream_with_any_partial_images_is_a_synchronous_request(self, partial_images: int | None) -> None:
        request(stream=True, partial_images=partial_images).check_synchronous()  # raises nothing

    def test_stream_is_refused_on_a_task(self) -> None:
        with pytest.raises(InvalidRequest) as caught:
            request(stream=True, partial_images=2).check_task()
        assert (caught.value.param, caught.value.code) == ("stream", "stream_unsupported")
        assert "polled, not streamed" in caught.value.message

    def test_a_task_may_ask_for_partial_images_without_stream(self) -> None:
        request(partial_images=3).check_task()  # raises nothing

    @pytest.mark.parametrize("partial_images", [-1, 4])
    def test_partial_images_out_of_range_is_refused(self, partial_images: int) -> None:
        assert "partial_images" in refused_fields(partial_images=partial_images)


class TestStrictness:
    def test_unknown_fields_are_refused(self) -> None:
        errors = refused(foo="bar")
        assert errors[0]["loc"] == ("foo",)
        assert errors[0]["type"] == "extra_forbidden"

    @pytest.mark.parametrize("field", ["style", "input_fidelity"])
    def test_fields_gpt_image_2_does_not_take_are_refused(self, field: str) -> None:
        assert refused_fields(**{field: "x"}) == {field}

    def test_the_body_must_be_an_object(self) -> None:
        with pytest.raises(ValidationError):
            GenerationRequest.model_validate(["prompt"])


class TestUpstreamBody:
    def test_drops_our_fields_and_unset_values_but_keeps_the_rest(self) -> None:
        body = request(
            size="1536x1024",
            quality="high",
            output_format="jpeg",
            output_compression=80,
            n=2,
            moderation="low",
            background="opaque",
            user="u-1",
            response_format="b64_json",
            stream=False,
        ).upstream_body()
        assert body == {
            "prompt": PROMPT,
            "model": "gpt-image-2",
            "n": 2,
            "size": "1536x1024",
            "quality": "high",
            "output_format": "jpeg",
            "output_compression": 80,
            "background": "opaque",
            "moderation": "low",
            "user": "u-1",
        }

    def test_defaults_are_sent_and_none_values_are_not(self) -> None:
        body = request().upstream_body()
        assert body == {
            "prompt": PROMPT,
            "model": "gpt-image-2",
            "n": 1,
            "size": "auto",
            "quality": "auto",
            "output_format": "png",
        }
        assert "response_format" not in body and "stream" not in body


# --- imagecore.domain.validation.validation_error ---


class TestValidationError:
    def mapped(self, body: dict[str, Any]) -> InvalidRequest:
        error = validation_error(as_powertools(errors_of(body)))
        assert isinstance(error, InvalidRequest)
        assert error.status == 400
        assert error.type == "invalid_request_error"
        return error

    def test_missing_prompt(self) -> None:
        error = self.mapped({"size": "1024x1024"})
        assert error.param == "prompt"
        assert error.message == "Missing required parameter: 'prompt'."
        assert error.code == "missing_required_parameter"

    def test_unknown_field(self) -> None:
        error = self.mapped({"prompt": PROMPT, "foo": 1})
        assert error.param == "foo"
        assert error.message == "Unrecognized request argument supplied: foo"
        assert error.code == "unknown_parameter"

    def test_bad_size_names_the_field_and_says_why(self) -> None:
        error = self.mapped({"prompt": PROMPT, "size": "1024x1000"})
        assert error.param == "size"
        assert error.message.startswith("Invalid value for 'size': ")
        assert "multiples of 16" in error.message
        assert error.code == "invalid_value"

    def test_n_out_of_range(self) -> None:
        error = self.mapped({"prompt": PROMPT, "n": 11})
        assert error.param == "n"
        assert error.code == "invalid_value"
        assert "'n'" in error.message

    def test_n_of_the_wrong_type(self) -> None:
        error = self.mapped({"prompt": PROMPT, "n": "2"})
        assert error.param == "n"
        assert error.code == "invalid_type"

    def test_unknown_enum_value(self) -> None:
        error = self.mapped({"prompt": PROMPT, "model": "dall-e-3"})
        assert error.param == "model"
        assert error.code == "invalid_value"

    def test_transparent_background_keeps_its_explanation(self) -> None:
        error = self.mapped({"prompt": PROMPT, "background": "transparent"})
        assert error.param == "background"
        assert "gpt-image-2 does not support transparent" in error.message

    def test_stream_must_be_a_boolean(self) -> None:
        error = self.mapped({"prompt": PROMPT, "stream": "yes"})
        assert error.param == "stream"
        assert error.code == "invalid_type"

    def test_the_body_is_serialisable_in_the_openai_shape(self) -> None:
        error = self.mapped({"prompt": ""})
        assert error.to_body() == {
            "error": {"message": error.message, "type": "invalid_request_error", "param": "prompt", "code": error.code}
        }

    def test_invalid_json(self) -> None:
        error = validation_error([{"type": "json_invalid", "loc": ("body", 1), "msg": "JSON decode error"}])
        assert isinstance(error, InvalidRequest)
        assert error.status == 400
        assert error.code == "invalid_json"
        assert error.type == "invalid_request_error"

    def test_unsupported_content_type(self) -> None:
        error = validation_error([{"type": "unsupported_content_type", "loc": ("body",), "msg": "x"}])
        assert isinstance(error, UnsupportedMediaType)
        assert error.status == 415
        assert error.type == "invalid_request_error"

    def test_a_body_that_is_not_an_object(self) -> None:
        error = validation_error([{"type": "model_attributes_type", "loc": ("body",), "msg": "x"}])
        assert error.status == 400
        assert error.param is None

    def test_no_errors_at_all_still_answers_400(self) -> None:
        error = validation_error([])
        assert error.status == 400
        assert error.type == "invalid_request_error"


# --- imagecore.edge.request_body.require_content_type ---


def event(method: str = "POST", content_type: str | None = "application/json", body: str | None = "{}") -> dict:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return {"httpMethod": method, "headers": headers, "body": body}


class TestRequireContentType:
    accepted = ("application/json",)

    @pytest.mark.parametrize(
        "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"]
    )
    def test_json_is_accepted(self, content_type: str) -> None:
        require_content_type(event(content_type=content_type), self.accepted)

    def test_header_name_is_case_insensitive(self) -> None:
        require_content_type(
            {"httpMethod": "POST", "headers": {"content-type": "application/json"}, "body": "{}"}, self.accepted
        )

    @pytest.mark.parametrize(
        "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
    )
    def test_other_types_are_refused_with_415(self, content_type: str) -> None:
        with pytest.raises(UnsupportedMediaType) as caught:
            require_content_type(event(content_type=content_type), self.accepted)
        assert caught.value.status == 415
        assert caught.value.param == "Content-Type"
        assert content_type.split(";")[0] in caught.value.message

    def test_a_body_without_content_type_is_refused(self) -> None:
        with pytest.raises(UnsupportedMediaType) as caught:
            require_content_type(event(content_type=None, body='{"prompt": "x"}'), self.accepted)
        assert "'none'" in caught.value.message

    def test_an_empty_body_without_content_type_is_left_to_validation(self) -> None:
        require_content_type(event(content_type=None, body=None), self.accepted)

    @pytest.mark.parametrize("method", ["GET", "DELETE", "OPTIONS"])
    def test_methods_without_a_body_are_not_checked(self, method: str) -> None:
        require_content_type(event(method=method, content_type="text/plain"), self.accepted)

    def test_missing_headers_map(self) -> None:
        with pytest.raises(UnsupportedMediaType):
            require_content_type({"httpMethod": "POST", "headers": None, "body": "{}"}, self.accepted)
