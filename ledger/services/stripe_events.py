"""Stripe's events: verified, stored, then handled once each.

``stripe_event_receive`` verifies the signature with the real ``stripe`` library and stores the
event (``INSERT ... ON CONFLICT DO NOTHING`` on its id) before anything else; the webhook view
answers 2xx only after that commit. ``stripe_event_process`` then handles it inside one
transaction holding the event row's lock: a duplicate delivery racing the first waits for the
lock and finds it processed (a no-op, not a 500). A handler that fails leaves the event
``failed`` with its error; the beat job retries it (``stripe_events_retry``).

Handlers find our objects by the metadata we gave Stripe (payment id, team id, plan), so no
event depends on another having arrived first: ``payment_intent.succeeded`` before
``checkout.session.completed`` credits the top-up, and the later event finds it credited.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson
import stripe
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from gateway_billing.errors import ApplicationError
from ledger.models import Payment, PaymentStatus, StripeEvent, StripeEventStatus

from .payments import (
    payment_cancel,
    payment_credit,
    payment_fail,
    payment_method_save,
    payment_refund_record,
)
from .subscriptions import (
    subscription_checkout_completed,
    subscription_ended,
    subscription_invoice_failed,
    subscription_invoice_paid,
    subscription_updated,
)

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 20


def stripe_event_verify(*, payload: bytes, signature: str | None) -> dict[str, Any]:
    """The event, if Stripe signed it with our secret within the tolerance; else a 400."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise ApplicationError(
            "webhook_not_configured",
            "STRIPE_WEBHOOK_SECRET is not set on this server.",
            status_code=503,
        )
    try:
        event = stripe.Webhook.construct_event(payload, signature, secret)
    except stripe.SignatureVerificationError as error:
        raise ApplicationError("invalid_signature", f"Signature check failed: {error}") from None
    except ValueError:
        raise ApplicationError("invalid_payload", "The body is not a Stripe event.") from None
    return event.to_dict()


def stripe_event_store(*, event: dict[str, Any]) -> tuple[StripeEvent, bool]:
    """Store the event once. Returns (row, created)."""
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event.get("type"):
        raise ApplicationError("invalid_payload", "A Stripe event has an id and a type.")
    row, created = StripeEvent.objects.get_or_create(
        event_id=event_id,
        defaults={
            "type": str(event["type"])[:100],
            "livemode": bool(event.get("livemode")),
            "payload": orjson.loads(orjson.dumps(event)),
        },
    )
    return row, created


def stripe_event_receive(*, payload: bytes, signature: str | None) -> StripeEvent:
    """Verify, store (committed), then try to handle. The caller answers 2xx once this returns:
    the event is safe even if handling failed (it is retried)."""
    event = stripe_event_verify(payload=payload, signature=signature)
    with transaction.atomic():
        row, _ = stripe_event_store(event=event)
    if row.status in (StripeEventStatus.RECEIVED, StripeEventStatus.FAILED):
        try:
            stripe_event_process(event_id=row.event_id)
        except Exception:  # stored: the retry job handles it; Stripe needs no retry
            logger.exception("stripe event %s failed; it will be retried", row.event_id)
        row.refresh_from_db()
    return row


def stripe_event_process(*, event_id: str) -> str:
    """Handle one stored event, once. Returns its status."""
    try:
        with transaction.atomic():
            row = StripeEvent.objects.select_for_update().get(event_id=event_id)
            if row.status in (StripeEventStatus.PROCESSED, StripeEventStatus.IGNORED):
                return row.status
            handler = HANDLERS.get(row.type)
            if handler is not None:
                handler(row.payload["data"]["object"], row.payload)
            row.status = StripeEventStatus.PROCESSED if handler else StripeEventStatus.IGNORED
            row.attempts += 1
            row.processed_at = timezone.now()
            row.error = ""
            row.save(update_fields=["status", "attempts", "processed_at", "error"])
            return row.status
    except Exception as error:
        StripeEvent.objects.filter(event_id=event_id).exclude(
            status__in=[StripeEventStatus.PROCESSED, StripeEventStatus.IGNORED]
        ).update(
            status=StripeEventStatus.FAILED,
            attempts=F("attempts") + 1,
            error=f"{type(error).__name__}: {error}"[:2000],
        )
        raise


def stripe_events_retry(*, older_than: timedelta = timedelta(seconds=30)) -> int:
    """Handle events left received or failed (a crash, a bug since fixed). Returns how many
    were handled now."""
    cutoff = timezone.now() - older_than
    ids = (
        StripeEvent.objects.filter(
            status__in=[StripeEventStatus.RECEIVED, StripeEventStatus.FAILED],
            received_at__lt=cutoff,
            attempts__lt=MAX_ATTEMPTS,
        )
        .order_by("received_at")
        .values_list("event_id", flat=True)[:500]
    )
    done = 0
    for event_id in ids:
        try:
            done += stripe_event_process(event_id=event_id) == StripeEventStatus.PROCESSED
        except Exception:
            logger.exception("stripe event %s failed again", event_id)
    return done


# ---- handlers: each gets (data.object, the whole event) ----------------------------------------


def _payment_of(obj: dict[str, Any]) -> Payment | None:
    """Our payment, from the metadata we set, else from the Stripe ids we stored."""
    metadata = obj.get("metadata") or {}
    payment_id = metadata.get("payment_id") or obj.get("client_reference_id")
    if payment_id and str(payment_id).isdigit():
        found = Payment.objects.filter(pk=int(payment_id)).first()
        if found is not None:
            return found
    if obj.get("object") == "checkout.session":
        return Payment.objects.filter(checkout_session_id=obj.get("id")).first()
    if obj.get("object") == "payment_intent":
        return Payment.objects.filter(payment_intent_id=obj.get("id")).first()
    if obj.get("object") == "charge" and obj.get("payment_intent"):
        return Payment.objects.filter(payment_intent_id=obj["payment_intent"]).first()
    return None


def _id(value: Any) -> str | None:
    """An expandable field: an id, or the expanded object."""
    if isinstance(value, dict):
        return value.get("id")
    return value or None


def _receipt(obj: dict[str, Any]) -> str:
    charge = obj.get("latest_charge")
    return charge.get("receipt_url", "") if isinstance(charge, dict) else obj.get("receipt_url", "")


def on_checkout_completed(obj: dict[str, Any], event: dict[str, Any]) -> None:
    if obj.get("mode") == "subscription":
        subscription_checkout_completed(session=obj)
        return
    payment = _payment_of(obj)
    if payment is None:
        logger.warning("checkout session %s names no payment of ours", obj.get("id"))
        return
    if obj.get("payment_status") in ("paid", "no_payment_required"):
        payment_credit(
            payment_id=payment.pk, payment_intent_id=_id(obj.get("payment_intent")), raw=obj
        )
    else:  # a delayed method (bank debit): async_payment_succeeded / _failed decides
        Payment.objects.filter(pk=payment.pk, status=PaymentStatus.PENDING).update(
            status=PaymentStatus.PROCESSING,
            payment_intent_id=_id(obj.get("payment_intent")),
            updated_at=timezone.now(),
        )


def on_checkout_async_succeeded(obj: dict[str, Any], event: dict[str, Any]) -> None:
    payment = _payment_of(obj)
    if payment is not None:
        payment_credit(
            payment_id=payment.pk, payment_intent_id=_id(obj.get("payment_intent")), raw=obj
        )


def on_checkout_async_failed(obj: dict[str, Any], event: dict[str, Any]) -> None:
    payment = _payment_of(obj)
    if payment is not None:
        payment_fail(
            payment_id=payment.pk,
            code="async_payment_failed",
            message="The payment did not go through",
            raw=obj,
        )


def on_checkout_expired(obj: dict[str, Any], event: dict[str, Any]) -> None:
    payment = _payment_of(obj)
    if payment is not None:
        payment_cancel(payment_id=payment.pk)


def on_intent_succeeded(obj: dict[str, Any], event: dict[str, Any]) -> None:
    payment = _payment_of(obj)
    if payment is None:  # a subscription's invoice: the invoice events handle it
        return
    payment_credit(
        payment_id=payment.pk,
        payment_intent_id=obj.get("id"),
        charge_id=_id(obj.get("latest_charge")) or "",
        receipt_url=_receipt(obj),
        raw=obj,
    )
    method = _id(obj.get("payment_method"))
    if method and (obj.get("setup_future_usage") == "off_session" or payment.kind == "topup"):
        team_id = payment.team_id  # the provider is asked for the card after commit
        transaction.on_commit(
            lambda: payment_method_save(team_id=team_id, payment_method_id=method), robust=True
        )


def on_intent_failed(obj: dict[str, Any], event: dict[str, Any]) -> None:
    payment = _payment_of(obj)
    if payment is None:
        return
    error = obj.get("last_payment_error") or {}
    code = error.get("decline_code") or error.get("code") or "payment_failed"
    if error.get("code") == "authentication_required":
        code = "authentication_required"
    payment_fail(
        payment_id=payment.pk,
        code=code,
        message=error.get("message", ""),
        payment_intent_id=obj.get("id"),
        status=PaymentStatus.REQUIRES_ACTION
        if code == "authentication_required"
        else PaymentStatus.FAILED,
        raw=obj,
    )


class NotYet(LookupError):
    """The event is about an object we have not heard of yet: fail, and the retry job handles
    it once the earlier event has arrived."""


def on_charge_refunded(obj: dict[str, Any], event: dict[str, Any]) -> None:
    payment = _payment_of(obj)
    if payment is None:
        if obj.get("invoice"):
            return  # a plan invoice's charge: plan refunds are handled by finance by hand
        raise NotYet(f"no payment with intent {obj.get('payment_intent')} yet")
    if obj.get("receipt_url") and not payment.receipt_url:
        Payment.objects.filter(pk=payment.pk).update(receipt_url=obj["receipt_url"])
    payment_refund_record(
        payment_id=payment.pk, refunded_cents_total=int(obj.get("amount_refunded") or 0), raw=obj
    )


def on_invoice_paid(obj: dict[str, Any], event: dict[str, Any]) -> None:
    subscription_invoice_paid(invoice=obj)


def on_invoice_failed(obj: dict[str, Any], event: dict[str, Any]) -> None:
    subscription_invoice_failed(invoice=obj)


def on_subscription_updated(obj: dict[str, Any], event: dict[str, Any]) -> None:
    subscription_updated(subscription=obj)


def on_subscription_deleted(obj: dict[str, Any], event: dict[str, Any]) -> None:
    subscription_ended(subscription=obj)


HANDLERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    "checkout.session.completed": on_checkout_completed,
    "checkout.session.async_payment_succeeded": on_checkout_async_succeeded,
    "checkout.session.async_payment_failed": on_checkout_async_failed,
    "checkout.session.expired": on_checkout_expired,
    "payment_intent.succeeded": on_intent_succeeded,
    "payment_intent.payment_failed": on_intent_failed,
    "charge.refunded": on_charge_refunded,
    "invoice.paid": on_invoice_paid,
    "invoice.payment_failed": on_invoice_failed,
    "customer.subscription.updated": on_subscription_updated,
    "customer.subscription.deleted": on_subscription_deleted,
}
