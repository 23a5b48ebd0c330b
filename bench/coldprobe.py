"""One cold start in this fresh process: import a handler and build its dependencies, print wall-clock and CPU
ms as JSON. Run as ``python -m bench.coldprobe naive|generations|streamed|libraries [modules file]`` with only
the layer's requirements installed.

``streamed`` is the synchronous route's function as the Lambda Web Adapter starts it (``run.sh``): uvicorn's
command line and server, then uvicorn loading ``streamed_app`` (the same import and build, plus the ASGI edge).
The socket is not opened.

``generations`` also prints the names of the library modules it loaded (not the repository's own), in the order
they were loaded; ``libraries`` is the naive handler, then those modules imported in that order: the cold start
the generations function would have if its own code cost nothing (for information, no target)."""

import importlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def library_modules() -> list[str]:
    """The loaded modules that are not the repository's own (``__main__``, ``bench``, ``functions``, the layer's
    source), in the order they were loaded."""
    names = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name != "__main__" and not (file and Path(file).resolve().is_relative_to(ROOT)):
            names.append(name)
    return names


def main(which: str, modules_file: str | None = None) -> None:
    started, cpu_started = time.perf_counter(), time.process_time()
    if which == "naive":
        import bench.naive  # noqa: F401 - its clients are built at import, as a user would write it
    elif which == "generations":
        from functions.generations import app

        app.deps()
    elif which == "libraries":
        for name in ["bench.naive", *json.loads(Path(modules_file or "").read_text())]:
            importlib.import_module(name)
    else:
        import uvicorn.main  # noqa: F401 - what ``python -m uvicorn`` imports
        from uvicorn.config import Config

        Config("functions.generations.app:streamed_app", factory=True, loop="asyncio", http="h11").load()
    elapsed, cpu = (time.perf_counter() - started) * 1000, (time.process_time() - cpu_started) * 1000
    answer: dict[str, object] = {"ms": elapsed, "cpu_ms": cpu, "modules": len(sys.modules)}
    if which == "generations":
        answer["library_modules"] = library_modules()
    print(json.dumps(answer))


if __name__ == "__main__":
    main(*sys.argv[1:3])
