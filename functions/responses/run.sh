#!/bin/bash
# Started by the Lambda Web Adapter 1.x (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap): it polls GET
# AWS_LWA_READINESS_CHECK_PATH (/_ready) until AWS_LWA_READINESS_CHECK_HEALTHY_STATUS (200), then relays each API
# Gateway event to this server on AWS_LWA_PORT and streams the answer back as it is written (response_stream).
# One request at a time per execution environment, as Lambda runs them.
export PYTHONPATH="/opt/python:${LAMBDA_TASK_ROOT:-.}${PYTHONPATH:+:$PYTHONPATH}"
exec python -m uvicorn app:streamed_app --factory --host 127.0.0.1 --port "${AWS_LWA_PORT:-${PORT:-8080}}" \
    --loop asyncio --http h11 --no-server-header --no-access-log --timeout-graceful-shutdown 5
