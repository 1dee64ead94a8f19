"""Auto recharge against the Stripe-compatible server: one charge per crossing under concurrent
ingest, credits once, back-off and switch-off on declines, the gate counting a pending refill."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Notification, OutboxEvent
from ledger.models import (
    AutoRecharge,
    EntryKind,
    LedgerEntry,
    Payment,
    PaymentKind,
    PaymentStatus,
    TeamBalance,
)
from ledger.services.credits import ledger_adjust
from ledger.services.recharge import auto_recharge_configure, auto_recharge_run
from pricing.money import NANO

from ..ledger.test_concurrency import run_threads
from .conftest import logged_in, save_card
from .stripe_server import event

PRO_REFILL = 1000 * NANO  # Pro's auto-recharge pack: 1,000 credits for $20


def configure(owner, *, threshold: int, amount: str | None = None, cap: int = 10):
    return auto_recharge_configure(
        membership=owner.membership,
        enabled=True,
        threshold_nano=threshold * NANO,
        amount=amount,
        monthly_cap=cap,
    )


def recharges(team) -> list[Payment]:
    return list(Payment.objects.filter(team=team, kind=PaymentKind.AUTO_RECHARGE).order_by("pk"))


def recharge_entries(team) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(team=team, kind=EntryKind.AUTO_RECHARGE))


def balance(team) -> int:
    return TeamBalance.objects.get(team=team).balance_nano


def usage(event_id: str) -> dict:
    return {
        "id": event_id,
        "model": "gpt-5",
        "usage": {"input_tokens": 1000, "output_tokens": 500, "cache_read_tokens": 200},
    }


@pytest.mark.django_db(transaction=True)
def test_a_crossing_under_concurrent_ingest_starts_exactly_one_charge(
    stripe_api, owner, key_factory, send
):
    team = owner.team
    save_card(team)
    configure(owner, threshold=4990)  # Pro starts with 5,000 monthly credits
    _, secret = key_factory(team)

    def work(i: int) -> list[int]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return [
            client.post("/api/v1/usage", usage(f"e{i}-{j}"), format="json").status_code
            for j in range(3)
        ]

    statuses = run_threads(8, work)
    assert all(code in (200, 201) for codes in statuses for code in codes), statuses
    assert len(stripe_api.calls_to("POST", "/v1/payment_intents")) == 1
    (payment,) = recharges(team)
    assert payment.status == PaymentStatus.SUCCEEDED
    (entry,) = recharge_entries(team)
    assert entry.amount_nano == PRO_REFILL
    sent = stripe_api.calls_to("POST", "/v1/payment_intents")[0]
    assert (sent["amount"], sent["off_session"], sent["confirm"]) == ("2000", "true", "true")
    assert sent["payment_method"] == "pm_card_visa"
    key = next(k for _m, p, _, k in stripe_api.calls if p == "/v1/payment_intents")
    assert key == payment.idempotency_key
    # Stripe's event for the same charge, delivered twice, credits nothing more
    succeeded = event(
        "payment_intent.succeeded",
        {
            "id": payment.payment_intent_id,
            "object": "payment_intent",
            "status": "succeeded",
            "amount": 2000,
            "payment_method": "pm_card_visa",
            "metadata": {"payment_id": str(payment.pk), "team_id": str(team.pk)},
        },
    )
    send(succeeded)
    send(succeeded)
    assert len(recharge_entries(team)) == 1
    used = 24 * 1_129_500_000
    assert balance(team) == 5000 * NANO - used + PRO_REFILL


@pytest.mark.django_db
def test_declines_back_off_for_an_hour_and_switch_off_after_three(stripe_api, owner):
    team = owner.team
    save_card(team, "pm_card_chargeDeclined")
    configure(owner, threshold=6000)  # below the threshold from the start
    assert auto_recharge_run(team_id=team.pk, trigger="t1") == PaymentStatus.FAILED
    row = AutoRecharge.objects.get(team=team)
    assert row.consecutive_failures == 1
    assert row.retry_after > timezone.now() + timedelta(minutes=59)
    (payment,) = recharges(team)
    assert payment.failure_code == "card_declined"
    assert Notification.objects.filter(team=team, kind="auto_recharge_failed").count() == 1
    assert OutboxEvent.objects.filter(team=team, type="auto_recharge.failed").count() == 1
    assert auto_recharge_run(team_id=team.pk, trigger="t2") is None  # backing off
    assert len(stripe_api.calls_to("POST", "/v1/payment_intents")) == 1
    for n, trigger in ((2, "t3"), (3, "t4")):
        AutoRecharge.objects.filter(team=team).update(
            retry_after=timezone.now() - timedelta(seconds=1)
        )
        assert auto_recharge_run(team_id=team.pk, trigger=trigger) == PaymentStatus.FAILED
        assert AutoRecharge.objects.get(team=team).consecutive_failures == n
    row.refresh_from_db()
    assert not row.enabled
    assert "3 failed charges" in row.disabled_reason
    assert TeamBalance.objects.get(team=team).recharge_threshold_nano is None
    last = Notification.objects.filter(team=team, kind="auto_recharge_failed").latest("pk")
    assert "now off" in last.body
    AutoRecharge.objects.filter(team=team).update(retry_after=None)
    assert auto_recharge_run(team_id=team.pk, trigger="t5") is None
    assert len(stripe_api.calls_to("POST", "/v1/payment_intents")) == 3
    assert recharge_entries(team) == []


@pytest.mark.django_db
def test_authentication_required_waits_for_the_owner_then_credits_once(stripe_api, owner, send):
    team = owner.team
    save_card(team, "pm_card_authenticationRequired")
    configure(owner, threshold=6000)
    assert auto_recharge_run(team_id=team.pk, trigger="t1") == PaymentStatus.REQUIRES_ACTION
    (payment,) = recharges(team)
    assert payment.payment_intent_id.startswith("pi_test_")
    AutoRecharge.objects.filter(team=team).update(retry_after=None)
    assert auto_recharge_run(team_id=team.pk, trigger="t2") is None  # one in flight per team
    client = logged_in(owner.membership)
    page = client.get(reverse("ledger:billing", args=[team.slug])).content.decode()
    assert "Finish the payment" in page
    finish = client.post(reverse("ledger:payment_finish", args=[team.slug, payment.pk]))
    assert finish.status_code == 302
    assert finish["Location"] == f"https://hooks.stripe.test/3ds/{payment.payment_intent_id}"
    succeeded = event(
        "payment_intent.succeeded",
        {
            "id": payment.payment_intent_id,
            "object": "payment_intent",
            "status": "succeeded",
            "metadata": {"payment_id": str(payment.pk), "team_id": str(team.pk)},
        },
    )
    send(succeeded)
    send(succeeded)
    assert [e.amount_nano for e in recharge_entries(team)] == [PRO_REFILL]
    assert AutoRecharge.objects.get(team=team).consecutive_failures == 0


@pytest.mark.django_db
def test_the_gate_counts_a_refill_that_can_start_and_starts_it(stripe_api, owner, key_client):
    team = owner.team
    ledger_adjust(
        team=team, amount_nano=-4999 * NANO, reason="test: spend down", author=owner.user,
        reference="spend-down",
    )  # fmt: skip
    request = {"model": "gpt-5", "estimated_input_tokens": 50_000, "max_output_tokens": 50_000}
    refused = key_client(team, ["authorize"]).post("/api/v1/authorize", request, format="json")
    assert refused.status_code == 402  # 101.25 credits asked, 1 left, no auto recharge
    save_card(team)
    configure(owner, threshold=100)
    allowed = key_client(team, ["authorize"]).post("/api/v1/authorize", request, format="json")
    assert allowed.status_code == 200, allowed.json()
    assert len(stripe_api.calls_to("POST", "/v1/payment_intents")) == 1  # the gate started it
    assert balance(team) == 1 * NANO + PRO_REFILL
    # Backing off after a decline: no refill can start, so the gate refuses again.
    ledger_adjust(
        team=team, amount_nano=-1000 * NANO, reason="test: spend down", author=owner.user,
        reference="spend-down-2",
    )  # fmt: skip
    AutoRecharge.objects.filter(team=team).update(retry_after=timezone.now() + timedelta(hours=1))
    again = key_client(team, ["authorize"]).post("/api/v1/authorize", request, format="json")
    assert again.status_code == 402


@pytest.mark.django_db
def test_more_than_three_recharges_in_ten_minutes_alert_the_owners_once(stripe_api, owner):
    team = owner.team
    save_card(team)
    configure(owner, threshold=100_000)  # every recharge still leaves it below
    for n in range(5):
        assert auto_recharge_run(team_id=team.pk, trigger=f"t{n}") == PaymentStatus.SUCCEEDED
    assert len(recharge_entries(team)) == 5
    assert Notification.objects.filter(team=team, kind="auto_recharge_frequent").count() == 1


@pytest.mark.django_db
def test_the_monthly_cap_stops_recharges_and_says_so(stripe_api, owner):
    team = owner.team
    save_card(team)
    configure(owner, threshold=100_000, cap=2)
    results = [auto_recharge_run(team_id=team.pk, trigger=f"t{n}") for n in range(4)]
    assert results == [PaymentStatus.SUCCEEDED, PaymentStatus.SUCCEEDED, None, None]
    assert Notification.objects.filter(team=team, kind="auto_recharge_cap").count() == 1


@pytest.mark.django_db
def test_switched_off_or_clear_of_the_threshold_charges_nothing(stripe_api, owner):
    team = owner.team
    save_card(team)
    configure(owner, threshold=10)  # 5,000 credits: well clear
    assert auto_recharge_run(team_id=team.pk, trigger="t1") is None
    auto_recharge_configure(
        membership=owner.membership, enabled=False, threshold_nano=6000 * NANO, amount=None,
        monthly_cap=10,
    )  # fmt: skip
    assert auto_recharge_run(team_id=team.pk, trigger="t2") is None
    assert stripe_api.calls_to("POST", "/v1/payment_intents") == []


@pytest.mark.django_db
def test_the_billing_form_sets_auto_recharge_with_clear_errors(
    stripe_api, owner, member, team_factory
):
    client = logged_in(owner.membership)
    url = reverse("ledger:auto_recharge", args=[owner.team.slug])
    no_card = client.post(url, {"enabled": "on", "threshold": "250", "monthly_cap": "5"})
    assert no_card.status_code == 400
    assert "make one top-up first" in no_card.content.decode()
    save_card(owner.team)
    bad = client.post(url, {"enabled": "on", "threshold": "-5", "monthly_cap": "5"})
    assert bad.status_code == 400
    too_much = client.post(
        url, {"enabled": "on", "threshold": "250", "amount": "9000", "monthly_cap": "5"}
    )
    assert "contact sales" in too_much.content.decode()
    ok = client.post(url, {"enabled": "on", "threshold": "250", "amount": "50", "monthly_cap": "5"})
    assert ok.status_code == 302
    row = AutoRecharge.objects.get(team=owner.team)
    assert (row.enabled, row.threshold_nano, row.amount_cents, row.monthly_cap) == (
        True,
        250 * NANO,
        5000,
        5,
    )
    assert TeamBalance.objects.get(team=owner.team).recharge_threshold_nano == 250 * NANO
    plain = logged_in(member.membership)
    assert plain.post(url, {"enabled": "", "threshold": "1", "monthly_cap": "5"}).status_code == 403
    assert AutoRecharge.objects.get(team=owner.team).enabled
    free = team_factory(plan="free")
    free_owner = free.memberships.get()
    save_card(free)
    response = logged_in(free_owner).post(
        reverse("ledger:auto_recharge", args=[free.slug]),
        {"enabled": "on", "threshold": "10", "monthly_cap": "5"},
    )
    assert response.status_code in (302, 403)
    assert not AutoRecharge.objects.filter(team=free, enabled=True).exists()
