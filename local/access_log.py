"""API Gateway's access log, for the local stack: one line per request in the format of the template's
``AccessLogSetting`` (the audit trail per client that the stage writes to its log group in AWS).

The format's ``$context`` variables are filled in as API Gateway fills them: ``-`` where a request has no value
(no authorizer ran, no integration was called, no WAF is attached). Values are JSON-escaped so that a header
with a quote in it cannot break the line's JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_VARIABLE = re.compile(r"\$context\.([A-Za-z0-9_.]+)")


def access_log_format(template: Mapping[str, Any]) -> str | None:
    """The ``AccessLogSetting.Format`` of the template's REST API, if it has one."""
    for resource in (template.get("Resources") or {}).values():
        if resource.get("Type") == "AWS::Serverless::Api":
            setting = (resource.get("Properties") or {}).get("AccessLogSetting") or {}
            value = setting.get("Format")
            return value if isinstance(value, str) else None
    return None


@dataclass(frozen=True)
class AccessLog:
    """Writes one line a request: ``format`` with its variables replaced by the request's ``values``."""

    format: str
    write: Callable[[str], None]

    def record(self, values: Mapping[str, Any]) -> None:
        self.write(self.line(values))

    def line(self, values: Mapping[str, Any]) -> str:
        return _VARIABLE.sub(lambda match: _value(values.get(match.group(1))), self.format)


def _value(value: Any) -> str:
    if value is None or value == "":
        return "-"
    return json.dumps(str(value))[1:-1]
