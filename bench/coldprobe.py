"""One cold start in this fresh process: import a handler and build its dependencies, print wall-clock and CPU
ms as JSON. Run as ``python -m bench.coldprobe naive|generations`` with only the layer's requirements installed."""

import json
import sys
import time


def main(which: str) -> None:
    started, cpu_started = time.perf_counter(), time.process_time()
    if which == "naive":
        import bench.naive  # noqa: F401 - its clients are built at import, as a user would write it
    else:
        from functions.generations import app

        app.runtime()
    elapsed, cpu = (time.perf_counter() - started) * 1000, (time.process_time() - cpu_started) * 1000
    print(json.dumps({"ms": elapsed, "cpu_ms": cpu, "modules": len(sys.modules)}))


if __name__ == "__main__":
    main(sys.argv[1])
