"""Shared core of the image service (deployed as a Lambda layer, installed editable for local work)."""

__version__ = "0.1.0"
