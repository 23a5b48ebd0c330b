"""The cyclic garbage collector during a cold start.

A cold start imports some 650 modules and builds the function's clients (botocore's S3 model, an SSL context):
about 130,000 objects, nearly all of which live as long as the execution environment. The collector, which
runs every 700 allocations, walks them again and again while they are made and finds next to nothing to free
(some 700 objects): measured on the generations function, 40 to 60 ms of CPU, a sixth of its cold start.

So an image function pauses the collector while its module is imported (``gc.disable()`` first thing, then
``settle("import")`` at the end of the module) and while it builds its runtime (``paused("runtime")``).
Settling freezes what exists (``gc.freeze``: later collections leave those objects alone for good, so they are
not walked on every request either) and turns the collector back on: garbage made while serving requests is
collected as always. The price is the little cyclic garbage of the cold start, kept for the environment's life.

Each stage freezes once per process: a runtime built again (tests do, never Lambda) is not a cold start, and
freezing then would keep whatever garbage the process had made by that time.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_frozen: set[str] = set()


def settle(stage: str) -> None:
    """What ``stage`` made is made: leave it out of every later collection (the first time), collect from now on."""
    if stage not in _frozen:
        _frozen.add(stage)
        gc.freeze()
    gc.enable()


@contextmanager
def paused(stage: str) -> Iterator[None]:
    """No collection while ``stage`` builds what lives as long as the environment; settled after, whatever
    happens."""
    gc.disable()
    try:
        yield
    finally:
        settle(stage)
