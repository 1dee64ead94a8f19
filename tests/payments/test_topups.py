"""Top-ups through Stripe Checkout: credits land exactly once however the events arrive."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import orjson
import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from accounts.models import Membership, Role
from ledger.models import (
    EntryKind,
    LedgerEntry,
    Payment,
    PaymentCustomer,
    PaymentStatus,
    StripeEvent,
    StripeEventStatus,
    TeamBalance,
)
from ledger.services.stripe_events import stripe_events_retry
from pricing.money import NANO

from .conftest import (
    charge_refunded,
    deliver,
    intent_succeeded,
    logged_in,
    session_completed,
    start_topup,
)
from .stripe_server import event, sign

pytestmark = pytest.mark.django_db


def balance(team) -> int:
    return TeamBalance.objects.get(team=team).balance_nano


def topup_entries(team) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(team=team, kind=EntryKind.TOPUP))


def test_the_pack_opens_a_checkout_session_for_the_teams_customer(stripe_api, owner):
    _, payment, response = start_topup(owner.membership)
    assert response.status_code == 302
    assert response["Location"].startswith("https://checkout.stripe.test/c/pay/cs_test_")
    assert payment.status == PaymentStatus.PENDING
    assert (payment.amount_cents, payment.credits_nano) == (1000, 1500 * NANO)  # Pro's pack
    customer = PaymentCustomer.objects.get(team=owner.team)
    (sent,) = stripe_api.calls_to("POST", "/v1/checkout/sessions")
    assert sent["mode"] == "payment"
    assert sent["customer"] == customer.customer_id
    assert sent["line_items"][0]["price_data"]["unit_amount"] == "1000"
    assert sent["payment_intent_data"]["setup_future_usage"] == "off_session"
    assert sent["metadata"]["payment_id"] == str(payment.pk)
    assert payment.checkout_session_id == stripe_api.calls[-1][2].get(
        "id", payment.checkout_session_id
    )
    # a second top-up reuses the customer
    start_topup(owner.membership)
    assert len(stripe_api.calls_to("POST", "/v1/customers")) == 1


def test_credits_land_once_when_checkout_completes_even_if_delivered_twice(stripe_api, owner, send):
    _, payment, _ = start_topup(owner.membership)
    before = balance(owner.team)
    completed = session_completed(payment)
    assert send(completed).status_code == 200
    assert send(completed).status_code == 200  # Stripe's retry of the same event
    async_ok = event("checkout.session.async_payment_succeeded", completed["data"]["object"])
    assert send(async_ok).status_code == 200  # a different event about the same session
    (entry,) = topup_entries(owner.team)
    assert entry.amount_nano == 1500 * NANO
    assert balance(owner.team) == before + 1500 * NANO
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert StripeEvent.objects.get(event_id=completed["id"]).status == StripeEventStatus.PROCESSED


def test_a_forged_or_stale_signature_is_refused_and_nothing_is_stored(stripe_api, owner, send):
    _, payment, _ = start_topup(owner.membership)
    completed = session_completed(payment)
    forged = send(completed, secret="whsec_someone_else")
    assert forged.status_code == 400
    assert forged.json()["error"]["code"] == "invalid_signature"
    stale = send(completed, timestamp=int(time.time()) - 3600)
    assert stale.status_code == 400
    body = orjson.dumps(completed)
    tampered = Client().post(
        reverse("ledger:stripe_webhook"),
        data=body.replace(b'"paid"', b'"PAID"'),
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(body, "whsec_test_secret"),
    )
    assert tampered.status_code == 400
    missing = Client().post(
        reverse("ledger:stripe_webhook"), data=body, content_type="application/json"
    )
    assert missing.status_code == 400
    assert not StripeEvent.objects.exists()
    assert topup_entries(owner.team) == []


def test_payment_intent_before_checkout_completed_credits_once_and_saves_the_card(
    stripe_api, owner, send, django_capture_on_commit_callbacks
):
    _, payment, _ = start_topup(owner.membership)
    with django_capture_on_commit_callbacks(execute=True):  # the card is saved after commit
        assert send(intent_succeeded(payment)).status_code == 200
    assert len(topup_entries(owner.team)) == 1
    assert send(session_completed(payment)).status_code == 200
    assert len(topup_entries(owner.team)) == 1
    payment.refresh_from_db()
    assert payment.payment_intent_id == "pi_test_x"
    assert payment.receipt_url == "https://pay.stripe.test/r/1"
    customer = PaymentCustomer.objects.get(team=owner.team)
    assert (customer.payment_method_id, customer.card_last4) == ("pm_card_visa", "4242")


def test_unknown_event_types_are_stored_and_acknowledged(stripe_api, send):
    unknown = event("customer.tax_id.created", {"id": "txi_1", "object": "tax_id"})
    response = send(unknown)
    assert response.status_code == 200
    assert StripeEvent.objects.get(event_id=unknown["id"]).status == StripeEventStatus.IGNORED


def test_a_delayed_method_credits_on_async_success_only(stripe_api, owner, send):
    _, payment, _ = start_topup(owner.membership)
    send(session_completed(payment, paid=False))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PROCESSING
    assert topup_entries(owner.team) == []
    obj = session_completed(payment)["data"]["object"]
    send(event("checkout.session.async_payment_succeeded", obj))
    assert len(topup_entries(owner.team)) == 1


def test_a_refund_takes_back_the_refunded_share_once(stripe_api, owner, send):
    _, payment, _ = start_topup(owner.membership)
    send(session_completed(payment))
    after_topup = balance(owner.team)
    half = charge_refunded(payment, 500)
    send(half)
    send(half)  # duplicate delivery
    refunds = LedgerEntry.objects.filter(team=owner.team, kind=EntryKind.REFUND)
    assert [r.amount_nano for r in refunds] == [-750 * NANO]
    send(charge_refunded(payment, 500))  # a new event with the same cumulative amount
    send(charge_refunded(payment, 1000))
    assert sorted(r.amount_nano for r in refunds.all()) == [-750 * NANO, -750 * NANO]
    assert balance(owner.team) == after_topup - 1500 * NANO
    payment.refresh_from_db()
    assert (payment.status, payment.refunded_cents) == (PaymentStatus.REFUNDED, 1000)


def test_a_refund_arriving_before_the_payment_event_still_credits_then_refunds(
    stripe_api, owner, send
):
    _, payment, _ = start_topup(owner.membership)
    before = balance(owner.team)
    send(charge_refunded(payment, 1000, metadata=True))  # charges carry the intent's metadata
    assert balance(owner.team) == before  # credited and taken back
    send(session_completed(payment))
    assert balance(owner.team) == before
    assert len(topup_entries(owner.team)) == 1


def test_a_refund_about_an_unknown_charge_waits_for_the_payment_then_applies(
    stripe_api, owner, send
):
    _, payment, _ = start_topup(owner.membership)
    before = balance(owner.team)
    early = charge_refunded(payment, 400)  # no metadata, and we do not know the intent yet
    assert send(early).status_code == 200  # stored: Stripe need not retry
    assert StripeEvent.objects.get(event_id=early["id"]).status == StripeEventStatus.FAILED
    send(session_completed(payment))
    assert stripe_events_retry(older_than=timedelta(0)) == 1
    assert balance(owner.team) == before + 1500 * NANO - 600 * NANO
    assert stripe_events_retry(older_than=timedelta(0)) == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_deliveries_credit_once_and_never_500(stripe_api, owner):
    _, payment, _ = start_topup(owner.membership)
    completed = session_completed(payment)
    statuses: list[int] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        try:
            barrier.wait()
            statuses.append(deliver(Client(), completed).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 6
    assert len(topup_entries(owner.team)) == 1
    assert StripeEvent.objects.filter(event_id=completed["id"]).count() == 1


def test_custom_amounts_and_limits(stripe_api, owner):
    client = logged_in(owner.membership)
    url = reverse("ledger:topup", args=[owner.team.slug])
    ok = client.post(url, {"option": "custom", "amount": "25.50"})
    assert ok.status_code == 302
    payment = Payment.objects.get(team=owner.team)
    assert (payment.amount_cents, payment.credits_nano) == (2550, 4590 * NANO)  # 25.50 x 180
    too_big = client.post(url, {"option": "custom", "amount": "5000.01"})
    assert too_big.status_code == 400
    assert "contact sales" in too_big.content.decode()
    for bad in ("9.99", "abc", "10.001", ""):
        response = client.post(url, {"option": "custom", "amount": bad})
        assert response.status_code == 400, bad
    assert Payment.objects.filter(team=owner.team).count() == 1


def test_the_prepaid_amounts_buy_at_180_credits_a_dollar(stripe_api, owner):
    client = logged_in(owner.membership)
    client.post(reverse("ledger:topup", args=[owner.team.slug]), {"option": "usd-200"})
    payment = Payment.objects.get(team=owner.team)
    assert (payment.amount_cents, payment.credits_nano) == (20000, 36000 * NANO)


def test_free_teams_cannot_buy_and_plain_members_cannot_reach_billing(
    stripe_api, team_factory, member
):
    free = team_factory(plan="free")
    owner = Membership.objects.get(team=free, role=Role.OWNER)
    client = logged_in(owner)
    page = client.get(reverse("ledger:billing", args=[free.slug]))
    assert page.status_code == 200
    assert "cannot buy credits" in page.content.decode()
    client.post(reverse("ledger:topup", args=[free.slug]), {"option": "custom", "amount": "10"})
    assert not Payment.objects.filter(team=free).exists()
    plain = logged_in(member.membership)
    assert plain.get(reverse("ledger:billing", args=[member.team.slug])).status_code == 403
    assert (
        plain.post(reverse("ledger:topup", args=[member.team.slug]), {"option": "pack"}).status_code
        == 403
    )
    member.membership.can_manage_billing = True
    member.membership.save()
    response = plain.post(reverse("ledger:topup", args=[member.team.slug]), {"option": "pack"})
    assert response.status_code == 302
    assert Payment.objects.filter(team=member.team).count() == 1


def test_admins_and_finance_see_billing_but_cannot_pay(stripe_api, admin_member, finance):
    for persona in (admin_member, finance):
        client = logged_in(persona.membership)
        page = client.get(reverse("ledger:billing", args=[persona.team.slug]))
        assert page.status_code == 200
        assert "Continue to payment" not in page.content.decode()
        client.post(reverse("ledger:topup", args=[persona.team.slug]), {"option": "pack"})
    assert not Payment.objects.exists()


def test_stripe_unreachable_leaves_a_failed_payment_and_a_message(stripe_api, owner):
    stripe_api.fail_next = 500
    PaymentCustomer.objects.create(team=owner.team, provider="stripe", customer_id="cus_pre")
    stripe_api.fail_next = None
    # every retry of the checkout call fails
    stripe_api.server.clear_all_handlers()
    stripe_api.server.expect_request("/v1/checkout/sessions").respond_with_data(
        "upstream down", status=503
    )
    client = logged_in(owner.membership)
    response = client.post(reverse("ledger:topup", args=[owner.team.slug]), {"option": "pack"})
    assert response.status_code == 400
    assert "payment provider" in response.content.decode()
    payment = Payment.objects.get(team=owner.team)
    assert payment.status == PaymentStatus.FAILED
    assert topup_entries(owner.team) == []


def test_the_payments_api_lists_only_the_callers_payments(
    stripe_api, owner, outsider, key_client, send
):
    _, payment, _ = start_topup(owner.membership)
    send(session_completed(payment))
    start_topup(outsider.membership)
    body = key_client(owner.team, ["usage:read"]).get("/api/v1/payments").json()
    assert [p["id"] for p in body["results"]] == [payment.pk]
    row = body["results"][0]
    assert (row["amount_usd"], row["credits"], row["status"]) == (
        "10.00",
        "1500.000000000",
        "succeeded",
    )
    assert row["payment_intent_id"] == "pi_test_x"
    denied = key_client(owner.team, ["usage:write"]).get("/api/v1/payments")
    assert denied.status_code == 403


def test_finance_refunds_from_the_admin_and_the_ledger_follows_stripes_event(
    stripe_api, owner, send, django_user_model
):
    from django.contrib.auth.models import Permission

    _, payment, _ = start_topup(owner.membership)
    send(session_completed(payment))
    before = balance(owner.team)
    staff = django_user_model.objects.create_user("fin@example.com", "fin@example.com", "x")
    staff.is_staff = True
    staff.save()
    changelist = reverse("admin:ledger_payment_changelist")
    client = Client()
    client.force_login(staff)
    data = {"action": "refund_in_full", "_selected_action": [payment.pk]}
    client.post(changelist, data)  # without the adjust permission: no such action
    assert stripe_api.calls_to("POST", "/v1/refunds") == []
    staff.user_permissions.add(
        Permission.objects.get(codename="view_payment"),
        Permission.objects.get(codename="adjust_ledger"),
    )
    client.force_login(staff)
    assert client.post(changelist, data).status_code == 302
    (refund,) = stripe_api.calls_to("POST", "/v1/refunds")
    assert (refund["payment_intent"], refund["amount"]) == ("pi_test_x", "1000")
    assert balance(owner.team) == before  # the entry comes with Stripe's event
    send(charge_refunded(payment, 1000))
    assert balance(owner.team) == before - 1500 * NANO
