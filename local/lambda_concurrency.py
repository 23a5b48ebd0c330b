"""Lambda's reserved concurrency for the local gateway: a function with ``ReservedConcurrentExecutions`` runs at
most that many invocations at once, and API Gateway answers a request it cannot invoke (Lambda throttled it)
with its ``INTEGRATION_FAILURE`` gateway response, which the template maps to a 503 ``overloaded``.

An invocation holds its slot until the function is done with it: a buffered one until the handler returns
(even when API Gateway stopped waiting for it), a streamed one until its answer has been relayed to its end.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

# API Gateway's response type for a proxy integration Lambda refused (throttled), and its status before mapping.
THROTTLED_INTEGRATION = "INTEGRATION_FAILURE"
THROTTLED_STATUS = 500


class ReservedConcurrency:
    """In-flight invocations per function, against each function's reserved concurrency."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()

    def enter(self, function: str, reserved: int | None) -> bool:
        """Start an invocation of ``function``; False (nothing started) when it already runs ``reserved``."""
        with self._lock:
            running = self._in_flight.get(function, 0)
            if reserved is not None and running >= reserved:
                return False
            self._in_flight[function] = running + 1
            return True

    def leave(self, function: str) -> None:
        with self._lock:
            self._in_flight[function] = max(0, self._in_flight.get(function, 0) - 1)

    def until_relayed(self, function: str, chunks: Iterable[bytes | str]) -> Iterator[bytes]:
        """``chunks`` passed through; the invocation ends when they are read to the end or closed."""
        try:
            for chunk in chunks:
                yield chunk.encode() if isinstance(chunk, str) else chunk
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            self.leave(function)
