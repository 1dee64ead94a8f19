"""MachineApiMiddleware: the machine endpoints' common case is answered before the browser
middleware, keeping what a caller relies on (request id, security headers, the host check, a
Content-Length), and anything unusual still goes down the whole stack to the DRF view."""

from __future__ import annotations

import pytest
from django.test import Client

from gateway_billing.fastpath import MachineApiMiddleware
from ledger.api import UsageRecordApi
from ratelimits.api import AuthorizeApi
from tests.ledger.conftest import grant

pytestmark = pytest.mark.django_db

ASK = {"model": "gpt-5", "estimated_input_tokens": 10, "max_output_tokens": 10}


@pytest.fixture
def caller(team, key_factory):
    grant(team, 100)
    _, secret = key_factory(team, scopes=["authorize", "usage:write"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


def test_a_fast_answer_keeps_the_request_id_security_headers_and_length(caller):
    response = caller.post(
        "/api/v1/authorize", ASK, content_type="application/json", HTTP_X_REQUEST_ID="gw-1"
    )
    assert response.status_code == 200 and response.json()["allowed"] is True
    assert response["X-Request-Id"] == "gw-1"
    assert response["X-Content-Type-Options"] == "nosniff"  # SecurityMiddleware, above it
    assert int(response["Content-Length"]) == len(response.content)
    # answered above the browser middleware: no session, CSRF or frame-options handling
    assert "X-Frame-Options" not in response and "Vary" not in response


def test_usage_ingest_is_answered_there_too(caller):
    body = {"id": "mw-1", "model": "gpt-5", "usage": {"input_tokens": 10, "output_tokens": 5}}
    response = caller.post("/api/v1/usage", body, content_type="application/json")
    assert response.status_code == 201 and response.json()["state"] == "billed"
    assert "X-Frame-Options" not in response
    assert int(response["Content-Length"]) == len(response.content)


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1:8000@evil"])
def test_a_host_outside_allowed_hosts_is_refused(caller, host):
    response = caller.post(
        "/api/v1/authorize", ASK, content_type="application/json", HTTP_HOST=host
    )
    assert response.status_code == 400


def test_a_declined_request_goes_down_the_whole_stack_to_the_drf_view(client):
    """No key: the DRF view answers in the API's error shape, with the full stack's headers."""
    response = client.post(
        "/api/v1/authorize", ASK, content_type="application/json",
        HTTP_AUTHORIZATION="Bearer gbk_unknown_key",
    )  # fmt: skip
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response["X-Frame-Options"] == "DENY"  # the browser middleware ran


def test_the_key_is_looked_up_once_when_the_fast_path_declines(client, monkeypatch):
    from gateway_billing import fastpath

    calls = []
    real = fastpath.principal_for_key
    monkeypatch.setattr(
        fastpath, "principal_for_key", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    client.post("/api/v1/usage", {}, content_type="application/json",
                HTTP_AUTHORIZATION="Bearer gbk_unknown_key")  # fmt: skip
    assert len(calls) == 1  # by the middleware; the view's own fast path is not retried


def test_the_path_map_routes_only_fast_views_and_stays_bounded():
    middleware = MachineApiMiddleware(lambda request: None)
    assert middleware._view("/api/v1/authorize") is AuthorizeApi
    assert middleware._view("/api/v1/usage") is UsageRecordApi
    assert middleware._view("/api/v1/balance") is None  # not a fast view
    assert middleware._view("/api/v1/authorize/r-1/release") is None  # takes an argument
    for n in range(MachineApiMiddleware.MAX_PATHS + 50):
        middleware._view(f"/api/v1/nowhere/{n}")
    assert len(middleware._views) == MachineApiMiddleware.MAX_PATHS
