"""Payments run the real `stripe` library against a local Stripe-compatible server, and post
real signed events to /webhooks/stripe."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import Membership
from ledger.models import Payment, PaymentCustomer
from ledger.services.providers import _stripe

from .stripe_server import FakeStripe, event, sign

WEBHOOK_SECRET = "whsec_test_secret"


@pytest.fixture
def stripe_api(httpserver, settings) -> FakeStripe:
    fake = FakeStripe(httpserver)
    settings.STRIPE_SECRET_KEY = "sk_test_gateway"
    settings.STRIPE_API_BASE = fake.base
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    _stripe.cache_clear()
    yield fake
    _stripe.cache_clear()


@pytest.fixture
def fake_payments(settings) -> None:
    """The test-mode provider (no Stripe key)."""
    settings.STRIPE_SECRET_KEY = ""
    settings.FAKE_PAYMENTS_ENABLED = True


def deliver(client: Client, evt: dict, *, secret: str = WEBHOOK_SECRET, timestamp=None):
    body = orjson.dumps(evt)
    return client.post(
        reverse("ledger:stripe_webhook"),
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(body, secret, timestamp),
    )


@pytest.fixture
def send() -> Callable:
    """Deliver a signed event; returns the response."""
    client = Client()

    def post(evt: dict, **kwargs):
        return deliver(client, evt, **kwargs)

    return post


def logged_in(membership: Membership) -> Client:
    client = Client()
    client.force_login(membership.user)
    return client


def start_topup(membership: Membership, **data) -> tuple[Client, Payment, object]:
    client = logged_in(membership)
    response = client.post(
        reverse("ledger:topup", args=[membership.team.slug]), {"option": "pack", **data}
    )
    payment = Payment.objects.filter(team=membership.team).order_by("-pk").first()
    return client, payment, response


def session_completed(payment: Payment, *, paid: bool = True, intent: str = "pi_test_x") -> dict:
    return event(
        "checkout.session.completed",
        {
            "id": payment.checkout_session_id,
            "object": "checkout.session",
            "mode": "payment",
            "client_reference_id": str(payment.pk),
            "metadata": {"payment_id": str(payment.pk), "team_id": str(payment.team_id)},
            "payment_status": "paid" if paid else "unpaid",
            "payment_intent": intent,
            "amount_total": payment.amount_cents,
        },
    )


def intent_succeeded(payment: Payment, *, intent: str = "pi_test_x", method="pm_card_visa"):
    return event(
        "payment_intent.succeeded",
        {
            "id": intent,
            "object": "payment_intent",
            "amount": payment.amount_cents,
            "status": "succeeded",
            "payment_method": method,
            "setup_future_usage": "off_session",
            "latest_charge": {"id": "ch_test_x", "receipt_url": "https://pay.stripe.test/r/1"},
            "metadata": {"payment_id": str(payment.pk), "team_id": str(payment.team_id)},
        },
    )


def charge_refunded(
    payment: Payment, refunded_cents: int, *, intent: str = "pi_test_x", metadata: bool = False
):
    meta = {"payment_id": str(payment.pk), "team_id": str(payment.team_id)} if metadata else {}
    return event(
        "charge.refunded",
        {
            "id": "ch_test_x",
            "object": "charge",
            "amount": payment.amount_cents,
            "amount_refunded": refunded_cents,
            "payment_intent": intent,
            "refunded": refunded_cents >= payment.amount_cents,
            "metadata": meta,
        },
    )


def save_card(team, method: str = "pm_card_visa", provider: str = "stripe") -> None:
    PaymentCustomer.objects.update_or_create(
        team=team,
        defaults={
            "provider": provider,
            "customer_id": f"cus_test_{team.pk}",
            "payment_method_id": method,
            "card_brand": "visa",
            "card_last4": "4242",
        },
    )
