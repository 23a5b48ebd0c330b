"""The upstream simulator: a stand-in for sub2api serving gpt-image-2 (``server``; ``responses``: its
``/v1/responses``), the pictures it draws (``rendering``), and its deployed form (``python -m simulator`` behind
the Lambda Web Adapter)."""

from . import responses  # noqa: F401 - registers POST /v1/responses in the server's routes
from .rendering import declared_size_png, estimate_usage, render_image
from .server import DELAY_HEADER, DELAY_MARKER, SimulatorOptions, UpstreamSimulator, requested_delay_ms

__all__ = [
    "DELAY_HEADER",
    "DELAY_MARKER",
    "SimulatorOptions",
    "UpstreamSimulator",
    "declared_size_png",
    "estimate_usage",
    "render_image",
    "requested_delay_ms",
]
