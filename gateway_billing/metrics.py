"""Prometheus metrics and the protected `GET /metrics` endpoint (text exposition format).

Counted where they happen, in memory-mapped files shared by every process of the machine
(prometheus_client's multiprocess mode, on when PROMETHEUS_MULTIPROC_DIR is set, as
scripts/serve.sh does for gunicorn, the Celery worker and beat): an increment is a write to a
mapped page, no system call and no network round trip, so the ingest and authorize paths pay
about a microsecond. Without the variable (make run, tests) they live in the process.

- `gateway_billing_usage_events_total{outcome}`: events received, by outcome (billed,
  not_billed, unrated, replayed, rejected)
- `gateway_billing_authorize_seconds`: authorize latency in the view (key lookup included)
- `gateway_billing_authorize_decisions_total{decision}`: allowed, or the refusal's error code
- `gateway_billing_celery_task_failures_total{task}`: tasks that raised
- read from the database at each scrape (cheap counts on partial indexes):
  `gateway_billing_webhook_outbox_pending`, `gateway_billing_webhook_deliveries{state}`,
  `gateway_billing_stripe_events{status}`
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

# A process that starts before scripts/serve.sh made the directory must not fail to import.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

USAGE_EVENTS = Counter(
    "gateway_billing_usage_events", "Usage events received, by outcome", ["outcome"]
)
AUTHORIZE_SECONDS = Histogram(
    "gateway_billing_authorize_seconds",
    "Time to answer POST /api/v1/authorize, key lookup included",
    buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
AUTHORIZE_DECISIONS = Counter(
    "gateway_billing_authorize_decisions",
    "Authorize answers: allowed, or the error code of the refusal",
    ["decision"],
)
TASK_FAILURES = Counter(
    "gateway_billing_celery_task_failures", "Celery tasks that raised, by task", ["task"]
)


# ---- recording (hot path: no I/O) ------------------------------------------------------------


def usage_results_count(results: Iterable[Any]) -> None:
    """Count a request's event results (ledger.services.usage.EventResult) by outcome."""
    tally: Tally[str] = Tally()
    for r in results:
        tally["rejected" if r.error else "replayed" if r.replayed else r.state] += 1
    for outcome, n in tally.items():
        USAGE_EVENTS.labels(outcome).inc(n)


def authorize_observe(response: Any, seconds: float) -> None:
    decision = "allowed"
    if response is None:
        decision = "server_error"
    elif response.status_code != 200:
        decision = getattr(response, "error_code", None)  # the fast path's answers carry it
        if decision is None:  # DRF's Response
            data = getattr(response, "data", None)
            error = data.get("error") if isinstance(data, dict) else None
            decision = error.get("code") if isinstance(error, dict) else str(response.status_code)
    AUTHORIZE_SECONDS.observe(seconds)
    AUTHORIZE_DECISIONS.labels(decision).inc()


def task_failed(sender: Any = None, **_: Any) -> None:
    """Celery's task_failure signal."""
    TASK_FAILURES.labels(getattr(sender, "name", None) or "unknown").inc()


# ---- the backlog, read at scrape time ----------------------------------------------------------


class BacklogCollector:
    """Webhook and Stripe event backlogs, counted in the database when scraped."""

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "gateway_billing_webhook_outbox_pending",
                "Outbox events (team webhooks) not yet dispatched",
            ),
            GaugeMetricFamily(
                "gateway_billing_webhook_deliveries",
                "Webhook delivery attempts waiting: scheduled (due: of those, due now), sending",
                labels=["state"],
            ),
            GaugeMetricFamily(
                "gateway_billing_stripe_events",
                "Stripe events stored but not processed: received, failed (retried)",
                labels=["status"],
            ),
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from accounts.models import DeliveryState, OutboxEvent, WebhookDelivery
        from ledger.models import StripeEvent, StripeEventStatus

        outbox, deliveries, stripe = self._families()
        outbox.add_metric([], OutboxEvent.objects.filter(dispatched_at__isnull=True).count())
        scheduled = WebhookDelivery.objects.filter(state=DeliveryState.SCHEDULED)
        deliveries.add_metric(["scheduled"], scheduled.count())
        deliveries.add_metric(
            ["due"], scheduled.filter(next_attempt_at__lte=timezone.now()).count()
        )
        sending = WebhookDelivery.objects.filter(state=DeliveryState.SENDING).count()
        deliveries.add_metric(["sending"], sending)
        for status in (StripeEventStatus.RECEIVED, StripeEventStatus.FAILED):
            stripe.add_metric([status.value], StripeEvent.objects.filter(status=status).count())
        yield from (outbox, deliveries, stripe)


# ---- GET /metrics ------------------------------------------------------------------------------


def _allowed(request: HttpRequest) -> HttpResponse | None:
    """None when the caller may scrape, else the refusal."""
    token: str = settings.METRICS_TOKEN
    networks: list[str] = settings.METRICS_ALLOWED_IPS
    if not token and not networks:
        return HttpResponse("Not found.\n", status=404, content_type="text/plain")
    header = request.headers.get("Authorization", "")
    given = header.removeprefix("Bearer ").encode() if header.startswith("Bearer ") else b""
    if token and given and hmac.compare_digest(given, token.encode()):
        return None
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        address = None
    if address is not None and any(
        address in ipaddress.ip_network(net, strict=False) for net in networks
    ):
        return None
    response = HttpResponse("Send the metrics token.\n", status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def exposition() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes)
    else:
        processes = REGISTRY
    backlog = CollectorRegistry()
    backlog.register(BacklogCollector())
    return generate_latest(processes) + generate_latest(backlog)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    refusal = _allowed(request)
    if refusal is not None:
        return refusal
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
