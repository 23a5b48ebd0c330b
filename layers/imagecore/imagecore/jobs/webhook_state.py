"""How a task's webhook delivery stands, as the task record keeps it (the map attribute ``webhook``) and as its
view shows it: ``{"status": "pending" | "delivered" | "failed", "attempts": N, "last_status": <HTTP status or
error> | null}``. ``claim`` (the queue message that holds the current attempt) stays in the record."""

from __future__ import annotations

from typing import Any, Literal

WebhookStatus = Literal["pending", "delivered", "failed"]


def new_webhook_state() -> dict[str, Any]:
    return {"status": "pending", "attempts": 0}


def webhook_state(stored: Any) -> dict[str, Any] | None:
    """The record's map with DynamoDB's numbers made ints again (None when the task has no webhook)."""
    if not isinstance(stored, dict):
        return None
    state = dict(stored)
    state["attempts"] = int(state.get("attempts") or 0)
    last = state.get("last_status")
    if last is not None and not isinstance(last, str):
        state["last_status"] = int(last)
    return state


def webhook_view(state: dict[str, Any] | None) -> dict[str, Any]:
    state = state or new_webhook_state()
    return {
        "status": state.get("status", "pending"),
        "attempts": int(state.get("attempts") or 0),
        "last_status": state.get("last_status"),
    }
