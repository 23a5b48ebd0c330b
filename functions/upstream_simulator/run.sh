#!/bin/bash
# Started by the Lambda Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap): it waits until GET /_ready answers
# 200 on AWS_LWA_PORT, then relays each Function URL request to the simulator and streams its answer back.
export PYTHONPATH="/opt/python:${LAMBDA_TASK_ROOT:-.}${PYTHONPATH:+:$PYTHONPATH}"
cd "${LAMBDA_TASK_ROOT:-$(dirname "$0")}" || exit 1
exec python -m simulator
