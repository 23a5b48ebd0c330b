"""The AWS clients of the core, made from one boto3 session per execution environment.

One session shares the service models, the credentials and the event hooks it loads between every client made
from it (each client still keeps its own connection pool). Everything here is boto3's and botocore's public API:
the layer ships the boto3/botocore that ``uv.lock`` pins, so what runs in Lambda is what the tests ran.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any

import boto3
import botocore.session


@cache
def session() -> botocore.session.Session:
    """The execution environment's botocore session (what boto3's session below is built on)."""
    return botocore.session.get_session()


@lru_cache(maxsize=1)
def _boto3_session(core: botocore.session.Session) -> boto3.Session:
    # One boto3 session per botocore session: each registers boto3's handlers on it, which must happen once. Only
    # the latest is kept: a botocore session made anew (as tests do, to read other credentials) replaces the old
    # one, which is then freed with every service model it loaded (each a few MB of parsed JSON).
    return boto3.Session(botocore_session=core)


def client(service: str, **options: Any) -> Any:
    """A low-level client, as ``boto3.client(service, **options)`` would make it (region, endpoint, config)."""
    return _boto3_session(session()).client(service, **options)  # type: ignore[call-overload]


def resource(service: str, **options: Any) -> Any:
    """A boto3 resource over the same session."""
    return _boto3_session(session()).resource(service, **options)  # type: ignore[call-overload]
