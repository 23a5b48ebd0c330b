"""Fixtures shared by the test suites: sample events, a Lambda context, the upstream simulator on a real
HTTP port, moto, and a tap on the structured log."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from local.context import LambdaContext
from local.environment import globals_environment
from local.template import project_template
from tests.faults import AwsFaults

ROOT = Path(__file__).resolve().parent.parent
E2E = "tests/e2e/"
SAM_VALIDATE_TEST = "test_sam_validate_lint_passes"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist the controller collects nothing: it starts the slow checks before its workers exist, when
    the paths it was given hold their tests, and the workers find them through the environment."""
    if not getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput"):
        return
    if _selects(config, ROOT / "tests" / "template") and "not slow" not in (config.option.markexpr or ""):
        from tests.template import sam_validate

        sam_validate.start()
    if _selects(config, ROOT / E2E):
        from tests.e2e import launcher

        launcher.start(count=config.option.numprocesses)


def _selects(config: pytest.Config, folder: Path) -> bool:
    """Whether the paths pytest was given (or its testpaths) reach into ``folder``."""
    paths = config.args or config.getini("testpaths")
    for arg in paths:
        path = (config.invocation_params.dir / str(arg).split("::")[0]).resolve()
        if path == folder or folder in path.parents or path in folder.parents:
            return True
    return False


# The files handed out first, in this order (seconds each on a 3-worker run of make test, measured; "waits": most
# of that time the file waits, on a timer, a held stream or a stack answering, rather than computing). pytest-xdist
# gives each worker two files to begin with, then the next one to whichever worker runs out first. The two longest
# waits go to the first worker together; the other two workers compute meanwhile, and after that each file that
# waits comes between files that compute, so that about one worker waits while two keep the two cores busy.
FIRST = (
    "tests/e2e/test_smoke_e2e.py",  # 70, waits (a 61 s generation)
    "tests/package/test_packaged_layout.py",  # 25, building the package
    "tests/e2e/test_schemathesis.py",  # 55-62
    "tests/e2e/test_streaming_e2e.py",  # 57, waits (held streams, idle limits)
    "tests/package/test_bench_quick.py",  # 27
    "tests/e2e/test_browser.py",  # 43
    "tests/template/test_checkov.py",  # 17
    "tests/integration/test_failure_semantics.py",  # 14
    "tests/template/test_template.py",  # 13
    "tests/integration/test_idempotency.py",  # 10
    "tests/integration/test_webhook_deliveries.py",  # 12
    "tests/integration/test_local_s3.py",  # 10
    "tests/integration/test_worker.py",  # 10-14
    "tests/integration/test_generations.py",  # 9
    "tests/e2e/test_webhooks_e2e.py",  # 41, waits (the local retry schedule)
    "tests/integration/test_client_tokens.py",  # 9
    "tests/integration/test_traces.py",  # 9
    "tests/e2e/test_capacity_e2e.py",  # 18, waits (held invocations)
    "tests/integration/test_api_key_script.py",  # 8
    "tests/template/test_deployment.py",  # 7
    "tests/e2e/test_edits_e2e.py",  # 18
    "tests/integration/test_async_tasks.py",  # 6
    "tests/integration/test_edits.py",  # 4-8
    "tests/e2e/test_budgets_e2e.py",  # 17
    "tests/integration/test_responses.py",  # 4
    "tests/integration/test_input_edges.py",  # 4-8
    "tests/e2e/test_async_e2e.py",  # 12, waits
    "tests/unit/test_local_gateway.py",  # 5
    "tests/integration/test_upstream_faults.py",  # 4
    "tests/e2e/test_readme.py",  # 13
    "tests/package/test_bytecode.py",  # 4-8
    "tests/e2e/test_responses_e2e.py",  # 13, waits
    "tests/integration/test_local_stack_ports.py",  # 3
    "tests/e2e/test_local_stack.py",  # 9-14, waits
    "tests/e2e/test_local_gateway_e2e.py",  # 11, waits
)
# Then the other files by directory, the longer kinds first, so that a run ends on short unit tests.
KINDS = ("tests/e2e/", "tests/package/", "tests/integration/", "tests/template/", "tests/unit/")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadfile --no-loadscope-reorder``: a file's tests run on one worker, so an
    end-to-end module keeps its stack's state and module fixtures to itself, and files are handed out in this
    order) the files named in FIRST go first, in that order, then the others by kind: end-to-end, package,
    integration, template, unit."""
    if hasattr(config, "workerinput"):
        items.sort(key=_rank)  # stable: a file's tests keep their order


def _rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::")[0]
    if path in FIRST:
        return FIRST.index(path)
    kind = next((index for index, prefix in enumerate(KINDS) if path.startswith(prefix)), len(KINDS))
    return len(FIRST) + kind


def pytest_collection_finish(session: pytest.Session) -> None:
    """Slow checks that run in a process of their own start now, to overlap with the rest of the suite (unless the
    xdist controller started them already)."""
    if any(item.name == SAM_VALIDATE_TEST for item in session.items):
        from tests.template import sam_validate

        sam_validate.start()
    if any(E2E in item.nodeid for item in session.items):
        from tests.e2e import launcher

        launcher.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.e2e import launcher
    from tests.template import sam_validate

    sam_validate.stop()
    launcher.stop()


# What the template's Globals give every function, set before any function module is imported.
for _name, _value in globals_environment(project_template()).items():
    os.environ.setdefault(_name, _value)

EVENTS = ROOT / "events"


# The one Lambda context fake (the local stack's); the old name is kept for the suites that use it.
FakeLambdaContext = LambdaContext


@pytest.fixture
def lambda_context() -> LambdaContext:
    """A GenerationsFunction context whose time left stays at 330 s (exact deadlines in assertions)."""
    return LambdaContext(remaining_ms=330_000, log_stream_name="test")


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def owner_of_key_id(key_id: str) -> str:
    """The owner id the events of ``api_event`` give a key id (an authorizer derives it from the key's hash)."""
    from imagecore.accounts.auth import owner_for_hash

    return owner_for_hash(hashlib.sha256(key_id.encode()).hexdigest())


@pytest.fixture
def api_event():
    """Build an API Gateway proxy event from the sample in events/, as API Gateway would send it now."""

    def build(
        name: str = "generations",
        *,
        body: Any = None,
        raw_body: str | None = None,
        headers: dict[str, str] | None = None,
        key_id: str | None = "key_test0000001",
        owner_id: str | None = None,
        token: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        event = copy.deepcopy(load_event(name))
        if raw_body is not None:
            event["body"] = raw_body
        elif body is not None:
            event["body"] = json.dumps(body)
        if headers is not None:
            event["headers"] = headers
            event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
        context = event["requestContext"]
        context["requestTimeEpoch"] = int(time.time() * 1000)
        context["requestId"] = str(uuid.uuid4())
        if key_id is None:
            context.pop("authorizer", None)
        elif "authorizer" in context:
            # What the authorizer puts there (imagecore.accounts.authorizer.authorizer_context): by default an owner
            # derived from the key id, so two key ids are two owners.
            context["authorizer"]["keyId"] = key_id
            context["authorizer"]["principalId"] = key_id
            context["authorizer"]["ownerId"] = owner_id or owner_of_key_id(key_id)
            context["authorizer"]["credential"] = "key" if token is None else "client_token"
            context["authorizer"].update(token or {})
        return event

    return build


class ServedApp:
    """A WSGI app on a real loopback port, served from a thread until ``close()``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        # serve_forever polls for shutdown; its default half second would be paid at every close().
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Current:
    """A WSGI app that hands each request to whichever app is current: one server for the session, a fresh
    app (with fresh state) for every test."""

    def __init__(self) -> None:
        self.app: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.app(environ, start_response)


UPSTREAM_KEY = "sim-upstream-key-for-tests"


@pytest.fixture(scope="session")
def _simulator_server() -> Iterator[tuple[_Current, str]]:
    current = _Current()
    served = ServedApp(current)
    yield current, served.url
    served.close()


@pytest.fixture
def simulator(_simulator_server: tuple[_Current, str]) -> Iterator[Any]:
    """A new upstream simulator (no faults, no calls, default options) on a real HTTP port; ``simulator.url`` is
    its /v1 base URL. The port stays the same for the whole session."""
    from functions.upstream_simulator.simulator import SimulatorOptions, UpstreamSimulator

    current, url = _simulator_server
    sim = UpstreamSimulator(SimulatorOptions(api_key=UPSTREAM_KEY))
    sim.url = url + "/v1"
    current.app = sim
    yield sim
    current.app = None


class LogTap:
    """The JSON lines the Powertools logger writes, parsed."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]

    def records(self, message: str = "image request") -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("message") == message]

    @property
    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def log_tap() -> Iterator[LogTap]:
    from imagecore.platform.observability import logger

    tap = LogTap()
    handler = logging.StreamHandler(tap.stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    yield tap
    logger.removeHandler(handler)


@pytest.fixture
def aws_faults() -> Iterator[AwsFaults]:
    """AWS calls that fail on demand, through botocore's event hooks (``tests/faults.py``); gone after the test.
    Clients made before a rule is added do not see it: add rules before the functions run cold."""
    faults = AwsFaults()
    yield faults
    faults.clear()
