"""The Lambda context object the runtime hands a handler, for everything that calls the real handlers outside AWS:
the local stack's gateway and poller, the tests and the benchmark."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"


@dataclass
class LambdaContext:
    """What Powertools and the functions read from a context: names, memory, request id and the time left.

    The time left counts down from ``started`` over ``timeout_s`` on ``clock``, as in Lambda; ``remaining_ms``
    pins it to a fixed figure instead, for a test that needs an exact deadline."""

    function_name: str = "GenerationsFunction"
    memory_limit_in_mb: int = 1024
    timeout_s: float = 330.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)
    log_stream_name: str = "local"
    remaining_ms: int | None = None
    clock: Callable[[], float] = time.monotonic

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        if self.remaining_ms is not None:
            return self.remaining_ms
        return max(0, int((self.timeout_s - (self.clock() - self.started)) * 1000))
