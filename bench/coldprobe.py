"""One cold start in this fresh process: import a handler and build its dependencies, print wall-clock and CPU
ms as JSON. Run as ``python -m bench.coldprobe naive|generations|streamed`` with only the layer's requirements
installed.

``streamed`` is the synchronous route's function as the Lambda Web Adapter starts it (``run.sh``): uvicorn's
command line and server, then uvicorn loading ``streamed_app`` (the same import and build, plus the ASGI edge).
The socket is not opened."""

import json
import sys
import time


def main(which: str) -> None:
    started, cpu_started = time.perf_counter(), time.process_time()
    if which == "naive":
        import bench.naive  # noqa: F401 - its clients are built at import, as a user would write it
    elif which == "generations":
        from functions.generations import app

        app.deps()
    else:
        import uvicorn.main  # noqa: F401 - what ``python -m uvicorn`` imports
        from uvicorn.config import Config

        Config("functions.generations.app:streamed_app", factory=True, loop="asyncio", http="h11").load()
    elapsed, cpu = (time.perf_counter() - started) * 1000, (time.process_time() - cpu_started) * 1000
    print(json.dumps({"ms": elapsed, "cpu_ms": cpu, "modules": len(sys.modules)}))


if __name__ == "__main__":
    main(sys.argv[1])
