#!/bin/bash
# Started by the Lambda Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap): it waits for GET /_ready, then
# relays each API Gateway event to this server as an HTTP request and streams the answer back as it is written.
# One request at a time per execution environment, as Lambda runs them.
export PYTHONPATH="/opt/python:${LAMBDA_TASK_ROOT:-.}${PYTHONPATH:+:$PYTHONPATH}"
exec python -m uvicorn app:streamed_app --factory --host 127.0.0.1 --port "${PORT:-8080}" \
    --loop asyncio --http h11 --no-server-header --no-access-log --timeout-graceful-shutdown 5
