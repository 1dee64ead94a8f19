"""Payment providers: Stripe (through the real `stripe` library) and the fake provider used by
the embedded default and demos. Both answer the same few questions; the services decide what
the answers mean, so a fake payment is credited through exactly the code a Stripe one is.

Nothing here touches the database.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Protocol

import stripe
from django.conf import settings
from django.urls import reverse

from gateway_billing.errors import ApplicationError


@dataclass(frozen=True)
class Checkout:
    session_id: str
    url: str


@dataclass(frozen=True)
class ChargeResult:
    """The answer to an off-session charge: succeeded, requires_action, processing or failed."""

    status: str
    payment_intent_id: str | None
    failure_code: str = ""
    failure_message: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LineItem:
    name: str
    unit_amount_cents: int
    quantity: int = 1


class PaymentProvider(Protocol):
    name: str

    def customer_create(self, *, team_id: int, team_name: str, email: str) -> str: ...

    def checkout_payment(
        self,
        *,
        customer_id: str,
        item: LineItem,
        metadata: dict[str, str],
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
    ) -> Checkout: ...

    def checkout_subscription(
        self,
        *,
        customer_id: str,
        item: LineItem,
        metadata: dict[str, str],
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
    ) -> Checkout: ...

    def charge_off_session(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount_cents: int,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> ChargeResult: ...

    def card_details(self, *, payment_method_id: str) -> tuple[str, str]: ...

    def subscription_update(
        self,
        *,
        subscription_id: str,
        quantity: int | None = None,
        cancel_at_period_end: bool | None = None,
    ) -> None: ...

    def subscription_cancel_now(self, *, subscription_id: str) -> None: ...

    def confirm_on_session(self, *, payment_intent_id: str, return_url: str) -> str: ...

    def refund(self, *, payment_intent_id: str, amount_cents: int, idempotency_key: str) -> str: ...


class PaymentProviderError(ApplicationError):
    """The provider could not be reached or refused the request (not a card decline)."""

    def __init__(self, message: str) -> None:
        super().__init__("payment_provider_error", message, status_code=502)


def _plain(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


class StripeProvider:
    name = "stripe"

    def __init__(self, secret_key: str, api_base: str = "") -> None:
        stripe.enable_telemetry = False
        self.client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base} if api_base else {},
            max_network_retries=2,  # retries reuse the idempotency key: safe
        )

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except stripe.CardError:
            raise
        except stripe.StripeError as error:
            raise PaymentProviderError(
                f"The payment provider did not accept the request: {error.user_message or error}"
            ) from error

    def customer_create(self, *, team_id: int, team_name: str, email: str) -> str:
        customer = self._call(
            self.client.v1.customers.create,
            params={"name": team_name, "email": email, "metadata": {"team_id": str(team_id)}},
            options={"idempotency_key": f"customer:{team_id}"},
        )
        return customer.id

    def _checkout(self, params: dict[str, Any], idempotency_key: str) -> Checkout:
        session = self._call(
            self.client.v1.checkout.sessions.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        )
        return Checkout(session_id=session.id, url=session.url)

    @staticmethod
    def _price_data(item: LineItem, recurring: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "currency": "usd",
            "unit_amount": item.unit_amount_cents,
            "product_data": {"name": item.name},
        }
        if recurring:
            data["recurring"] = {"interval": "month"}
        return data

    def checkout_payment(
        self,
        *,
        customer_id: str,
        item: LineItem,
        metadata: dict[str, str],
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
    ) -> Checkout:
        params = {
            "mode": "payment",
            "customer": customer_id,
            "client_reference_id": metadata["payment_id"],
            "line_items": [
                {"price_data": self._price_data(item, False), "quantity": item.quantity}
            ],
            # Save the card for auto recharge; the intent carries our ids for its own events.
            "payment_intent_data": {"setup_future_usage": "off_session", "metadata": metadata},
            "metadata": metadata,
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        return self._checkout(params, idempotency_key)

    def checkout_subscription(
        self,
        *,
        customer_id: str,
        item: LineItem,
        metadata: dict[str, str],
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
    ) -> Checkout:
        params = {
            "mode": "subscription",
            "customer": customer_id,
            "client_reference_id": metadata["team_id"],
            "line_items": [{"price_data": self._price_data(item, True), "quantity": item.quantity}],
            "subscription_data": {"metadata": metadata},
            "payment_method_collection": "always",
            "metadata": metadata,
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        return self._checkout(params, idempotency_key)

    def charge_off_session(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount_cents: int,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> ChargeResult:
        params = {
            "amount": amount_cents,
            "currency": "usd",
            "customer": customer_id,
            "payment_method": payment_method_id,
            "off_session": True,
            "confirm": True,
            "metadata": metadata,
        }
        try:
            intent = self._call(
                self.client.v1.payment_intents.create,
                params=params,
                options={"idempotency_key": idempotency_key},
            )
        except stripe.CardError as error:
            body = (error.json_body or {}).get("error", {})
            intent = body.get("payment_intent") or {}
            code = error.code or body.get("code") or "card_error"
            status = "requires_action" if code == "authentication_required" else "failed"
            return ChargeResult(
                status=status,
                payment_intent_id=intent.get("id"),
                failure_code=code,
                failure_message=error.user_message or str(error),
                raw=intent,
            )
        status = {"succeeded": "succeeded", "processing": "processing"}.get(
            intent.status, "requires_action" if intent.status == "requires_action" else "failed"
        )
        return ChargeResult(status=status, payment_intent_id=intent.id, raw=_plain(intent))

    def card_details(self, *, payment_method_id: str) -> tuple[str, str]:
        method = self._call(self.client.v1.payment_methods.retrieve, payment_method_id)
        card = getattr(method, "card", None)
        return (card.brand, card.last4) if card else ("", "")

    def subscription_update(
        self,
        *,
        subscription_id: str,
        quantity: int | None = None,
        cancel_at_period_end: bool | None = None,
    ) -> None:
        params: dict[str, Any] = {}
        if cancel_at_period_end is not None:
            params["cancel_at_period_end"] = cancel_at_period_end
        if quantity is not None:
            current = self._call(self.client.v1.subscriptions.retrieve, subscription_id)
            item = current["items"]["data"][0]
            params["items"] = [{"id": item["id"], "quantity": quantity}]
            params["proration_behavior"] = "create_prorations"
        self._call(self.client.v1.subscriptions.update, subscription_id, params=params)

    def subscription_cancel_now(self, *, subscription_id: str) -> None:
        try:
            self._call(self.client.v1.subscriptions.cancel, subscription_id)
        except PaymentProviderError as error:
            # Stripe no longer finds a subscription that ended already: nothing left to stop.
            if getattr(error.__cause__, "code", None) != "resource_missing":
                raise

    def confirm_on_session(self, *, payment_intent_id: str, return_url: str) -> str:
        """An off-session charge the bank wants confirmed: confirm it again with the customer
        present; the URL of the bank's page (3-D Secure), or "" when nothing is left to do."""
        intent = self._call(
            self.client.v1.payment_intents.confirm,
            payment_intent_id,
            params={"return_url": return_url},
        )
        action = getattr(intent, "next_action", None)
        redirect = getattr(action, "redirect_to_url", None) if action else None
        return getattr(redirect, "url", "") or ""

    def refund(self, *, payment_intent_id: str, amount_cents: int, idempotency_key: str) -> str:
        refund = self._call(
            self.client.v1.refunds.create,
            params={"payment_intent": payment_intent_id, "amount": amount_cents},
            options={"idempotency_key": idempotency_key},
        )
        return refund.id


# The fake provider's saved "cards": what an off-session charge on them does.
FAKE_CARDS = {
    "fake_pm_visa": ("visa", "4242", "succeeded", ""),
    "fake_pm_declined": ("visa", "0002", "failed", "card_declined"),
    "fake_pm_auth": ("visa", "3155", "requires_action", "authentication_required"),
}


class FakeProvider:
    """Test mode: checkout is a page of ours; charges succeed or fail by the saved test card."""

    name = "fake"

    def customer_create(self, *, team_id: int, team_name: str, email: str) -> str:
        return f"fake_cus_{team_id}"

    def _checkout(self, metadata: dict[str, str], kind: str) -> Checkout:
        session_id = f"fake_cs_{kind}_{metadata.get('payment_id') or metadata['team_id']}"
        if kind == "sub":
            session_id += f"_{metadata['plan']}_{metadata['nonce']}"
        url = reverse("ledger:fake_checkout", kwargs={"session_id": session_id})
        return Checkout(session_id=session_id, url=url)

    def checkout_payment(self, *, metadata: dict[str, str], **_: Any) -> Checkout:
        return self._checkout(metadata, "pay")

    def checkout_subscription(self, *, metadata: dict[str, str], **_: Any) -> Checkout:
        return self._checkout(metadata, "sub")

    def charge_off_session(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount_cents: int,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> ChargeResult:
        _brand, _last4, status, code = FAKE_CARDS.get(
            payment_method_id, ("", "", "failed", "card_declined")
        )
        message = {
            "card_declined": "Your card was declined.",
            "authentication_required": "Your bank asks you to confirm this payment.",
        }.get(code, "")
        return ChargeResult(
            status=status,
            payment_intent_id=f"fake_pi_{metadata['payment_id']}",
            failure_code=code,
            failure_message=message,
        )

    def card_details(self, *, payment_method_id: str) -> tuple[str, str]:
        brand, last4, _status, _code = FAKE_CARDS.get(payment_method_id, ("", "", "", ""))
        return brand, last4

    def confirm_on_session(self, *, payment_intent_id: str, return_url: str) -> str:
        payment_id = payment_intent_id.removeprefix("fake_pi_")
        return reverse("ledger:fake_checkout", kwargs={"session_id": f"fake_cs_pay_{payment_id}"})

    def subscription_update(self, **_: Any) -> None:
        return None

    def subscription_cancel_now(self, **_: Any) -> None:
        return None

    def refund(self, *, payment_intent_id: str, amount_cents: int, idempotency_key: str) -> str:
        return f"fake_re_{idempotency_key}"


@functools.cache
def _stripe(secret_key: str, api_base: str) -> StripeProvider:
    return StripeProvider(secret_key, api_base)


def provider_name() -> str:
    """ "stripe" when a Stripe key is configured; "fake" in test mode, which production refuses
    unless FAKE_PAYMENTS_ENABLED says otherwise."""
    if settings.STRIPE_SECRET_KEY:
        return "stripe"
    if settings.FAKE_PAYMENTS_ENABLED:
        return "fake"
    raise ApplicationError(
        "payments_unavailable",
        "Payments are not configured on this server: set STRIPE_SECRET_KEY (or enable the "
        "test-mode provider with FAKE_PAYMENTS_ENABLED).",
        status_code=503,
    )


def test_mode() -> bool:
    """Payments go to the fake provider (pages say "Test mode")."""
    try:
        return provider_name() == "fake"
    except ApplicationError:
        return False


def provider_get(name: str | None = None) -> PaymentProvider:
    name = name or provider_name()
    if name == "stripe":
        return _stripe(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE)
    return FakeProvider()
