"""The models the service accepts, as OpenAI's ``GET /v1/models`` lists them (``{"object": "list", "data":
[{id, object: "model", created, owned_by}]}``): the image models of the contract, and the text models the
Responses route is limited to when the operator named some (``ResponsesAllowedModels``; without a list that
route takes any model, and none can be enumerated, so none is listed)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from imagecore.domain.errors import NotFound
from imagecore.domain.models import MODELS

# gpt-image-2's snapshot date (its dated id): 2026-04-21 00:00 UTC.
IMAGE_MODELS_CREATED = 1776729600
OWNER = "openai"


class ModelObject(BaseModel):
    """One model, as OpenAI's ``Model`` object."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    id: Annotated[str, Field(description="The model id to send as `model`.")]
    object: Literal["model"] = "model"
    created: Annotated[int, Field(description="Unix time the model was released (0 when unknown).")]
    owned_by: str = OWNER


class ModelList(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    object: Literal["list"] = "list"
    data: list[ModelObject]


def parse_model_names(text: str | None) -> tuple[str, ...]:
    """``"gpt-5.4, gpt-5.4-mini"`` -> the names, in order, once each; blank entries are ignored."""
    names = (name.strip() for name in (text or "").split(","))
    return tuple(dict.fromkeys(name for name in names if name))


def list_models(responses_models: Iterable[str] = ()) -> ModelList:
    """The image models first, then the Responses route's text models (none that is also an image model twice)."""
    data = [ModelObject(id=name, created=IMAGE_MODELS_CREATED) for name in MODELS]
    data += [ModelObject(id=name, created=0) for name in responses_models if name not in MODELS]
    return ModelList(data=data)


def find_model(model_id: str, responses_models: Iterable[str] = ()) -> ModelObject:
    """The listed model ``model_id``, or ``NotFound`` in OpenAI's words (code ``model_not_found``)."""
    for model in list_models(responses_models).data:
        if model.id == model_id:
            return model
    raise NotFound(
        f"The model '{model_id}' does not exist or you do not have access to it. GET /v1/models lists the models "
        "this service accepts.",
        param="model",
        code="model_not_found",
    )
