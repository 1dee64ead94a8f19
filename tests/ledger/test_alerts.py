"""Usage alerts at 50/75/100 % of the monthly allotment and balance alerts: each crossing fires
once (email to owners and finance, an in-app notification, a webhook event), even when many
clients ingest at once."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.core import mail
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import Membership, Notification, OutboxEvent, Plan, Role
from ledger.services.alerts import balance_low_threshold_set
from pricing.money import NANO
from tests.conftest import make_user

from .conftest import grant

EVENT = {"model": "gpt-5", "usage": {"input_tokens": 1000, "output_tokens": 500}}  # 1.125 credits


def post(client: APIClient, event_id: str):
    return client.post("/api/v1/usage", {"id": event_id, **EVENT}, format="json")


@pytest.mark.django_db(transaction=True)
def test_each_usage_threshold_fires_once_under_concurrent_ingest(team_factory, key_factory):
    Plan.objects.get_or_create(code="test-ten", defaults={"name": "Ten", "monthly_credits": 10})
    team = team_factory(plan="test-ten")
    finance = make_user("fin@example.com")
    Membership.objects.create(team=team, user=finance, role=Role.FINANCE)
    _, secret = key_factory(team)
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        try:
            barrier.wait()
            for j in range(2):
                assert post(client, f"t{i}-{j}").status_code == 201
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 16 x 1.125 = 18 credits against a 10-credit allotment: 50, 75 and 100 % crossed once each
    kinds = Counter(Notification.objects.filter(team=team).values_list("kind", flat=True))
    assert kinds == {"usage_50": 1, "usage_75": 1, "usage_100": 1, "balance_depleted": 1}
    events = Counter(OutboxEvent.objects.filter(team=team).values_list("type", flat=True))
    assert events == {"usage.threshold_reached": 3, "balance.depleted": 1}
    percents = sorted(
        e.payload["data"]["percent"]
        for e in OutboxEvent.objects.filter(team=team, type="usage.threshold_reached")
    )
    assert percents == [50, 75, 100]
    usage_mails = [m for m in mail.outbox if "month's credits used" in m.subject]
    assert len(usage_mails) == 3
    assert all(
        sorted(m.to) == sorted([team.memberships.get(role="owner").user.email, "fin@example.com"])
        for m in usage_mails
    )


@pytest.mark.django_db
def test_balance_low_fires_on_each_downward_crossing(
    team, key_client, django_capture_on_commit_callbacks
):
    grant(team, 10)
    balance_low_threshold_set(team_id=team.id, threshold_nano=8 * NANO)
    client = key_client(team)
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, "a").status_code == 201  # 10 -> 8.875: still above
        assert post(client, "b").status_code == 201  # -> 7.75: crosses 8
        assert post(client, "c").status_code == 201  # -> 6.625: already below
    assert list(Notification.objects.filter(team=team).values_list("kind", flat=True)) == [
        "balance_low"
    ]
    event = OutboxEvent.objects.get(team=team, type="balance.low")
    assert event.payload["data"] == {"balance": "7.750000000", "threshold": "8.000000000"}
    assert any(m.subject == "Balance low" for m in mail.outbox)

    grant(team, 5)  # back above the threshold (11.625), then down again
    with django_capture_on_commit_callbacks(execute=True):
        for i in range(4):
            post(client, f"d{i}")  # 11.625 -> 7.125
    assert Notification.objects.filter(team=team, kind="balance_low").count() == 2
    balance_low_threshold_set(team_id=team.id, threshold_nano=None)  # switched off
    post(client, "e")
    assert Notification.objects.filter(team=team, kind="balance_low").count() == 2


@pytest.mark.django_db
def test_no_alert_without_a_crossing(team, key_client):
    grant(team, 100)
    post(key_client(team), "quiet")
    assert not Notification.objects.filter(team=team).exists()
    assert not OutboxEvent.objects.filter(team=team).exists()


@pytest.mark.django_db
def test_the_dashboard_shows_notifications_and_sets_the_balance_alert(
    client, team, key_client, admin_member, member
):
    grant(team, 2)
    post(key_client(team), "x1")
    post(key_client(team), "x2")  # 2 -> -0.25: depleted
    client.force_login(member.user)
    page = client.get(f"/t/{team.slug}/")
    assert b"Credits used up" in page.content
    assert client.post(f"/t/{team.slug}/alerts/balance/", {"threshold": "5"}).status_code == 403
    client.force_login(admin_member.user)
    response = client.post(f"/t/{team.slug}/alerts/balance/", {"threshold": "12.5"})
    assert response.status_code == 302
    assert b"drops below 12.500000000 credits" in client.get(f"/t/{team.slug}/").content
    client.post(f"/t/{team.slug}/alerts/balance/", {"threshold": "-1"})
    client.post(f"/t/{team.slug}/alerts/balance/", {"threshold": "abc"})
    from ledger.models import TeamBalance

    assert TeamBalance.objects.get(team=team).low_threshold_nano == 12_500_000_000
    client.post(f"/t/{team.slug}/alerts/balance/", {"threshold": ""})
    assert TeamBalance.objects.get(team=team).low_threshold_nano is None


@pytest.mark.django_db
def test_an_outsider_cannot_set_another_teams_alert(client, team, outsider):
    client.force_login(outsider.user)
    assert client.post(f"/t/{team.slug}/alerts/balance/", {"threshold": "5"}).status_code == 404


@pytest.mark.django_db
def test_an_alert_email_is_sent_once_and_the_sweep_sends_what_was_never_queued(
    team, owner, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    from ledger.services import alerts

    notice = Notification.objects.create(team=team, kind="balance_low", title="Low", body="b")
    assert alerts.notification_email(notification_id=notice.pk) is True
    assert alerts.notification_email(notification_id=notice.pk) is False  # a task run twice
    assert [m.to for m in mail.outbox] == [[owner.user.email]]

    # the broker was down at commit: nothing was queued; the sweep finds it two minutes later
    Notification.objects.create(team=team, kind="balance_low", title="Lost", body="b")
    assert alerts.notification_emails_sweep() == 0  # too young: its own task may still run
    later = timezone.now() + timedelta(minutes=3)
    assert alerts.notification_emails_sweep(now=later) == 1  # the task runs eagerly here
    assert [m.subject for m in mail.outbox] == ["Low", "Lost"]
    assert alerts.notification_emails_sweep(now=later) == 0

    def refused(*args, **kwargs):
        raise ConnectionRefusedError("mail server down")

    monkeypatch.setattr(alerts, "send_mail", refused)
    failing = Notification.objects.create(team=team, kind="balance_low", title="Retry", body="b")
    with pytest.raises(ConnectionRefusedError):
        alerts.notification_email(notification_id=failing.pk)
    failing.refresh_from_db()
    assert failing.emailed_at is None  # left for the sweep
