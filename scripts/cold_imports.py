"""What the functions import, found by importing it. ``scripts/package.py`` runs this under Lambda's Python
(3.13) in a venv holding the layer's pinned requirements, with the repository root and the layer's source first
on ``sys.path`` and an environment imitating a deployed function's; it prints (JSON) the file of every module
then loaded, so the package carries bytecode for exactly those. Loaded here:

- each function's ``app`` module, then each of its zero-argument cached builders (the clients, stores and
  settings a cold start builds before or at its first request);
- every import written inside a function of imagecore or of the functions: what a request imports only when it
  needs it (werkzeug's multipart parser, Powertools' parameters and idempotency, the event stream);
- every Pillow plugin: ``Image.open`` tries five formats first and imports all the plugins when none of them
  matches (a WebP image);
- what a streamed function's ``run.sh`` starts: ``python -m uvicorn`` with its event loop, its HTTP protocol
  and the app factory.

A module counts from the moment its code is loaded, even if running it then fails: the X-Ray SDK's patches for
libraries that are not installed, httpcore's HTTP/2 support and others are compiled, run and given up (an
``ImportError`` caught by whoever tried) at every cold start all the same, so they are not in ``sys.modules``.

Usage: ``python cold_imports.py '<json: {"root", "apps", "sources", "servers"}>'``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import inspect
import json
import sys
from pathlib import Path
from typing import Any

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def record_loaded_sources() -> set[str]:
    """The source files whose code is loaded from now on (whether or not running it succeeds)."""
    loaded: set[str] = set()
    get_code = importlib.machinery.SourceFileLoader.get_code

    def recording(self: importlib.machinery.SourceFileLoader, fullname: str) -> Any:
        loaded.add(self.get_filename(fullname))
        return get_code(self, fullname)

    importlib.machinery.SourceFileLoader.get_code = recording  # type: ignore[method-assign,assignment]
    return loaded


def nested_imports(path: Path) -> list[ast.stmt]:
    """The import statements of ``path`` written inside a function (run when it is called, not at import)."""
    found: list[ast.stmt] = []

    def visit(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if inside and isinstance(child, ast.Import | ast.ImportFrom):
                found.append(child)
            visit(child, inside or isinstance(child, _SCOPES))

    visit(ast.parse(path.read_text(), filename=str(path)), inside=False)
    return found


def run_nested_imports(sources: list[str]) -> None:
    for source in sources:
        for path in sorted(Path(source).rglob("*.py")):
            for statement in nested_imports(path):
                code = compile(ast.Module(body=[statement], type_ignores=[]), str(path), "exec")
                exec(code, {"__name__": "_cold_imports"})  # noqa: S102 - the project's own import statements


def build_everything(module: Any) -> list[str]:
    """Call the module's own zero-argument ``functools.cache`` builders; the ones that refused, by name."""
    refused = []
    for name, value in sorted(vars(module).items()):
        if not (hasattr(value, "cache_info") and getattr(value, "__module__", None) == module.__name__):
            continue
        if any(p.default is p.empty for p in inspect.signature(value).parameters.values()):
            continue
        try:
            value()
        except Exception as exc:  # reported: the list of imports is only less complete
            refused.append(f"{module.__name__}.{name}: {type(exc).__name__}: {str(exc)[:200]}")
    return refused


def start_servers(servers: list[dict[str, Any]]) -> None:
    """What ``python -m uvicorn <app> --factory --loop <loop> --http <http>`` loads before serving."""
    if not servers:
        return
    importlib.import_module("uvicorn.__main__")  # ``-m uvicorn`` runs it (its ``main()`` only under __main__)
    from uvicorn.config import Config

    for server in servers:
        config = Config(server["app"], factory=server["factory"], loop=server["loop"], http=server["http"])
        config.load()
        config.get_loop_factory()


def main(request: dict[str, Any]) -> dict[str, Any]:
    sys.path[:0] = [request["root"], *request["sources_roots"]]
    loaded = record_loaded_sources()
    refused: list[str] = []
    for name in request["apps"]:
        refused += build_everything(importlib.import_module(name))
    run_nested_imports(request["sources"])
    if "PIL.Image" in sys.modules:
        sys.modules["PIL.Image"].init()
    start_servers(request["servers"])
    files = loaded | {str(m.__file__) for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
    return {"files": sorted(files), "refused": refused}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
