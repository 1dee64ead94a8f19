"""Outbound webhooks: the outbox (written in the caller's transaction, never lost), signed
delivery, retries with backoff on a controllable clock, disabling, idempotency, the pages."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import orjson
import pytest
from django.core import mail
from django.db import transaction
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from werkzeug import Response

from accounts import tasks
from accounts.models import (
    AuditEntry,
    DeliveryState,
    OutboxEvent,
    WebhookDelivery,
    WebhookEndpoint,
)
from accounts.services import (
    price_change_publish,
    webhook_delivery_resend,
    webhook_endpoint_create,
    webhook_endpoint_update,
    webhook_event_emit,
)
from accounts.services.webhooks import (
    BACKOFF,
    MAX_ATTEMPTS,
    delivery_due_ids,
    event_body,
    outbox_event_dispatch,
    outbox_pump,
    webhook_delivery_attempt,
    webhook_sign,
)
from gateway_billing.errors import ApplicationError
from pricing.money import format_usd

from .receiver import verify_webhook

pytestmark = pytest.mark.django_db

DATA = {"balance": "12.500000000", "threshold": "25.000000000"}


@pytest.fixture
def receiver(httpserver_ipv4):
    return httpserver_ipv4


@pytest.fixture
def endpoint(team, owner, receiver) -> WebhookEndpoint:
    return webhook_endpoint_create(
        team=team,
        url=receiver.url_for("/hook"),
        event_types=["balance.low", "price.changed"],
        actor=owner.user,
    )


def answer(receiver, *statuses: int) -> list:
    """The receiver answers these statuses in turn (the last one from then on)."""
    seen: list = []

    def handler(request):
        seen.append(request)
        status = statuses[min(len(seen), len(statuses)) - 1]
        return Response(f"status {status}", status=status)

    receiver.expect_request("/hook", method="POST").respond_with_handler(handler)
    return seen


def emit(team, type_: str = "balance.low", data: dict | None = None) -> OutboxEvent:
    with transaction.atomic():
        return webhook_event_emit(team_id=team.id, type=type_, data=data or DATA)


# ---- the outbox ----------------------------------------------------------------------------


def test_an_event_is_written_in_the_callers_transaction_and_sent_after_commit(
    team, endpoint, receiver, django_capture_on_commit_callbacks
):
    seen = answer(receiver, 200)
    with django_capture_on_commit_callbacks(execute=True):
        event = emit(team)
        # Nothing leaves before the change commits: the dispatch waits for it.
        assert seen == [] and not WebhookDelivery.objects.exists()
    delivery = WebhookDelivery.objects.get(event=event)
    assert delivery.state == DeliveryState.DELIVERED and delivery.status_code == 200
    assert delivery.response_excerpt == "status 200" and delivery.attempt == 1
    event.refresh_from_db()
    assert event.dispatched_at is not None
    (request,) = seen
    body = request.get_data()
    assert json.loads(body) == {
        "id": event.event_id,
        "type": "balance.low",
        "created": event.payload["created"],
        "team": team.slug,
        "data": DATA,
    }
    assert request.headers["Webhook-Id"] == event.event_id
    assert request.headers["Content-Type"] == "application/json"
    assert abs(int(request.headers["Webhook-Timestamp"]) - time.time()) < 60
    assert verify_webhook(endpoint.secret, request.headers, body)


def test_a_change_that_rolls_back_sends_nothing(
    team, endpoint, receiver, django_capture_on_commit_callbacks
):
    seen = answer(receiver, 200)
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        webhook_event_emit(team_id=team.id, type="balance.low", data=DATA)
        raise RuntimeError("the change fails after the event was written")
    assert callbacks == []
    assert not OutboxEvent.objects.exists() and seen == []


def test_the_beat_job_dispatches_an_event_whose_enqueue_never_happened(
    team, endpoint, receiver, django_capture_on_commit_callbacks
):
    seen = answer(receiver, 200)
    event = emit(team)  # the test transaction never commits: as if the process died here
    assert OutboxEvent.objects.get(pk=event.pk).dispatched_at is None
    with django_capture_on_commit_callbacks(execute=True):
        result = outbox_pump()
    assert result.dispatched == 1
    assert WebhookDelivery.objects.get(event=event).state == DeliveryState.DELIVERED
    assert len(seen) == 1
    assert outbox_pump().dispatched == 0  # dispatched once


def test_only_active_subscribed_endpoints_of_the_team_get_the_event(
    team, owner, endpoint, outsider, receiver, django_capture_on_commit_callbacks
):
    answer(receiver, 200)
    webhook_endpoint_create(
        team=team, url=receiver.url_for("/hook"), event_types=["topup.failed"], actor=owner.user
    )
    off = webhook_endpoint_create(
        team=team, url=receiver.url_for("/hook"), event_types=["balance.low"], actor=owner.user
    )
    webhook_endpoint_update(endpoint=off, actor=owner.user, is_active=False)
    webhook_endpoint_create(
        team=outsider.team,
        url=receiver.url_for("/hook"),
        event_types=["balance.low"],
        actor=outsider.user,
    )
    with django_capture_on_commit_callbacks(execute=True):
        event = emit(team)
    assert list(WebhookDelivery.objects.values_list("endpoint_id", flat=True)) == [endpoint.pk]
    assert outbox_event_dispatch(event_id=event.pk) == []  # a second dispatch does nothing


def test_event_types_and_data_are_checked(team, endpoint):
    with pytest.raises(ValueError, match="unknown webhook event type"):
        webhook_event_emit(team_id=team.id, type="balance.lowish", data={})
    with pytest.raises(ValueError, match="decimal strings"):
        webhook_event_emit(team_id=team.id, type="balance.low", data={"balance": 1.5})


# ---- signing -------------------------------------------------------------------------------


def test_the_readme_snippet_verifies_and_rejects_any_change():
    secret, event_id, body = "whsec_test", "evt_123", b'{"a":"1.000000000"}'
    timestamp = int(time.time())
    headers = {
        "Webhook-Id": event_id,
        "Webhook-Timestamp": str(timestamp),
        "Webhook-Signature": webhook_sign(
            secret=secret, event_id=event_id, timestamp=timestamp, body=body
        ),
    }
    assert verify_webhook(secret, headers, body)
    assert not verify_webhook(secret, headers, b'{"a":"2.000000000"}')  # body
    assert not verify_webhook("whsec_other", headers, body)  # secret
    assert not verify_webhook(secret, {**headers, "Webhook-Timestamp": str(timestamp + 1)}, body)
    assert not verify_webhook(secret, {**headers, "Webhook-Id": "evt_124"}, body)
    old = timestamp - 301
    stale = {
        **headers,
        "Webhook-Timestamp": str(old),
        "Webhook-Signature": webhook_sign(
            secret=secret, event_id=event_id, timestamp=old, body=body
        ),
    }
    assert not verify_webhook(secret, stale, body)  # correctly signed, but too old
    assert verify_webhook(secret, stale, body, now=old + 299)
    assert not verify_webhook(secret, {}, body)


# ---- retries -------------------------------------------------------------------------------


def test_retries_back_off_then_succeed_on_a_controllable_clock(team, endpoint, receiver):
    seen = answer(receiver, 500, 503, 429, 200)
    event = emit(team)
    (first,) = outbox_event_dispatch(event_id=event.pk)
    clock = first.next_attempt_at
    delivery_id = first.pk
    for attempt, wait in enumerate(BACKOFF[:3], start=1):
        failed = webhook_delivery_attempt(delivery_id=delivery_id, now=clock)
        assert failed.attempt == attempt and failed.state == DeliveryState.FAILED
        assert failed.next_attempt_at == clock + wait
        assert delivery_due_ids(now=clock + wait - timedelta(seconds=1)) == []  # not yet
        clock += wait
        (delivery_id,) = delivery_due_ids(now=clock)
    delivered = webhook_delivery_attempt(delivery_id=delivery_id, now=clock)
    assert delivered.attempt == 4 and delivered.state == DeliveryState.DELIVERED

    rows = list(WebhookDelivery.objects.filter(event=event).order_by("attempt"))
    assert [(r.attempt, r.state, r.status_code) for r in rows] == [
        (1, "failed", 500),
        (2, "failed", 503),
        (3, "failed", 429),
        (4, "delivered", 200),
    ]
    assert rows[0].error == "HTTP 500" and rows[0].response_excerpt == "status 500"
    endpoint.refresh_from_db()
    assert endpoint.failure_count == 0 and endpoint.is_active
    bodies = {request.get_data() for request in seen}
    assert bodies == {event_body(event)}  # every attempt sends the same bytes, re-signed
    for request in seen:
        stamp = int(request.headers["Webhook-Timestamp"])
        assert verify_webhook(endpoint.secret, request.headers, request.get_data(), now=stamp)
    assert sum(BACKOFF, timedelta()) > timedelta(hours=23)  # spread over about a day


def test_after_the_last_attempt_the_endpoint_is_disabled_and_owners_emailed(
    team, owner, admin_member, endpoint, receiver, django_capture_on_commit_callbacks
):
    seen = answer(receiver, 503)
    event = emit(team)
    (delivery,) = outbox_event_dispatch(event_id=event.pk)
    clock, delivery_id = delivery.next_attempt_at, delivery.pk
    with django_capture_on_commit_callbacks(execute=True):
        for attempt in range(1, MAX_ATTEMPTS + 1):
            last = webhook_delivery_attempt(delivery_id=delivery_id, now=clock)
            assert last.attempt == attempt and last.state == DeliveryState.FAILED
            if attempt < MAX_ATTEMPTS:
                clock = last.next_attempt_at
                (delivery_id,) = delivery_due_ids(now=clock)
    assert len(seen) == MAX_ATTEMPTS == 9
    assert last.next_attempt_at is None
    endpoint.refresh_from_db()
    assert not endpoint.is_active and endpoint.disabled_at == clock
    assert endpoint.failure_count == MAX_ATTEMPTS
    assert delivery_due_ids(now=clock + timedelta(days=2)) == []
    (notice,) = mail.outbox
    assert notice.to == [owner.user.email] and endpoint.url in notice.body
    audit = AuditEntry.objects.get(action="webhook.endpoint_disable")
    assert audit.actor is None and audit.team_id == team.id


def test_one_failing_event_does_not_disable_an_endpoint_that_delivers_others(
    team, endpoint, receiver
):
    def handler(request):
        return Response("no", status=422) if b"poison" in request.get_data() else Response("ok")

    receiver.expect_request("/hook").respond_with_handler(handler)
    (delivery,) = outbox_event_dispatch(event_id=emit(team, data={"note": "poison"}).pk)
    clock, delivery_id = delivery.next_attempt_at, delivery.pk
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if attempt == MAX_ATTEMPTS:  # another event gets through before the last attempt
            (healthy,) = outbox_event_dispatch(event_id=emit(team).pk)
            webhook_delivery_attempt(delivery_id=healthy.pk, now=clock)
        last = webhook_delivery_attempt(delivery_id=delivery_id, now=clock)
        if attempt < MAX_ATTEMPTS:
            clock = last.next_attempt_at
            (delivery_id,) = delivery_due_ids(now=clock)
    assert last.state == DeliveryState.FAILED and last.next_attempt_at is None
    endpoint.refresh_from_db()
    assert endpoint.is_active and endpoint.failure_count == 1


def test_a_redirect_is_a_failed_attempt_not_followed(team, endpoint, receiver):
    receiver.expect_request("/hook").respond_with_data(
        "", status=302, headers={"Location": receiver.url_for("/elsewhere")}
    )
    (delivery,) = outbox_event_dispatch(event_id=emit(team).pk)
    failed = webhook_delivery_attempt(delivery_id=delivery.pk)
    assert failed.state == DeliveryState.FAILED and failed.status_code == 302
    assert [r.path for r, _ in receiver.log] == ["/hook"]


def test_an_unreachable_endpoint_is_a_failed_attempt(team, owner):
    dead = webhook_endpoint_create(
        team=team, url="http://127.0.0.1:9/hook", event_types=["balance.low"], actor=owner.user
    )
    (delivery,) = outbox_event_dispatch(event_id=emit(team).pk)
    failed = webhook_delivery_attempt(delivery_id=delivery.pk)
    assert failed.state == DeliveryState.FAILED and failed.status_code is None
    assert failed.error.startswith("connection failed")
    assert WebhookEndpoint.objects.get(pk=dead.pk).failure_count == 1


# ---- idempotency ---------------------------------------------------------------------------


def test_a_delivery_task_run_twice_sends_once(team, endpoint, receiver):
    seen = answer(receiver, 200)
    (delivery,) = outbox_event_dispatch(event_id=emit(team).pk)
    assert tasks.webhook_deliver.delay(delivery.pk).get() == "delivered"
    assert tasks.webhook_deliver.delay(delivery.pk).get() == "delivered"
    assert webhook_delivery_attempt(delivery_id=delivery.pk).state == "delivered"
    assert len(seen) == 1
    assert WebhookDelivery.objects.filter(event_id=delivery.event_id).count() == 1


def test_an_attempt_whose_worker_died_is_reclaimed_and_retried(team, endpoint, receiver):
    seen = answer(receiver, 200)
    (delivery,) = outbox_event_dispatch(event_id=emit(team).pk)
    started = timezone.now() - timedelta(minutes=10)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(state="sending", attempted_at=started)
    result = outbox_pump(now=timezone.now())
    assert result.reclaimed == 1
    lost = WebhookDelivery.objects.get(pk=delivery.pk)
    assert lost.state == DeliveryState.FAILED and "worker stopped" in lost.error
    retry = WebhookDelivery.objects.get(event_id=delivery.event_id, attempt=2)
    assert retry.state == DeliveryState.SCHEDULED and retry.next_attempt_at == lost.next_attempt_at
    delivered = webhook_delivery_attempt(delivery_id=retry.pk, now=retry.next_attempt_at)
    assert delivered.state == DeliveryState.DELIVERED and len(seen) == 1


def test_resend_sends_again_and_brings_a_scheduled_retry_forward(
    team, owner, member, endpoint, receiver, django_capture_on_commit_callbacks
):
    seen = answer(receiver, 500, 200)
    (delivery,) = outbox_event_dispatch(event_id=emit(team).pk)
    failed = webhook_delivery_attempt(delivery_id=delivery.pk)
    with pytest.raises(ApplicationError) as caught:
        webhook_delivery_resend(delivery=failed, actor=member.user)
    assert caught.value.status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        retry = webhook_delivery_resend(delivery=failed, actor=owner.user)
    assert retry.attempt == 2  # the scheduled retry, brought forward: no extra attempt
    assert WebhookDelivery.objects.get(pk=retry.pk).state == DeliveryState.DELIVERED
    with django_capture_on_commit_callbacks(execute=True):
        again = webhook_delivery_resend(delivery=failed, actor=owner.user)
    assert again.attempt == 3 and len(seen) == 3
    assert AuditEntry.objects.filter(action="webhook.delivery_resend").count() == 2


# ---- endpoints -----------------------------------------------------------------------------


def test_endpoints_are_for_owners_and_admins_with_checked_urls(team, owner, admin_member, member):
    made = webhook_endpoint_create(
        team=team,
        url="https://hooks.example.com/in",
        event_types=["topup.succeeded"],
        actor=admin_member.user,
    )
    assert made.secret.startswith("whsec_") and len(made.secret) > 40
    with pytest.raises(ApplicationError) as caught:
        webhook_endpoint_create(
            team=team,
            url="https://x.example.com",
            event_types=["budget.exceeded"],
            actor=member.user,
        )
    assert caught.value.status_code == 403
    with pytest.raises(ApplicationError, match="event type"):
        webhook_endpoint_create(
            team=team, url="https://x.example.com", event_types=[], actor=owner.user
        )
    with override_settings(WEBHOOK_ALLOW_PRIVATE_URLS=False):
        for url in ("http://hooks.example.com/in", "https://10.0.0.5/in", "https://localhost/x"):
            with pytest.raises(ApplicationError) as caught:
                webhook_endpoint_create(
                    team=team, url=url, event_types=["balance.low"], actor=owner.user
                )
            assert caught.value.code == "invalid_url"


def test_price_change_reaches_subscribed_teams_and_is_audited_globally(
    team, endpoint, outsider_team, staff_price
):
    price, author = staff_price
    events = price_change_publish(price=price, actor=author)
    assert [e.team_id for e in events] == [team.id]
    data = events[0].payload["data"]
    assert data["model"] == price.model.name and data["version"] == price.pk
    assert data["usd"]["input_per_1m"] == format_usd(price.input_per_1m)
    assert isinstance(data["usd"]["input_per_1m"], str)
    audit = AuditEntry.objects.get(action="price.version_create", actor=author)
    assert audit.team is None and audit.actor == author


@pytest.fixture
def staff_price(catalog):
    from django.contrib.auth import get_user_model

    from pricing.models import Price

    author = get_user_model().objects.create_user("pricing@example.com", "pricing@example.com")
    return Price.objects.filter(input_per_1m__isnull=False).select_related("model").first(), author


# ---- pages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("persona", ["owner", "admin_member", "finance", "member"])
def test_the_webhooks_page_shows_secrets_and_actions_only_to_managers(
    request, login_as, team, endpoint, persona
):
    outbox_event_dispatch(event_id=emit(team).pk)
    client = login_as(request.getfixturevalue(persona))
    page = client.get(reverse("accounts:webhooks", args=[team.slug]))
    assert page.status_code == 200
    text = page.content.decode()
    manager = persona in {"owner", "admin_member"}
    assert endpoint.url in text and "balance.low" in text
    assert (endpoint.secret in text) == manager
    assert (reverse("accounts:webhook_create", args=[team.slug]) in text) == manager
    assert ("Re-send" in text) is False  # the only delivery is still scheduled


def test_outsiders_get_404_on_every_webhook_page_and_action(login_as, team, endpoint, outsider):
    client = login_as(outsider)
    (delivery,) = outbox_event_dispatch(event_id=emit(team).pk)
    assert client.get(reverse("accounts:webhooks", args=[team.slug])).status_code == 404
    for name, args in [
        ("webhook_create", [team.slug]),
        ("webhook_disable", [team.slug, endpoint.pk]),
        ("webhook_enable", [team.slug, endpoint.pk]),
        ("webhook_resend", [team.slug, delivery.pk]),
    ]:
        assert client.post(reverse(f"accounts:{name}", args=args)).status_code == 404
    # Their own team's URLs with our ids: 404 too, nothing changes.
    own = outsider.team.slug
    assert (
        client.post(reverse("accounts:webhook_disable", args=[own, endpoint.pk])).status_code == 404
    )
    assert (
        client.post(reverse("accounts:webhook_resend", args=[own, delivery.pk])).status_code == 404
    )
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).is_active


def test_managers_create_disable_enable_and_resend_through_the_pages(
    login_as, team, owner, finance, receiver
):
    answer(receiver, 200)
    client = login_as(owner, REMOTE_ADDR="198.51.100.7")
    created = client.post(
        reverse("accounts:webhook_create", args=[team.slug]),
        {"url": receiver.url_for("/hook"), "event_types": ["balance.low", "budget.exceeded"]},
    )
    assert created.status_code == 302
    endpoint = WebhookEndpoint.objects.get(team=team)
    assert endpoint.event_types == ["balance.low", "budget.exceeded"]
    bad = client.post(reverse("accounts:webhook_create", args=[team.slug]), {"url": "nope"})
    assert bad.status_code == 400
    assert finance_cannot_post(login_as(finance), team, endpoint)

    assert (
        client.post(reverse("accounts:webhook_disable", args=[team.slug, endpoint.pk])).status_code
        == 302
    )
    assert not WebhookEndpoint.objects.get(pk=endpoint.pk).is_active
    assert (
        client.post(reverse("accounts:webhook_enable", args=[team.slug, endpoint.pk])).status_code
        == 302
    )
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).is_active

    (delivery,) = outbox_event_dispatch(event_id=emit(team).pk)
    webhook_delivery_attempt(delivery_id=delivery.pk)
    resend = client.post(reverse("accounts:webhook_resend", args=[team.slug, delivery.pk]))
    assert resend.status_code == 302
    assert WebhookDelivery.objects.filter(event_id=delivery.event_id).count() == 2
    actions = list(AuditEntry.objects.filter(team=team).order_by("id").values_list("action", "ip"))
    assert actions == [
        ("webhook.endpoint_create", "198.51.100.7"),
        ("webhook.endpoint_disable", "198.51.100.7"),
        ("webhook.endpoint_enable", "198.51.100.7"),
        ("webhook.delivery_resend", "198.51.100.7"),
    ]


def finance_cannot_post(client, team, endpoint) -> bool:
    create = client.post(
        reverse("accounts:webhook_create", args=[team.slug]),
        {"url": "https://x.example.com", "event_types": ["balance.low"]},
    )
    disable = client.post(reverse("accounts:webhook_disable", args=[team.slug, endpoint.pk]))
    return create.status_code == disable.status_code == 403


def test_page_actions_need_the_csrf_token(login_as, team, owner, endpoint):
    client = login_as(owner, enforce_csrf_checks=True)
    url = reverse("accounts:webhook_disable", args=[team.slug, endpoint.pk])
    assert client.post(url).status_code == 403
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).is_active


def test_the_stored_payload_renders_to_stable_bytes(team, endpoint):
    event = emit(team, data={"z": "1", "a": {"y": "2", "b": "3"}})
    stored = OutboxEvent.objects.get(pk=event.pk)  # jsonb reorders keys
    assert event_body(stored) == event_body(event)
    assert orjson.loads(event_body(stored))["data"] == {"a": {"b": "3", "y": "2"}, "z": "1"}


def test_a_new_price_version_is_published_by_the_pricing_service(team, endpoint, staff_price):
    from pricing.services import price_version_create

    price, author = staff_price
    new = price_version_create(
        model=price.model, effective_from=timezone.now() + timedelta(days=1), author=author,
        input_per_1m="9.99", output_per_1m="19.99",
    )  # fmt: skip
    assert AuditEntry.objects.filter(action="price.version_create", actor=author).count() == 1
    event = OutboxEvent.objects.get(team=team, type="price.changed")
    assert event.payload["data"]["version"] == new.pk
