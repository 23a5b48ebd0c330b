"""The embedded local stack: ``make run``.

- an embedded moto server on ``127.0.0.1:${AWS_PORT:-4566}``, one endpoint for every AWS service the functions
  use (S3, so presigned URLs download with any HTTP client; DynamoDB; SQS; EventBridge), with the template's
  resources made on it, a poller that feeds the worker from the jobs queue like Lambda's event source, and the
  webhook function fed from the tasks table's stream and the webhooks queue;
- the upstream simulator on a free port, unless ``UPSTREAM_BASE_URL`` (+ ``UPSTREAM_API_KEY``) names a real one;
- the API on ``http://127.0.0.1:${PORT:-3000}/v1``: API Gateway emulation in front of the real handlers,
  authorizer included, with the routes and limits of template.yaml.

``LocalStack`` is also what the end-to-end tests and the benchmark start.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from local.aws_endpoint import LOCAL_CREDENTIALS, aws_app, aws_request_handler

ROOT = Path(__file__).resolve().parent.parent
LOCAL_REGION = "us-east-1"
# Webhook attempts locally: the same eight as the Standard Webhooks schedule, seconds apart instead of hours, so a
# developer can watch the retries of a failing receiver (and its last one, given up, about 16 s after the first).
LOCAL_WEBHOOK_SCHEDULE = "0,1,1,2,2,3,3,4"


@dataclass
class StackConfig:
    host: str = "127.0.0.1"
    port: int = 3000
    aws_port: int = 4566
    api_keys: list[str] = field(default_factory=list)
    upstream_base_url: str | None = None
    upstream_api_key: str | None = None
    integration_timeout_ms: int = 300_000
    simulator_latency_ms: int = 0
    simulator_keepalive_ms: int = 0
    log_level: str = "INFO"
    throttling: bool = False  # the stage's rate and burst limits (template parameters), off unless asked
    client_token_signing_key: str | None = None
    cors_allow_origins: str = "*"  # the template's CorsAllowOrigins: web origins that may call the API and S3
    stream_idle_limit_s: float | None = None  # None: API Gateway's, from the template's endpoint type
    parameter_overrides: str = ""  # "Name=Value ..." over the template's defaults (e.g. the usage plans' limits)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> StackConfig:
        env = dict(os.environ if env is None else env)
        keys = [k.strip() for k in env.get("API_KEYS", "").split(",") if k.strip()]
        return cls(
            host=env.get("HOST", "127.0.0.1"),
            port=int(env.get("PORT", "3000")),
            aws_port=int(env.get("AWS_PORT", "4566")),
            api_keys=keys,
            upstream_base_url=env.get("UPSTREAM_BASE_URL") or None,
            upstream_api_key=env.get("UPSTREAM_API_KEY") or None,
            integration_timeout_ms=int(env.get("INTEGRATION_TIMEOUT_MS", "300000")),
            simulator_latency_ms=int(env.get("SIMULATOR_LATENCY_MS", "0")),
            simulator_keepalive_ms=int(env.get("SIMULATOR_KEEPALIVE_MS", "0")),
            log_level=env.get("POWERTOOLS_LOG_LEVEL", env.get("LOG_LEVEL", "INFO")),
            throttling=env.get("API_THROTTLING", "").lower() in ("1", "true", "on"),
            client_token_signing_key=env.get("CLIENT_TOKEN_SIGNING_KEY") or None,
            cors_allow_origins=env.get("CORS_ALLOW_ORIGINS", "*"),
            stream_idle_limit_s=float(env.get("STREAM_IDLE_LIMIT_SECONDS") or 0) or None,
            parameter_overrides=env.get("PARAMETER_OVERRIDES", ""),
        )


class StackError(Exception):
    """The local stack cannot start; the message says why in one line."""


class PortTaken(StackError):
    def __init__(self, variable: str, host: str, port: int, reason: str) -> None:
        super().__init__(f"{variable} {port} on {host} is not available ({reason}): free it or set {variable}")
        self.variable, self.port = variable, port


def _bind(variable: str, host: str, port: int, app: Any, handler: Any = None) -> BaseWSGIServer:
    """Bind and listen now, so a taken port fails here, before anything else starts (port 0: any free one)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise PortTaken(variable, host, port, exc.strerror or type(exc).__name__) from None
    try:
        return make_server(host, port, app, threaded=True, request_handler=handler, fd=sock.fileno())
    finally:
        sock.close()  # the server holds its own duplicate of the listening socket


class _Serving:
    def __init__(self, server: BaseWSGIServer) -> None:
        self.server = server
        # serve_forever polls for shutdown: its default half second would be paid at every stop(), and a shorter
        # poll costs CPU while the stack idles (0.02 s: ~0.7% of a core for the stack's three servers).
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class LocalStack:
    """Start with ``start()``, stop with ``stop()``; ``api_url``, ``aws_url``, ``keys`` and ``simulator``
    (None with a real upstream) tell how to reach it."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.keys = config.api_keys or [f"isk-local-{secrets.token_urlsafe(18)}"]
        self.generated_key = not config.api_keys
        # Signs client tokens: a fresh one each start (tokens die with the local stack) unless one is given.
        self.signing_key = config.client_token_signing_key or secrets.token_urlsafe(48)
        self.simulator: Any = None
        self.resources: Any = None
        self._poller: Any = None
        self._webhook_pollers: list[Any] = []
        self._servers: list[_Serving] = []
        self._gateway: Any = None
        self.api_url = ""
        self.aws_url = ""
        self.upstream_url = ""

    def start(self) -> LocalStack:
        """Bind both ports first (a taken one raises ``PortTaken`` before anything starts), then serve."""
        from local.gateway import LocalApiGateway
        from local.resources import create_resources
        from local.template import project_template

        if self.config.upstream_base_url and not self.config.upstream_api_key:
            raise StackError("UPSTREAM_BASE_URL is set: set UPSTREAM_API_KEY too")
        self._fake_aws_credentials()
        from local.s3_cors import bucket_cors_rules

        template = project_template()
        overrides = self._parameter_overrides()
        parameters = {
            **overrides,
            "IntegrationTimeoutMs": self.config.integration_timeout_ms,
            "CorsAllowOrigins": self.config.cors_allow_origins,
        }
        gateway = LocalApiGateway(
            ROOT,
            ROOT / "template.yaml",
            parameters=parameters,
            throttling=self.config.throttling,
            stream_idle_limit_s=self.config.stream_idle_limit_s,
            plans=self._plans(template, overrides),
            # the stage's access log (a log group of its own in AWS), on the stack's output
            access_log=lambda line: print(line, flush=True),
        )
        self._gateway = gateway
        moto = aws_app(bucket_cors_rules(template, parameters))
        aws_server = _bind("AWS_PORT", self.config.host, self.config.aws_port, moto, aws_request_handler())
        try:
            api_server = _bind("PORT", self.config.host, self.config.port, gateway)
        except PortTaken:
            aws_server.server_close()
            raise
        aws = _Serving(aws_server)
        self._servers.append(aws)
        self.aws_url = aws.url
        self.resources = create_resources(self.aws_url, LOCAL_REGION, template)
        upstream_key = self._start_upstream()
        self._function_environment(template, upstream_key, overrides)
        if gateway.api.authorizer is not None:
            # Every authorized request calls it first: its first environment starts with the stack, and with it the
            # server every environment is forked from (the functions' modules loaded), before the stack says ready.
            gateway.environments.warm(*gateway.api.authorizer)
        api = _Serving(api_server)
        self._servers.append(api)
        self.api_url = api.url + "/v1"
        self._start_worker(template)
        self._start_webhooks(template, moto.written)
        return self

    def _start_upstream(self) -> str:
        """The upstream the functions call: the one named by UPSTREAM_BASE_URL, else the simulator; its key."""
        upstream_key = self.config.upstream_api_key
        if self.config.upstream_base_url and upstream_key:
            self.upstream_url = self.config.upstream_base_url
            return upstream_key
        from functions.upstream_simulator.simulator import SimulatorOptions, UpstreamSimulator

        upstream_key = upstream_key or f"sim-{secrets.token_hex(8)}"
        self.simulator = UpstreamSimulator(
            SimulatorOptions(
                api_key=upstream_key,
                latency_ms=self.config.simulator_latency_ms,
                keepalive_ms=self.config.simulator_keepalive_ms,
            )
        )
        serving = _Serving(make_server(self.config.host, 0, self.simulator, threaded=True))
        self._servers.append(serving)
        self.upstream_url = serving.url + "/v1"
        return upstream_key

    def _parameter_overrides(self) -> dict[str, str]:
        from local.plans import parse_overrides

        try:
            return parse_overrides(self.config.parameter_overrides)
        except ValueError as exc:
            raise StackError(str(exc)) from None

    def _plans(self, template: dict[str, Any], overrides: dict[str, str]) -> Any:
        """The template's usage plans, and the local keys that name one (``KEY@PLAN`` in API_KEYS) on it."""
        from imagecore.accounts.auth import Keyring
        from local.plans import UsagePlans, read_plans

        try:
            records = Keyring.from_plain_keys(self.keys).records
            plans = read_plans(template, overrides)
            return UsagePlans(plans, {r.usage_key: r.plan for r in records if r.usage_key and r.plan})
        except ValueError as exc:
            raise StackError(f"API_KEYS: {exc}") from None

    def _start_worker(self, template: dict[str, Any]) -> None:
        from functools import partial

        from local.poller import JobPoller

        worker = template["Resources"]["WorkerFunction"]["Properties"]
        jobs = worker["Events"]["Jobs"]["Properties"]
        self._poller = JobPoller(
            endpoint=self.aws_url,
            region=LOCAL_REGION,
            queue_url=self.resources.jobs_queue_url,
            handler=partial(self._gateway.environments.invoke, worker["CodeUri"], worker["Handler"]),
            function_timeout_s=float(worker["Timeout"]),
            batch_size=int(jobs.get("BatchSize", 1)),
            memory_mb=int(worker.get("MemorySize", 128)),
        ).start()

    def _start_webhooks(self, template: dict[str, Any], dynamodb_written: threading.Event) -> None:
        """The webhook function, fed as in AWS: the tasks table's stream and the webhooks queue."""
        from functools import partial

        from local.poller import JobPoller
        from local.streams import StreamPoller

        function = template["Resources"]["WebhookFunction"]["Properties"]
        # in execution environments of its own, as every function of the local stack
        handler = partial(self._gateway.environments.invoke, function["CodeUri"], function["Handler"])
        timeout = float(function["Timeout"])
        memory_mb = int(function.get("MemorySize", 128))
        self._webhook_pollers = [
            StreamPoller(
                endpoint=self.aws_url,
                region=LOCAL_REGION,
                table_name=self.resources.tasks_table,
                written=dynamodb_written,
                handler=handler,
                function_name="WebhookFunction",
                function_timeout_s=timeout,
                batch_size=int(function["Events"]["TaskEnds"]["Properties"]["BatchSize"]),
                memory_mb=memory_mb,
            ).start(),
            JobPoller(
                endpoint=self.aws_url,
                region=LOCAL_REGION,
                queue_url=self.resources.webhooks_queue_url,
                handler=handler,
                function_timeout_s=timeout,
                function_name="WebhookFunction",
                memory_mb=memory_mb,
            ).start(),
        ]

    def stop(self) -> None:
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        for poller in self._webhook_pollers:
            poller.stop()
        self._webhook_pollers = []
        for serving in reversed(self._servers):
            serving.stop()
        self._servers.clear()
        if self._gateway is not None:
            self._gateway.close()
            self._gateway = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _fake_aws_credentials() -> None:
        # Local credentials: boto3 never looks for real ones, and the embedded S3 checks POST signatures with them.
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = LOCAL_CREDENTIALS
        os.environ.pop("AWS_SESSION_TOKEN", None)
        os.environ.pop("AWS_PROFILE", None)
        os.environ["AWS_DEFAULT_REGION"] = LOCAL_REGION
        os.environ["AWS_REGION"] = LOCAL_REGION

    def _function_environment(self, template: dict[str, Any], upstream_key: str, overrides: dict[str, str]) -> None:
        """What the template's Globals and function Environment give the functions in AWS, pointed at the
        local services (one process hosts every function, so it is all their variables at once), with the
        parameters PARAMETER_OVERRIDES sets. Settings are read from here once, when a function first runs."""
        from local.environment import SECRET_STAND_INS, function_environment, resource_refs

        for secret_id in SECRET_STAND_INS:
            os.environ.pop(secret_id, None)
        environment = function_environment(
            template,
            refs={
                **overrides,
                **resource_refs(self.resources),
                "UpstreamBaseUrl": self.upstream_url,
                # With the built-in simulator the stack is what UpstreamSimulator=true deploys: the functions'
                # upstream is the simulator's URL (its Function URL's stand-in) and health says so.
                "UpstreamSimulator": "true" if self.simulator is not None else "false",
                "UpstreamSimulatorFunctionUrl.FunctionUrl": self.upstream_url.removesuffix("v1"),
                "IntegrationTimeoutMs": str(self.config.integration_timeout_ms),
                "CorsAllowOrigins": self.config.cors_allow_origins,
                "LogLevel": self.config.log_level,
                # http:// receivers on the developer's own machine, and a schedule of seconds to watch.
                "WebhookAllowLoopback": "true",
                "WebhookRetrySchedule": LOCAL_WEBHOOK_SCHEDULE,
            },
            secrets={
                "UPSTREAM_API_KEY": upstream_key,
                "SIMULATOR_API_KEY": upstream_key,
                "API_KEYS": ",".join(self.keys),
                "CLIENT_TOKEN_SIGNING_KEY": self.signing_key,
                # made at each start: digests compare within one run, and nothing outside it can recompute them
                "PROMPT_DIGEST_KEY": secrets.token_hex(32),
            },
        )
        # The Lambda Web Adapter's own settings: here local.streaming plays the adapter.
        for adapter_variable in [name for name in environment if name.startswith("AWS_LWA_")]:
            environment.pop(adapter_variable)
        environment.pop("AWS_LAMBDA_EXEC_WRAPPER", None)
        environment.pop("PORT", None)
        if self.config.stream_idle_limit_s:
            # The streamed edge speaks before the idle limit: the same limit as the local gateway's.
            environment["STREAM_IDLE_LIMIT_SECONDS"] = str(self.config.stream_idle_limit_s)
        os.environ.update(environment)
        os.environ.update(
            {
                "S3_ENDPOINT_URL": self.aws_url,
                # Every other AWS client (DynamoDB, SQS, EventBridge) talks to the embedded moto server too.
                "AWS_ENDPOINT_URL": self.aws_url,
                # The local stack serves plain HTTP: the URLs the API gives for itself (poll_url) say so.
                "PUBLIC_URL_SCHEME": "http",
            }
        )


def main() -> None:
    from local.lambda_runtime import LineAtomicWriter

    # Before any function is imported: their loggers keep the stream they find.
    sys.stdout = LineAtomicWriter(sys.stdout)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    config = StackConfig.from_env()
    stack = LocalStack(config)
    try:
        stack.start()
    except StackError as exc:
        stack.stop()
        print(f"cannot start the local stack: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    upstream = f"built-in simulator at {stack.upstream_url}" if stack.simulator is not None else stack.upstream_url
    # A key the user chose is theirs to know: only a generated one is printed.
    key = stack.keys[0] if stack.generated_key else "$API_KEY"
    shown = (
        f"{key}   (generated; set API_KEYS to choose)" if stack.generated_key else f"{len(stack.keys)} from API_KEYS"
    )
    lines = [
        "image service (local stack)",
        f"  API          {stack.api_url}   (GET {stack.api_url}/health)",
        f"  AWS (moto)   {stack.aws_url}   (S3, DynamoDB, SQS, EventBridge: --endpoint-url {stack.aws_url})",
        f"  bucket       {stack.resources.bucket}",
        f"  event bus    {stack.resources.event_bus_name}   (put ImageGenerationRequested events here)",
        f"  jobs queue   {stack.resources.jobs_queue_url}",
        f"  completions  {stack.resources.completions_queue_url}   (ImageGeneration* events, copied)",
        f"  dead letters {stack.resources.dead_letter_queue_url}",
        f"  webhooks     retries after {LOCAL_WEBHOOK_SCHEDULE} s (local schedule of seconds; AWS: the Standard "
        "Webhooks one, 0 s to 10 h); http:// receivers on loopback allowed",
        f"  upstream     {upstream}",
        f"  API key      {shown}",
        f"  pages        {stack.api_url}/docs   {stack.api_url}/playground",
        f"  web origins  {config.cors_allow_origins}   (CORS; set CORS_ALLOW_ORIGINS to restrict)",
        "",
        f"  curl -sS {stack.api_url}/images/generations -H 'Authorization: Bearer {key}' \\",
        '    -H \'Content-Type: application/json\' -d \'{"prompt": "a lighthouse at dawn", "size": "1536x1024"}\'',
        "",
    ]
    print("\n".join(lines), flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    stack.stop()
