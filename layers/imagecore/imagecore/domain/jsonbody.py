"""Reading a JSON request body strictly, so that every odd body is a 400 naming what is wrong.

Python's ``json`` is lenient where it hurts a service: it takes ``NaN`` and ``Infinity``, keeps the last of two
equal keys (so a proxy and this service may read different requests from the same bytes), turns a 5000-digit
number into a ``ValueError`` and a deeply nested document into a ``RecursionError``, and decodes ``"\\ud800"``
into a string no encoder will write back. Each of those is refused here, before any model sees the body.
"""

from __future__ import annotations

import json
import math
from typing import Any

from imagecore.domain.errors import InvalidRequest

# No number this API takes has more digits than this (the largest is an upload's size in bytes).
MAX_NUMBER_CHARS = 32
# The deepest body this API takes is three levels (body -> images -> {upload_id}).
MAX_DEPTH = 16
_HINT = "Send a JSON object with Content-Type: application/json."


class NotJson(InvalidRequest):
    """The text is not JSON at all (as opposed to JSON this service does not take)."""

    code = "invalid_json"


class _Refused(ValueError):
    """Raised from inside the parser's hooks; carries the client-facing reason."""

    def __init__(self, reason: str, param: str | None = None, code: str = "invalid_json") -> None:
        super().__init__(reason)
        self.reason = reason
        self.param = param
        self.code = code


def _no_constants(name: str) -> Any:
    raise _Refused(f"The request body is not valid JSON: {name} is not a JSON number.")


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"The request body has a number of {len(text):,} digits; numbers here have at most 32.")
    return int(text)


def _finite_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"The request body has a number of {len(text):,} characters; numbers here have at most 32.")
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"The request body has a number out of range ({text[:20]}).")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(
                f"The request body names '{key[:64]}' twice; send each parameter once.",
                param=key[:64],
                code="duplicate_parameter",
            )
        result[key] = value
    return result


def parse_json_body(body: str | bytes | bytearray) -> Any:
    """The body as JSON, or an ``InvalidRequest`` (400) saying why it is not acceptable JSON."""
    if isinstance(body, bytes | bytearray):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"The request body is not UTF-8 text. {_HINT}", code="invalid_json") from None
    else:
        text = body
    try:
        value = json.loads(
            text,
            parse_constant=_no_constants,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except _Refused as refused:
        raise InvalidRequest(refused.reason, param=refused.param, code=refused.code) from None
    except RecursionError:
        raise InvalidRequest(f"The request body is nested too deeply. {_HINT}", code="invalid_json") from None
    except ValueError:  # json.JSONDecodeError among them
        raise NotJson(f"The request body is not valid JSON. {_HINT}") from None
    _check_tree(value)
    return value


def _check_tree(value: Any) -> None:
    """Depth and strings, walked without recursion (the parser's own limit stops near 1000 levels)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if not node.isascii():
                _whole_characters(node)
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise InvalidRequest(
                f"The request body is nested more than {MAX_DEPTH} levels deep. {_HINT}", code="invalid_json"
            )
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children)


def _whole_characters(text: str) -> None:
    try:
        # "\ud800" escapes decode to lone surrogates: valid JSON text, but no UTF-8 store or upstream takes it.
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            "The request body has a \\u escape that is not a whole Unicode character (a lone surrogate).",
            code="invalid_json",
        ) from None
