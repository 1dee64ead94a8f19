"""Real Celery workers (subprocesses, not eager) on a Redis broker db of their own and the test
database: the cycle renewal, a webhook delivery, and the outbox surviving a killed worker."""

from __future__ import annotations

import time

import pytest
from django.db import transaction

from accounts.models import DeliveryState, OutboxEvent, Subscription, WebhookDelivery
from accounts.services import webhook_endpoint_create, webhook_event_emit
from accounts.tasks import dispatch_outbox
from ledger.models import EntryKind, LedgerEntry
from ledger.services.credits import plan_grant_reference
from ledger.tasks import renew_cycles
from pricing.money import NANO

from .conftest import rewind_cycle, wait_for
from .receiver import verify_webhook

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]

DATA = {"balance": "0.000000000"}


@pytest.fixture
def endpoint(team, owner, httpserver_ipv4):
    httpserver_ipv4.expect_request("/hook", method="POST").respond_with_data("thanks")
    return webhook_endpoint_create(
        team=team,
        url=httpserver_ipv4.url_for("/hook"),
        event_types=["balance.depleted"],
        actor=owner.user,
    )


def test_a_worker_renews_a_cycle_the_beat_job_found(team, celery_workers):
    old_end = rewind_cycle(team).current_cycle_end
    celery_workers()
    renew_cycles.delay()  # what beat sends
    wait_for(
        lambda: Subscription.objects.get(team=team).current_cycle_start == old_end,
        what="the renewal",
    )
    grant = wait_for(
        lambda: LedgerEntry.objects.filter(reference=plan_grant_reference(team.id, old_end)).first()
    )
    assert grant.amount_nano == 5000 * NANO
    assert LedgerEntry.objects.filter(team=team, kind=EntryKind.PLAN_EXPIRY).count() == 1


def test_a_worker_delivers_a_signed_webhook(team, endpoint, httpserver_ipv4, celery_workers):
    celery_workers()
    with transaction.atomic():
        event = webhook_event_emit(team_id=team.id, type="balance.depleted", data=DATA)
    # After commit the dispatch task went to the broker; the worker dispatches and delivers.
    delivery = wait_for(
        lambda: WebhookDelivery.objects.filter(event=event, state=DeliveryState.DELIVERED).first(),
        what="the delivery",
    )
    assert delivery.status_code == 200 and delivery.response_excerpt == "thanks"
    ((request, _),) = httpserver_ipv4.log
    assert request.headers["Webhook-Id"] == event.event_id
    assert verify_webhook(endpoint.secret, request.headers, request.get_data())


def test_the_outbox_survives_a_worker_killed_before_delivery(
    team, endpoint, httpserver_ipv4, broker, celery_workers
):
    first = celery_workers()
    first.pause()  # it cannot take the dispatch message any more
    with transaction.atomic():
        event = webhook_event_emit(team_id=team.id, type="balance.depleted", data=DATA)
    time.sleep(0.3)
    first.kill9()  # kill -9: no warm shutdown, nothing acknowledged or restored
    # The dispatch message died with the worker (or waits an hour for the visibility timeout
    # in the unacked set): make certain it is gone, so only the outbox can bring it back.
    broker.delete("celery")
    assert OutboxEvent.objects.get(pk=event.pk).dispatched_at is None
    assert httpserver_ipv4.log == []

    celery_workers()
    dispatch_outbox.delay()  # the next beat tick
    delivery = wait_for(
        lambda: WebhookDelivery.objects.filter(event=event, state=DeliveryState.DELIVERED).first(),
        what="the delivery after the restart",
    )
    dispatch_outbox.delay()  # another tick: nothing more to do
    wait_for(lambda: broker.llen("celery") == 0, what="the queue to drain")
    time.sleep(0.5)
    assert len(httpserver_ipv4.log) == 1  # delivered once
    assert WebhookDelivery.objects.filter(event=event).count() == 1
    assert delivery.attempt == 1


def test_a_worker_delivers_the_usage_alerts_of_real_ingest(
    team, owner, key_client, httpserver_ipv4, celery_workers
):
    httpserver_ipv4.expect_request("/alerts", method="POST").respond_with_data("ok")
    hook = webhook_endpoint_create(
        team=team, url=httpserver_ipv4.url_for("/alerts"),
        event_types=["usage.threshold_reached"], actor=owner.user,
    )  # fmt: skip
    celery_workers()
    # 400,000 output tokens of Opus = 30 USD = 5,400 credits: past 50, 75 and 100 % of 5,000
    usage = {
        "id": "big",
        "model": "claude-opus-4-1-20250805",
        "usage": {"input_tokens": 0, "output_tokens": 400_000},
    }
    assert key_client(team).post("/api/v1/usage", usage, format="json").status_code == 201
    wait_for(lambda: len(httpserver_ipv4.log) >= 3 or None, what="three alert deliveries")
    time.sleep(0.5)  # nothing more arrives: each threshold fired once
    bodies = []
    for request, _ in httpserver_ipv4.log:
        assert verify_webhook(hook.secret, request.headers, request.get_data())
        bodies.append(request.get_json())
    assert sorted(b["data"]["percent"] for b in bodies) == [50, 75, 100]
    assert {b["type"] for b in bodies} == {"usage.threshold_reached"}
