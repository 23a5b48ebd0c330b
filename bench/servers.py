"""The embedded AWS (moto servers holding the template's resources: S3 in one process, beside the upstream
simulator at latency 0; DynamoDB and SQS in another) in processes of their own, so that neither their CPU time nor
their memory counts as a handler's; their wall time does, where a handler waits."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from typing import Any

from bench.cases import BenchError

HOST = "127.0.0.1"
REGION = "us-east-1"
PREFIX = "image-service-bench"
BUCKET = PREFIX  # the images bucket create_resources makes
IN_MEMORY_OBJECT_BYTES = 1 << 30


def aws_environment() -> dict[str, str]:
    """moto takes any credentials; these (and no config files) keep boto3 from looking for real ones."""
    return {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        # The layer ships no awscrt, so in Lambda botocore signs and checksums in pure Python; the dev venv
        # has awscrt (aws-sam-cli wants boto3[crt]), which botocore would otherwise pick up.
        "BOTO_DISABLE_CRT": "true",
    }


def function_environment(
    servers: Servers, upstream_key: str, function: str = "GenerationsStreamFunction"
) -> dict[str, str]:
    """What the template gives ``function`` (by default the synchronous generations function; ``local.environment``,
    the one source the local stack and the tests use too), pointed at the local servers and the resources made on
    them; tracing off. The bench calls the handler directly, so the Lambda Web Adapter's own variables are left out."""
    from local.environment import SECRET_STAND_INS, function_environment, resource_refs
    from local.resources import LocalResources
    from local.template import project_template

    resources = LocalResources(**servers.resources)
    environment = function_environment(
        project_template(),
        function,
        refs={**resource_refs(resources), "UpstreamBaseUrl": servers.upstream_url},
        secrets={"UPSTREAM_API_KEY": upstream_key},
    )
    if set(SECRET_STAND_INS) & set(environment):
        raise BenchError("a secret's id reached the local environment")
    for adapter in ("AWS_LAMBDA_EXEC_WRAPPER", "AWS_LWA_INVOKE_MODE", "AWS_LWA_READINESS_CHECK_PATH", "PORT"):
        environment.pop(adapter, None)
    return {
        **aws_environment(),
        **environment,
        "S3_ENDPOINT_URL": servers.s3_url,
        # DynamoDB and SQS (the usage, tasks and idempotency clients) talk to the other moto server.
        "AWS_ENDPOINT_URL": servers.aws_url,
    }


def _start(role: str, upstream_key: str) -> tuple[Any, Any, Any, dict[str, Any]]:
    """A moto server holding the template's resources and, for the ``s3`` role, the upstream simulator beside it."""
    import threading
    from dataclasses import asdict

    from moto.server import ThreadedMotoServer
    from werkzeug.serving import make_server

    from functions.upstream_simulator.simulator import SimulatorOptions, UpstreamSimulator
    from local.resources import create_resources
    from local.template import project_template

    moto = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    url = f"http://{host}:{port}"
    urls: dict[str, Any] = {
        "url": url,
        "resources": asdict(create_resources(url, REGION, project_template(), prefix=PREFIX)),
    }
    if role != "s3":
        return moto, None, None, urls
    simulator = UpstreamSimulator(SimulatorOptions(api_key=upstream_key, latency_ms=0, keepalive_ms=0))
    upstream = make_server(HOST, 0, simulator, threaded=True)
    serve = threading.Thread(target=upstream.serve_forever, kwargs={"poll_interval": 0.02}, name="simulator")
    serve.daemon = True
    serve.start()
    urls["upstream_url"] = f"http://{HOST}:{upstream.server_address[1]}/v1"
    return moto, simulator, upstream, urls


def _serve(conn: Any, role: str, upstream_key: str) -> None:
    """A servers process: report the URLs, serve until told to stop (or the parent goes), report the call count."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.update(aws_environment())
    # moto keeps an object over 5 MB in a temporary file on this machine's disk, so each 4K PUT would be timed
    # writing 25 MB to the local disk, which S3 does not do; held in memory, a PUT costs what its transfer
    # and moto's own handling cost. The cases empty the bucket after each round, so memory stays bounded.
    os.environ["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = str(IN_MEMORY_OBJECT_BYTES)
    try:
        moto, simulator, upstream, urls = _start(role, upstream_key)
    except Exception as exc:
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    conn.send(urls)
    with contextlib.suppress(EOFError, OSError):
        conn.recv()
    calls = simulator.calls if simulator is not None else None
    if upstream is not None:
        upstream.shutdown()
        upstream.server_close()
    moto.stop()
    with contextlib.suppress(OSError):
        conn.send({"calls": calls})


class _Process:
    """One servers process, seen from the parent."""

    def __init__(self, role: str, upstream_key: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, role, upstream_key), name=f"bench-{role}", daemon=True
        )
        self._process.start()
        child.close()
        self.info: dict[str, Any] = self._conn.recv() if self._conn.poll(120) else {"error": "no answer within 120 s"}

    def stop(self) -> int | None:
        calls = None
        with contextlib.suppress(OSError, EOFError):
            self._conn.send("stop")
            if self._conn.poll(30):
                calls = self._conn.recv().get("calls")
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
        self._conn.close()
        return calls


class Servers:
    """The servers, seen from the parent: S3 (with the upstream simulator beside it) in one process, the rest of
    the embedded AWS (DynamoDB, SQS) in another. In AWS they are separate services: in one moto process a usage
    write and an image PUT would wait for each other on one interpreter lock."""

    def __init__(self, upstream_key: str) -> None:
        self._processes = [_Process("s3", upstream_key), _Process("aws", upstream_key)]
        s3, aws = (process.info for process in self._processes)
        failed = s3.get("error") or aws.get("error")
        if failed:
            self.stop()
            raise BenchError(f"the AWS servers or the upstream simulator failed to start: {failed}")
        self.s3_url: str = s3["url"]
        self.aws_url: str = aws["url"]
        self.upstream_url: str = s3["upstream_url"]
        self.resources: dict[str, str] = aws["resources"]  # its queues' URLs point at the AWS server

    def stop(self) -> int | None:
        """Stop both; the number of upstream calls the simulator received (None if unknown)."""
        calls = [process.stop() for process in self._processes]
        return calls[0]
