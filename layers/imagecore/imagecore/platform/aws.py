"""The AWS clients of the core, made from one botocore session per execution environment.

botocore, not boto3: the core calls the low-level APIs only (no managed transfers, no resource objects on the
request path), and boto3's default session costs a cold start its own import, its handlers and, at the first S3
client, s3transfer. One session shares the service models and credentials it loads between every client made
from it. Only the tasks table (``TaskStore``) uses a boto3 resource, made when a task is first touched.

The session's data loader is botocore's own, except for two things that cost every cold start its time:
- To know whether a service has a model, botocore lists every service directory it ships (some 420, each listed
  again for its API versions), once for the service model and once for its endpoint rules: about 20 ms of the
  first client. Here it looks in the one service's directory (a name that is no service still gets botocore's
  error, which lists them all).
- Its JSON files (the endpoints file alone is 1.2 MB) are parsed into plain dicts, which keep their order as
  botocore's ``OrderedDict`` did, at half the cost.
"""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any

import botocore.session
from botocore.exceptions import DataNotFoundError
from botocore.loaders import ExtrasProcessor, JSONFileLoader, Loader, instance_cache


class _PlainJSONFileLoader(JSONFileLoader):
    """botocore's model files, parsed into plain (ordered) dicts rather than ``OrderedDict``s."""

    def _load_file(self, full_path: str, open_method: Any) -> Any:
        if not os.path.isfile(full_path):
            return None
        with open_method(full_path, "rb") as fp:
            return json.loads(fp.read().decode("utf-8"))


class ServiceModelLoader(Loader):
    """botocore's ``Loader``, finding a service's model from that service's directory alone."""

    def __init__(self, extra_search_paths: list[str] | None = None) -> None:
        super().__init__(extra_search_paths=extra_search_paths, file_loader=_PlainJSONFileLoader())

    @instance_cache
    def load_service_model(self, service_name: str, type_name: str, api_version: str | None = None) -> Any:
        try:
            version = api_version or self.determine_latest_version(service_name, type_name)
        except DataNotFoundError:
            # Not a service: botocore lists every one and says so (UnknownServiceError naming them).
            return super().load_service_model(service_name, type_name, api_version)
        return self._load(service_name, type_name, version)

    def _load(self, service_name: str, type_name: str, version: str) -> Any:
        """As botocore loads a model: its file, then each of its extras files present (``*.sdk-extras``)."""
        model = self.load_data(os.path.join(service_name, version, type_name))
        extras = []
        for extras_type in self.extras_types:
            try:
                extras.append(self.load_data(os.path.join(service_name, version, f"{type_name}.{extras_type}-extras")))
            except DataNotFoundError:
                continue
        _EXTRAS.process(model, extras)
        return model


_EXTRAS = ExtrasProcessor()


@cache
def session() -> botocore.session.Session:
    core = botocore.session.get_session()
    # AWS_DATA_PATH, as botocore's create_loader reads it.
    data_path = core.get_config_variable("data_path")
    extra = [os.path.expanduser(os.path.expandvars(p)) for p in data_path.split(os.pathsep)] if data_path else None
    core.register_component("data_loader", ServiceModelLoader(extra_search_paths=extra))
    return core


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
