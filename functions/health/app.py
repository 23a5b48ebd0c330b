"""GET /v1/health: liveness, no key needed."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

import imagecore
from imagecore.api import create_resolver
from imagecore.models import HealthResponse

app = create_resolver()


@app.get("/v1/health", summary="Liveness")
def health() -> HealthResponse:
    return HealthResponse(version=imagecore.__version__)


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
