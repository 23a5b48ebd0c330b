"""The embedded local stack: ``make run``.

- an embedded moto server on ``127.0.0.1:${AWS_PORT:-4566}``, one endpoint for every AWS service the functions
  use (S3, so presigned URLs download with any HTTP client; DynamoDB; SQS; EventBridge), with the template's
  resources made on it, and a poller that feeds the worker from the jobs queue like Lambda's event source;
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
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

ROOT = Path(__file__).resolve().parent.parent
LOCAL_REGION = "us-east-1"


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
    client_token_signing_key: str | None = None

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
            client_token_signing_key=env.get("CLIENT_TOKEN_SIGNING_KEY") or None,
        )


class _Serving:
    def __init__(self, server: BaseWSGIServer) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
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
        self.signing_key = config.client_token_signing_key or secrets.token_urlsafe(48)
        self.simulator: Any = None
        self.resources: Any = None
        self._poller: Any = None
        self._moto: Any = None
        self._servers: list[_Serving] = []
        self.api_url = ""
        self.aws_url = ""
        self.upstream_url = ""

    def start(self) -> LocalStack:
        from moto.server import ThreadedMotoServer

        self._fake_aws_credentials()
        self._moto = ThreadedMotoServer(ip_address=self.config.host, port=self.config.aws_port, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.aws_url = f"http://{host}:{port}"
        from local.gateway import load_template
        from local.resources import create_resources

        template = load_template(ROOT / "template.yaml")
        self.resources = create_resources(self.aws_url, LOCAL_REGION, template)

        upstream_key = self.config.upstream_api_key
        if self.config.upstream_base_url:
            self.upstream_url = self.config.upstream_base_url
        else:
            from local.simulator import SimulatorOptions, UpstreamSimulator

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
        if not upstream_key:
            raise SystemExit("UPSTREAM_BASE_URL is set: set UPSTREAM_API_KEY too")

        self._function_environment(upstream_key)
        from local.gateway import LocalApiGateway

        gateway = LocalApiGateway(
            ROOT, ROOT / "template.yaml", integration_timeout_ms=self.config.integration_timeout_ms
        )
        api = _Serving(make_server(self.config.host, self.config.port, gateway, threaded=True))
        self._servers.append(api)
        self.api_url = api.url + "/v1"
        self._start_worker(template)
        return self

    def _start_worker(self, template: dict[str, Any]) -> None:
        from local.gateway import load_handler
        from local.poller import JobPoller

        worker = template["Resources"]["WorkerFunction"]["Properties"]
        jobs = worker["Events"]["Jobs"]["Properties"]
        self._poller = JobPoller(
            endpoint=self.aws_url,
            region=LOCAL_REGION,
            queue_url=self.resources.jobs_queue_url,
            handler=load_handler(ROOT, worker["CodeUri"], worker["Handler"]),
            function_timeout_s=float(worker["Timeout"]),
            batch_size=int(jobs.get("BatchSize", 1)),
        ).start()

    def stop(self) -> None:
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        for serving in reversed(self._servers):
            serving.stop()
        self._servers.clear()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _fake_aws_credentials() -> None:
        # The embedded moto server accepts any credentials; these keep boto3 from looking for real ones.
        os.environ["AWS_ACCESS_KEY_ID"] = "local"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "local"  # noqa: S105 - moto ignores credentials
        os.environ.pop("AWS_SESSION_TOKEN", None)
        os.environ.pop("AWS_PROFILE", None)
        os.environ["AWS_DEFAULT_REGION"] = LOCAL_REGION
        os.environ["AWS_REGION"] = LOCAL_REGION

    def _function_environment(self, upstream_key: str) -> None:
        """What the template's Globals and function Environment give the functions in AWS, pointed at the
        local services. Settings are read from here once, when a function first runs."""
        os.environ.update(
            {
                "POWERTOOLS_SERVICE_NAME": "image-service",
                "POWERTOOLS_METRICS_NAMESPACE": "ImageService",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": self.config.log_level,
                "IMAGES_BUCKET": self.resources.bucket,
                "S3_ENDPOINT_URL": self.aws_url,
                # Every other AWS client (DynamoDB, SQS, EventBridge) talks to the embedded moto server too.
                "AWS_ENDPOINT_URL": self.aws_url,
                "TASKS_TABLE": self.resources.tasks_table,
                "IDEMPOTENCY_TABLE": self.resources.idempotency_table,
                "TOKEN_USAGE_TABLE": self.resources.token_usage_table,
                "JOBS_QUEUE_URL": self.resources.jobs_queue_url,
                "DEAD_LETTER_QUEUE_URL": self.resources.dead_letter_queue_url,
                "EVENT_BUS_NAME": self.resources.event_bus_name,
                "UPSTREAM_BASE_URL": self.upstream_url,
                "UPSTREAM_API_KEY": upstream_key,
                "INTEGRATION_TIMEOUT_MS": str(self.config.integration_timeout_ms),
                "API_KEYS": ",".join(self.keys),
                # Signs client tokens; a fresh one each start, so tokens die with the local stack.
                "CLIENT_TOKEN_SIGNING_KEY": self.signing_key,
            }
        )
        os.environ.pop("UPSTREAM_API_KEY_SECRET_ID", None)
        os.environ.pop("API_KEYS_SECRET_ID", None)
        os.environ.pop("CLIENT_TOKEN_SIGNING_SECRET_ID", None)


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    config = StackConfig.from_env()
    stack = LocalStack(config)
    try:
        stack.start()
    except OSError as exc:
        print(f"cannot start the local stack: {exc} (is PORT {config.port} or AWS_PORT {config.aws_port} taken?)")
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
        f"  upstream     {upstream}",
        f"  API key      {shown}",
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
