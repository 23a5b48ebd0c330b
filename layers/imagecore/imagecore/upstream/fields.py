"""The fields of an upstream answer besides its images, normalised: each one usable or absent (text fields of sane
length, token counts, a plausible created time)."""

from __future__ import annotations

from typing import Any

# --- odd metadata ---------------------------------------------------------------------------------------------------
# A paid image is never lost to the fields around it: each one is kept when it has the type and range the API
# documents, and dropped (the service then uses what it asked for or what the image bytes say) otherwise.
_TEXT_FIELDS = ("model", "size", "quality", "output_format", "background")


_MAX_TEXT = 200


_MAX_TOKENS = 10**12


_LATEST_CREATED = 253_402_300_799  # 9999-12-31T23:59:59Z


def normalise_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The answer's small fields, each either usable as documented or left out; ``data`` is kept as it is."""
    fields: dict[str, Any] = {"data": body.get("data")}
    created = _timestamp(body.get("created"))
    if created is not None:
        fields["created"] = created
    for name in _TEXT_FIELDS:
        value = body.get(name)
        if isinstance(value, str) and 0 < len(value) <= _MAX_TEXT:
            fields[name] = value
    usage = normalise_usage(body.get("usage"))
    if usage is not None:
        fields["usage"] = usage
    if body.get("error") is not None:
        fields["error"] = body["error"]
    return fields


def normalise_usage(value: Any) -> dict[str, Any] | None:
    """Token counts that are whole non-negative numbers (nested ``*_details`` too); anything else is dropped."""
    if not isinstance(value, dict):
        return None
    usage: dict[str, Any] = {}
    for key, count in value.items():
        if not isinstance(key, str) or len(key) > _MAX_TEXT:
            continue
        if isinstance(count, dict):
            details = {k: v for k, v in count.items() if isinstance(k, str) and _token_count(v)}
            if details:
                usage[key] = details
        elif _token_count(count):
            usage[key] = count
    return usage or None


def _token_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_TOKENS


def _timestamp(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.isdigit() and len(value) <= 12:
        value = int(value)
    return value if isinstance(value, int) and 0 < value <= _LATEST_CREATED else None
