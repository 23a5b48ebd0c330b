"""What the Lambda runtime gives a function, for the local stack: its handler imported from the code, a context
object, an execution of its own for each invocation, and whole log lines.

In AWS every execution environment runs one invocation at a time, so the state Powertools keeps on shared
objects belongs to that one invocation: the keys ``inject_lambda_context`` appends to the Logger (function name,
correlation id), the metrics and dimensions waiting for ``log_metrics``, the event handler's current event and
matched route. The local stack runs every function in one process, many invocations at once on threads.
``invoke`` runs each invocation in a fresh ``contextvars`` context, and ``isolate_powertools_state`` makes that
state live in the context instead of on the shared objects, so each invocation logs, flushes and resolves only
its own. ``LineAtomicWriter`` keeps concurrent invocations' lines whole on the one stdout. Nothing of this runs
in AWS.
"""

from __future__ import annotations

import contextvars
import copy
import importlib
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local.context import LambdaContext

Handler = Callable[[dict[str, Any], Any], Any]


def load_handler(root: Path, code_uri: str, handler: str) -> Handler:
    """Import ``functions/<name>/app.py`` as ``functions.<name>.app`` and return its handler."""
    del root  # the functions are imported as packages of the project, which is on sys.path
    module_file, _, attribute = handler.rpartition(".")
    package = ".".join(Path(code_uri.strip("/")).parts)
    module = importlib.import_module(f"{package}.{module_file}")
    return getattr(module, attribute)


def new_context(function_name: str, timeout_s: float, memory_mb: int = 1024) -> LambdaContext:
    return LambdaContext(function_name, memory_mb, timeout_s, str(uuid.uuid4()), time.monotonic())


def invoke(handler: Handler, event: Any, context: Any) -> Any:
    """Run one invocation with state of its own (a fresh context), as a Lambda execution environment would."""
    isolate_powertools_state()
    return contextvars.Context().run(handler, event, context)


# --- per-invocation Powertools state --------------------------------------------------------------------------
_STATE: contextvars.ContextVar[dict[tuple[int, str], Any]] = contextvars.ContextVar("local_invocation_state")
_isolated: set[int] = set()
_isolating = threading.Lock()


def _context_state() -> dict[tuple[int, str], Any]:
    try:
        return _STATE.get()
    except LookupError:
        state: dict[tuple[int, str], Any] = {}
        _STATE.set(state)
        return state


def _per_context(name: str, initial: Callable[[Any], Any] | None = None) -> property:
    """An attribute whose value lives in the current context. A context that has not set it starts from a copy
    of the object's own value (its configuration: service, level, default keys), or from ``initial(obj)``."""

    def get(self: Any) -> Any:
        state = _context_state()
        key = (id(self), name)
        if key not in state:
            state[key] = initial(self) if initial is not None else copy.deepcopy(self.__dict__[name])
        return state[key]

    def set_(self: Any, value: Any) -> None:
        _context_state()[(id(self), name)] = value

    return property(get, set_)


def _isolate(obj: Any, attributes: dict[str, Callable[[Any], Any] | None]) -> None:
    """Give ``obj`` a subclass of its class whose ``attributes`` are per-context (each with the value a context
    starts from: None for a copy of the object's own value, which stays the base)."""
    if id(obj) in _isolated:
        return
    cls = type(obj)
    properties = {name: _per_context(name, initial) for name, initial in attributes.items() if name in obj.__dict__}
    obj.__class__ = type(f"PerInvocation{cls.__name__}", (cls,), properties)
    _isolated.add(id(obj))


# What an invocation starts with: no pending metrics, only the default dimensions (as after a flush).
_METRICS_STATE: dict[str, Callable[[Any], Any] | None] = {
    "metric_set": lambda _: {},
    "metadata_set": lambda _: {},
    "dimension_sets": lambda _: [],
    "timestamp": lambda _: None,
    "dimension_set": lambda provider: dict(provider.default_dimensions),
}


def _per_context_class_attribute(name: str) -> property:
    """For a metaclass: ``Cls.name`` read and assigned per context (unset: AttributeError, as before)."""

    def get(cls: Any) -> Any:
        try:
            return _context_state()[(id(cls), name)]
        except KeyError:
            raise AttributeError(name) from None

    def set_(cls: Any, value: Any) -> None:
        _context_state()[(id(cls), name)] = value

    return property(get, set_)


def _class_attribute_of_instance(cls: type, name: str) -> property:
    def get(self: Any) -> Any:
        return getattr(cls, name)

    return property(get)


def _isolate_resolvers() -> None:
    """The event handler's routers keep the event being resolved on their base class (``BaseRouter.current_event``
    and ``lambda_context``, shared by every function's resolver) and the matched route in each resolver's
    ``context``: all three become per invocation."""
    from aws_lambda_powertools.event_handler import api_gateway

    router = api_gateway.BaseRouter
    if id(router) in _isolated:
        return
    names = ("current_event", "lambda_context")
    for name in names:
        # Instances read the class attribute through a property reading the same per-context value.
        setattr(router, name, _class_attribute_of_instance(router, name))
    meta: type = type("PerInvocationRouterMeta", (type(router),), {n: _per_context_class_attribute(n) for n in names})
    router.__class__ = meta  # type: ignore[method-assign]
    setattr(api_gateway.ApiGatewayResolver, "context", _per_context("context", initial=lambda _: {}))  # noqa: B010
    _isolated.add(id(router))


def begin_invocation() -> None:
    """Start an invocation in the current context with state of its own: for an app server (a streamed
    function's ASGI app), whose requests each run in a context copied from the server's."""
    isolate_powertools_state()
    _STATE.set({})


def isolate_powertools_state() -> None:
    """Make the state Powertools keeps for the invocation being run (shared Logger keys, pending metrics, the
    event handler's current event and route) per invocation."""
    from imagecore.platform.observability import logger, metrics

    with _isolating:
        _isolate(logger.registered_formatter, {"log_format": None})
        _isolate(metrics.provider, _METRICS_STATE)
        _isolate_resolvers()


class LineAtomicWriter:
    """A text stream on which every thread writes whole lines: Lambda sends each function's output to its log
    line by line, and Powertools prints a metrics line in two writes (the JSON, then the newline), which other
    threads' lines could otherwise split in the local stack's one shared stdout."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._pending = threading.local()

    def write(self, text: str) -> int:
        buffered = getattr(self._pending, "text", "") + text
        complete, newline, rest = buffered.rpartition("\n")
        self._pending.text = rest
        if newline:
            with self._lock:
                self._stream.write(complete + newline)
                self._stream.flush()
        return len(text)

    def flush(self) -> None:
        pending, self._pending.text = getattr(self._pending, "text", ""), ""
        with self._lock:
            if pending:
                self._stream.write(pending)
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
