"""Shared fixtures of the unit tests: no network at all, a fake Lambda context, real image bytes."""

from __future__ import annotations

import io
import socket

import pytest
from PIL import Image


class NetworkBlocked(RuntimeError):
    """A unit test tried to open a real network connection."""


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests never touch the network: any real socket connection fails loudly."""

    def refuse(self: socket.socket, address: object, *args: object) -> None:
        raise NetworkBlocked(f"unit tests must not open network connections (tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))  # type: ignore[arg-type]


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    """A real, tiny image encoded by Pillow."""
    buffer = io.BytesIO()
    color = (10, 120, 200, 128) if mode == "RGBA" else (10, 120, 200)
    Image.new(mode, size, color=color).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def make_image():
    """``make_image(fmt="PNG", size=(64, 48), mode="RGB")`` -> the bytes of a real image."""
    return image_bytes
