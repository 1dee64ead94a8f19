"""Helpers of the team money page tests: usage posted through the real API, logged-in clients."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from django.test import Client

ROLES = ["owner", "admin", "finance", "member"]
PERSONA_FIXTURE = {"owner": "owner", "admin": "admin_member", "finance": "finance",
                   "member": "member"}  # fmt: skip


def event(event_id: str, *, model: str = "gpt-5", at: datetime | None = None,
          input_tokens: int = 1000, output_tokens: int = 500, **extra) -> dict:  # fmt: skip
    body = {"id": event_id, "model": model,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}, **extra}  # fmt: skip
    if at is not None:
        body["timestamp"] = at.isoformat()
    return body


def post_usage(api, events: Iterable[dict]) -> list[dict]:
    """Post events through the usage API; every one must be billed. Returns the results."""
    events = list(events)
    results = []
    for i in range(0, len(events), 1000):
        response = api.post("/api/v1/usage/batch", {"events": events[i : i + 1000]}, format="json")
        assert response.status_code == 200, response.content
        results += response.json()["results"]
    assert all(r["status"] == 201 and r["state"] == "billed" for r in results), results
    return results


def credits_of(results: Iterable[dict]) -> Decimal:
    return sum((Decimal(r["credits"]) for r in results), Decimal(0))


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client
