"""What the Lambda runtime gives a function, for the local stack: its handler imported from the code, a context
object, execution environments that each run one invocation at a time, and whole log lines.

In AWS every execution environment is a process of its own running one invocation at a time, so the state
Powertools keeps on shared objects belongs to that one invocation: the keys ``inject_lambda_context`` appends to
the Logger (function name, correlation id), the metrics and dimensions waiting for ``log_metrics``, the event
handler's current event and matched route. ``ExecutionEnvironments`` does the same here: each function's
invocations run in worker processes of that function (started when every one it has is busy, kept warm after;
forked from a server process that has the common libraries loaded),
each taking one invocation at a time, so concurrent requests to one function or to several never share that
state. ``LineAtomicWriter`` keeps each process's lines whole on the one stdout they share.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from local.context import LambdaContext

Handler = Callable[[dict[str, Any], Any], Any]
ROOT = Path(__file__).resolve().parent.parent
# How long an environment may take to start (the interpreter, then the function's init); Lambda allows 10 s of
# init, but a shared machine starting several at once is slower.
INIT_TIMEOUT_S = 120.0
# Environments per function at most (Lambda's concurrency, scaled to a laptop); further invocations wait.
MAX_ENVIRONMENTS = 4
# Imported once by the process environments are forked from (multiprocessing's fork server, itself a fresh
# single-threaded process started with the stack's environment), so that a new environment starts in a fraction
# of the time an interpreter takes to import them: the libraries every function imports, then the functions' own
# modules (see ``process_context``). Each environment, a fork, has its own copy of what they made at import.
PRELOADED = [
    "boto3",
    "botocore.client",
    "httpx",
    "pydantic",
    "PIL.Image",
    "aws_lambda_powertools.event_handler",
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.metrics",
    "aws_lambda_powertools.utilities.idempotency",
    "jwt",
    "uvicorn",
]


def process_context() -> Any:
    """Where execution environments come from: forks of a fresh server process with the common libraries and the
    functions' modules loaded (never of the local stack's own process, which runs threads). Each is handed the
    environment variables the stack has when it starts."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*PRELOADED, *_function_modules()])
    return context


def _function_modules() -> list[str]:
    """Every function's handler module of template.yaml (``functions.<name>.app``)."""
    from local.template import project_template

    modules = set()
    for resource in project_template()["Resources"].values():
        if resource.get("Type") == "AWS::Serverless::Function":
            properties = resource["Properties"]
            package = ".".join(Path(properties["CodeUri"].strip("/")).parts)
            handler = str(properties.get("Handler", "app.lambda_handler"))
            if not handler.endswith(".sh"):  # a streamed function's run.sh serves its app module's app
                modules.add(f"{package}.{handler.rpartition('.')[0]}")
    return sorted(modules)


def take_environment(variables: dict[str, str]) -> None:
    """In an execution environment: the environment variables the stack handed it, before the function's init."""
    os.environ.clear()
    os.environ.update(variables)


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
    """Run one invocation in this process (a handler given as a function, as the gateway's tests hand it)."""
    return handler(event, context)


def started_at(context: Any) -> None:
    """The context's time left counts from now: in Lambda a function's timeout starts after its init."""
    if isinstance(context, LambdaContext):
        context.started = context.clock()


class FunctionError(Exception):
    """The function raised (its message is the exception's, as Lambda reports it), or its environment died."""


def _serve(conn: Connection, code_uri: str, handler_name: str, variables: dict[str, str]) -> None:
    """An execution environment: import the handler (the function's init), then run invocations one by one."""
    take_environment(variables)
    sys.stdout = LineAtomicWriter(sys.stdout)  # before the function is imported: its logger keeps this stream
    try:
        handler = load_handler(ROOT, code_uri, handler_name)
    except Exception as exc:
        _log_error(exc)
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            event, context = conn.recv()
        except (EOFError, OSError):
            return
        try:
            answer = ("ok", handler(event, context))
        except Exception as exc:
            _log_error(exc)
            answer = ("error", str(exc))
        sys.stdout.flush()
        conn.send(answer)


def _log_error(exc: BaseException) -> None:
    """An invocation's unhandled exception, logged as Lambda's runtime logs it."""
    stack = traceback.format_exception(exc)
    line = {"errorMessage": str(exc), "errorType": type(exc).__name__, "stackTrace": stack}
    print(json.dumps(line), flush=True)


class _Environment:
    """One worker process of a function, from the parent's side."""

    def __init__(self, code_uri: str, handler: str) -> None:
        context = process_context()
        self.conn, child = context.Pipe()
        arguments = (child, code_uri, handler, dict(os.environ))
        self.process = context.Process(target=_serve, args=arguments, daemon=True)
        self.process.start()
        child.close()
        if not self.conn.poll(INIT_TIMEOUT_S):
            self.stop()
            raise FunctionError(f"{code_uri} did not finish its init within {INIT_TIMEOUT_S:.0f} s")
        status, detail = self.conn.recv()
        if status != "ready":
            self.stop()
            raise FunctionError(f"{code_uri} failed its init: {detail}")

    def invoke(self, event: Any, context: Any) -> Any:
        try:
            self.conn.send((event, context))
            status, answer = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise FunctionError("Runtime exited without providing a reason") from exc
        if status != "ok":
            raise FunctionError(answer)
        return answer

    def stop(self) -> None:
        self.end()
        self.process.join(timeout=5)

    def end(self) -> None:
        """Tell the process to end, without waiting for it."""
        self.conn.close()
        self.process.terminate()


class ExecutionEnvironments:
    """Every function's execution environments: ``invoke`` runs an invocation in an idle one of its function,
    starting one when all are busy (up to ``limit``; past it, the invocation waits for one)."""

    def __init__(self, limit: int = MAX_ENVIRONMENTS) -> None:
        self._limit = limit
        self._idle: dict[str, list[_Environment]] = {}
        self._count: dict[str, int] = {}
        self._changed = threading.Condition()
        self._closed = False

    def invoke(
        self, code_uri: str, handler: str, event: Any, context: Any, on_start: Callable[[], None] | None = None
    ) -> Any:
        """Run the invocation in an environment of the function; ``on_start`` is called when it starts there
        (after the environment's init, if one had to start), when the function's own time starts to count."""
        key = f"{code_uri}:{handler}"
        environment = self._lease(key, code_uri, handler)
        started_at(context)
        if on_start is not None:
            on_start()
        healthy = False
        try:
            answer = environment.invoke(event, context)
            healthy = True
        except FunctionError:
            healthy = environment.process.is_alive()
            raise
        finally:
            self._release(key, environment, healthy=healthy)
        return answer

    def warm(self, code_uri: str, handler: str) -> None:
        """Start one environment of the function now (its init done before the first request needs it)."""
        key = f"{code_uri}:{handler}"
        self._release(key, self._lease(key, code_uri, handler), healthy=True)

    def _lease(self, key: str, code_uri: str, handler: str) -> _Environment:
        with self._changed:
            while not self._idle.get(key) and self._count.get(key, 0) >= self._limit:
                self._changed.wait()
            if self._idle.get(key):
                return self._idle[key].pop()
            self._count[key] = self._count.get(key, 0) + 1
        try:
            return _Environment(code_uri, handler)
        except Exception:
            with self._changed:
                self._count[key] -= 1
                self._changed.notify_all()
            raise

    def _release(self, key: str, environment: _Environment, *, healthy: bool) -> None:
        with self._changed:
            if healthy and not self._closed:
                self._idle.setdefault(key, []).append(environment)
            else:
                self._count[key] -= 1
            self._changed.notify_all()
        if not healthy or self._closed:
            environment.stop()

    def close(self) -> None:
        """Stop the idle environments (a busy one stops when its invocation ends)."""
        with self._changed:
            self._closed = True
            idle = [environment for environments in self._idle.values() for environment in environments]
            self._idle.clear()
        # All are told to end before any is waited for: they end side by side.
        for environment in idle:
            environment.end()
        for environment in idle:
            environment.stop()


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
