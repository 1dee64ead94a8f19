"""Production shape: request ids, JSON log lines, and the Prometheus endpoint."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from accounts.models import DeliveryState, OutboxEvent, WebhookDelivery
from gateway_billing import logs, metrics
from gateway_billing.celery import app as celery_app
from ledger.models import StripeEvent

ROOT = Path(__file__).resolve().parents[2]
GENERATED = re.compile(r"[0-9a-f]{32}")


# ---- request ids ---------------------------------------------------------------------------


def test_a_sane_client_request_id_is_kept_and_returned(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="gw-7f3a:req_42")
    assert response["X-Request-ID"] == "gw-7f3a:req_42"


@pytest.mark.parametrize(
    "sent", ["has spaces", "x" * 129, 'quote"d', "<script>", "-leading-dash", "ünïcode", ""]
)
def test_an_insane_request_id_is_replaced(client, sent):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=sent)
    assert GENERATED.fullmatch(response["X-Request-ID"])


def test_without_a_header_each_request_gets_its_own_id(client):
    first, second = client.get("/healthz"), client.get("/healthz")
    assert GENERATED.fullmatch(first["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


def test_api_errors_carry_the_request_id_too(client):
    response = client.get("/api/v1/balance", HTTP_X_REQUEST_ID="req-401")
    assert response.status_code == 401
    assert response["X-Request-ID"] == "req-401"


@contextmanager
def captured(logger_name: str) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """The logger's lines as the production handler writes them (filter + JSON formatter)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RequestIdFilter())
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(logger_name)
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.level, logger.propagate = saved


def test_a_log_line_inside_the_view_carries_the_request_id():
    with captured("tests.request_id") as (logger, stream):

        def view(request):
            logger.info("inside %s", "the view", extra={"team_id": 7})
            return HttpResponse("ok")

        try:
            response = logs.RequestIdMiddleware(view)(
                RequestFactory().get("/x", HTTP_X_REQUEST_ID="abc-1")
            )
        finally:
            logs.request_done()
    doc = json.loads(stream.getvalue())
    assert response["X-Request-ID"] == "abc-1"
    assert doc["request_id"] == "abc-1"
    assert doc["message"] == "inside the view" and doc["team_id"] == 7


def test_djangos_own_line_for_an_error_response_carries_the_id_and_later_lines_none(client):
    """django.request logs a 4xx after the middleware chain returned; the id lasts until the
    response is closed (request_finished)."""
    with captured("django.request") as (logger, stream):
        client.get("/api/v1/balance", HTTP_X_REQUEST_ID="req-77")
        logger.warning("after the request")
    during, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert during["message"] == "Unauthorized: /api/v1/balance"
    assert during["request_id"] == "req-77" and during["status_code"] == 401
    assert after["request_id"] is None


def test_a_json_line_has_the_fields_extras_and_the_exception():
    with captured("tests.json") as (logger, stream):
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed for %s", "acme", extra={"amount": "1.5", "ids": [1, 2]})
    (line,) = stream.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["level"] == "ERROR"
    assert doc["logger"] == "tests.json"
    assert doc["message"] == "failed for acme"
    assert doc["amount"] == "1.5" and doc["ids"] == [1, 2]
    assert "ValueError: boom" in doc["exc"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", doc["time"])


def test_a_celery_task_logs_under_its_task_id():
    with captured("tests.task") as (logger, stream):

        @celery_app.task(name="tests.observability.log_something")
        def log_something():
            logger.info("in a task")

        log_something.apply(task_id="t-123")
    assert json.loads(stream.getvalue())["request_id"] == "task:t-123"
    assert logs.current_request_id() is None


def _log_from_a_fresh_process(debug: str) -> str:
    code = (
        "import django, logging; django.setup(); "
        "logging.getLogger('probe').warning('hello %s', 'world', extra={'team_id': 7})"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"LOG_FORMAT", "DJANGO_SETTINGS_MODULE"}}
    env.update(DJANGO_SETTINGS_MODULE="gateway_billing.settings.main", DEBUG=debug,
               SECRET_KEY="x", DATABASE_URL="sqlite:///:memory:")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    return done.stderr.strip().splitlines()[-1]


def test_production_settings_log_one_json_object_per_line():
    doc = json.loads(_log_from_a_fresh_process("false"))
    assert doc["message"] == "hello world"
    assert doc["level"] == "WARNING" and doc["logger"] == "probe" and doc["team_id"] == 7
    assert "request_id" in doc and "time" in doc


def test_development_logs_are_plain_text():
    line = _log_from_a_fresh_process("true")
    assert "WARNING probe" in line and "hello world" in line
    assert not line.startswith("{")


# ---- /metrics --------------------------------------------------------------------------------


def _samples(body: bytes) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return _samples(response.content)


@pytest.fixture
def scrape_token(settings):
    settings.METRICS_TOKEN = "scrape-me"
    settings.METRICS_ALLOWED_IPS = []


@pytest.mark.django_db
def test_metrics_are_off_without_a_token_or_allowed_addresses(client, settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS = "", []
    assert client.get("/metrics").status_code == 404


@pytest.mark.django_db
def test_metrics_need_the_token(client, scrape_token):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="scrape-me").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me").status_code == 200
    assert client.post("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me").status_code == 405


@pytest.mark.django_db
def test_metrics_from_an_allowed_network(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    assert client.get("/metrics").status_code == 401  # the test client is 127.0.0.1
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1"]
    assert client.get("/metrics").status_code == 200


EVENT = {"model": "gpt-5", "usage": {"input_tokens": 1000, "output_tokens": 10}}


def _value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.django_db
def test_ingest_is_counted_by_outcome(client, scrape_token, team, key_client):
    api = key_client(team)
    before = _scrape(client)
    assert api.post("/api/v1/usage", {"id": "m-1", **EVENT}, format="json").status_code == 201
    assert api.post("/api/v1/usage", {"id": "m-1", **EVENT}, format="json").status_code == 200
    batch = {"events": [{"id": "m-2", **EVENT}, {"id": "m-3", **EVENT, "status": 503},
                        {"id": "m-4", "model": "gpt-5", "usage": {"input_tokens": -1}}]}  # fmt: skip
    assert api.post("/api/v1/usage/batch", batch, format="json").status_code == 200
    after = _scrape(client)
    name = "gateway_billing_usage_events_total"
    for outcome, added in {"billed": 2, "replayed": 1, "not_billed": 1, "rejected": 1}.items():
        delta = _value(after, name, outcome=outcome) - _value(before, name, outcome=outcome)
        assert delta == added, outcome


@pytest.mark.django_db
def test_authorize_latency_and_decisions_are_recorded(client, scrape_token, team, key_client):
    api = key_client(team)
    before = _scrape(client)
    body = {"model": "gpt-5", "estimated_input_tokens": 10, "max_output_tokens": 10}
    assert api.post("/api/v1/authorize", body, format="json").status_code == 200
    unknown = {**body, "model": "no-such-model"}
    assert api.post("/api/v1/authorize", unknown, format="json").status_code == 422
    assert APIClient().post("/api/v1/authorize", body, format="json").status_code == 401
    after = _scrape(client)
    count = "gateway_billing_authorize_seconds_count"
    assert _value(after, count) - _value(before, count) == 3
    decisions = "gateway_billing_authorize_decisions_total"
    for decision in ("allowed", "unknown_model", "unauthenticated"):
        assert (
            _value(after, decisions, decision=decision)
            - _value(before, decisions, decision=decision)
            == 1
        ), decision
    assert _value(after, "gateway_billing_authorize_seconds_sum") > _value(
        before, "gateway_billing_authorize_seconds_sum"
    )


@pytest.mark.django_db
def test_a_failing_celery_task_is_counted(client, scrape_token):
    @celery_app.task(name="tests.observability.boom")
    def boom():
        raise ValueError("boom")

    before = _scrape(client)
    result = boom.apply(throw=False)
    assert result.failed()
    after = _scrape(client)
    name = "gateway_billing_celery_task_failures_total"
    task = "tests.observability.boom"
    assert _value(after, name, task=task) - _value(before, name, task=task) == 1


@pytest.mark.django_db
def test_the_webhook_and_stripe_backlogs_are_read_at_scrape_time(client, scrape_token, team):
    from accounts.services.webhooks import webhook_endpoint_create

    now = timezone.now()
    endpoint = webhook_endpoint_create(
        team=team, url="https://hooks.example.com/x", event_types=["balance.low"],
        actor=team.memberships.get().user,
    )  # fmt: skip
    pending = OutboxEvent.objects.create(team=team, event_id="evt_1", type="balance.low",
                                         payload={})  # fmt: skip
    sent = OutboxEvent.objects.create(team=team, event_id="evt_2", type="balance.low",
                                      payload={}, dispatched_at=now)  # fmt: skip
    for attempt, (state, due) in enumerate(
        [(DeliveryState.SCHEDULED, now), (DeliveryState.SCHEDULED, now + timezone.timedelta(hours=1)),
         (DeliveryState.SENDING, None), (DeliveryState.DELIVERED, None)], start=1,
    ):  # fmt: skip
        WebhookDelivery.objects.create(endpoint=endpoint, event=sent, attempt=attempt,
                                       state=state, next_attempt_at=due)  # fmt: skip
    for n, status in enumerate(["received", "failed", "failed", "processed"]):
        StripeEvent.objects.create(event_id=f"evt_s{n}", type="x", payload={}, status=status)
    samples = _scrape(client)
    assert pending.dispatched_at is None
    assert _value(samples, "gateway_billing_webhook_outbox_pending") == 1
    deliveries = "gateway_billing_webhook_deliveries"
    assert _value(samples, deliveries, state="scheduled") == 2
    assert _value(samples, deliveries, state="due") == 1
    assert _value(samples, deliveries, state="sending") == 1
    assert _value(samples, "gateway_billing_stripe_events", status="received") == 1
    assert _value(samples, "gateway_billing_stripe_events", status="failed") == 2


@pytest.mark.django_db
def test_counters_are_shared_across_processes(tmp_path, monkeypatch):
    """What gunicorn workers and Celery processes count, one scrape shows summed (the
    multiprocess mode scripts/serve.sh turns on)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
           "DJANGO_SETTINGS_MODULE": "gateway_billing.settings.test"}  # fmt: skip
    code = (
        "import django; django.setup(); from gateway_billing import metrics; "
        "metrics.USAGE_EVENTS.labels('billed').inc(3); metrics.AUTHORIZE_SECONDS.observe(0.004)"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    samples = _samples(metrics.exposition())
    assert _value(samples, "gateway_billing_usage_events_total", outcome="billed") == 6
    assert _value(samples, "gateway_billing_authorize_seconds_count") == 2
    assert _value(samples, "gateway_billing_webhook_outbox_pending") == 0
