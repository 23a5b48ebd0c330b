"""The simulator as a deployed function: ``run.sh`` starts this behind the Lambda Web Adapter, which waits for
``GET /_ready`` and relays each Function URL request to it, streaming the answer back (RESPONSE_STREAM).

Calls must carry the key held in ``SIMULATOR_API_KEY_SECRET_ID`` (the secret the stack's functions read as their
upstream key); ``SIMULATOR_API_KEY`` gives it directly instead (tests). The control endpoints are off: each
execution environment would hold its own faults and counts. Nothing is paid for: every image is drawn here."""

from __future__ import annotations

import os

from werkzeug.serving import make_server

from .server import SimulatorOptions, UpstreamSimulator


def api_key() -> str:
    key = os.environ.get("SIMULATOR_API_KEY")
    if key:
        return key
    from aws_lambda_powertools.utilities import parameters

    return str(parameters.get_secret(os.environ["SIMULATOR_API_KEY_SECRET_ID"])).strip()


def main() -> None:
    port = int(os.environ.get("AWS_LWA_PORT") or os.environ.get("PORT") or "8080")
    simulator = UpstreamSimulator(
        SimulatorOptions(api_key=api_key(), account_id="acct-deployed-simulator", control=False)
    )
    # Threaded: a streamed answer (SSE, a delayed one) never holds up the adapter's next request.
    make_server("127.0.0.1", port, simulator, threaded=True).serve_forever()


if __name__ == "__main__":
    main()
