"""The AWS clients of the core, made from one botocore session per execution environment.

botocore, not boto3: the core calls the low-level APIs only (no managed transfers, no resource objects on the
request path), and boto3's default session costs a cold start its own import, its handlers and, at the first S3
client, s3transfer. One session shares the service models and credentials it loads between every client made
from it. Only the tasks table (``TaskStore``) uses a boto3 resource, made when a task is first touched.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import botocore.session


@cache
def session() -> botocore.session.Session:
    return botocore.session.get_session()


def client(service: str, **options: Any) -> Any:
    """A low-level client, as ``boto3.client(service, **options)`` would make it (region, endpoint, config)."""
    return session().create_client(service, **options)


def resource(service: str, **options: Any) -> Any:
    """A boto3 resource over the same session (the one place boto3 is imported, when first asked)."""
    return _boto3_session(session()).resource(service, **options)


@cache
def _boto3_session(core: botocore.session.Session) -> Any:
    import boto3

    # One boto3 session per botocore session: each registers boto3's handlers on it, which must happen once.
    return boto3.Session(botocore_session=core)
