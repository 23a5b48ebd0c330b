"""The local stack's AWS endpoint: moto's server app (every AWS service the functions use on one endpoint),
behind S3's checks of presigned URLs and POST policies and the bucket's CORS rules, with DynamoDB's calls taken
one at a time."""

from __future__ import annotations

import threading
from typing import Any

# The functions sign with these; the embedded S3 checks presigned URLs and POSTs against them.
LOCAL_CREDENTIALS = ("local", "local")


def aws_app(cors_rules: Any = ()) -> AtomicDynamoDB:
    """moto's server app (every AWS service on one endpoint) behind S3's checks of presigned URLs and POST
    policies, and the bucket's CORS rules."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    from local.s3 import PresignedPostPolicy, PresignedUrlCheck
    from local.s3_cors import BucketCors

    moto = DomainDispatcherApplication(create_backend_app)
    credentials = dict([LOCAL_CREDENTIALS])
    checked = PresignedUrlCheck(PresignedPostPolicy(moto, credentials=credentials), credentials=credentials)
    return AtomicDynamoDB(BucketCors(checked, list(cors_rules)))


class AtomicDynamoDB:
    """One DynamoDB call at a time: moto checks a conditional write (or a transaction's conditions) and applies
    it in separate steps, so two concurrent requests could both pass a condition that DynamoDB lets only one
    pass (the budgets' reservations rely on it). The other services go through as they come.

    ``written`` is set after every DynamoDB write: the stream poller waits on it instead of reading the (empty)
    stream several times a second."""

    WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lock = threading.Lock()
        self.written = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if not target.startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self._lock:
            answer = list(self.app(environ, start_response))
        if target.partition(".")[2] in self.WRITES:
            self.written.set()
        return answer


def aws_request_handler() -> Any:
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    return MotoRequestHandler
