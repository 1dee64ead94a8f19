"""Paid plans billed by the payment provider.

- Moving to Personal or Pro opens a Checkout session in subscription mode at the plan's price
  (Pro per member: the quantity is the member count). Nothing changes until the provider says
  the first invoice is paid.
- ``invoice.paid`` opens or renews the billing cycle: the cycle becomes the invoice's period,
  the previous cycle's monthly credits expire, and the plan's monthly credits are granted for
  the new one (``plan_cycle_grant``, once per cycle start, so the event arriving twice grants
  once). A second paid plan replaces the first: the old provider subscription is cancelled.
- ``invoice.payment_failed`` marks the subscription past due and tells the owners. The renew
  job waits ``SUBSCRIPTION_GRACE_DAYS`` after the cycle end (or after the failure, when later)
  for a paid invoice, then moves the team to Free (and cancels the provider's subscription).
  An invoice of a subscription the team no longer has (replaced, or cancelled) changes nothing.
- Choosing Free cancels at the period end: the provider stops billing, and the renew job
  applies the downgrade at the cycle end.
- The fake provider drives the same functions: its checkout page and the renew job build the
  invoice Stripe would send.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.authentication import team_keys_forget
from accounts.models import Membership, Plan, Role, Subscription, SubscriptionStatus, Team
from accounts.services import audit_record, cycle_bounds, webhook_event_emit
from gateway_billing.errors import ApplicationError
from ledger.models import LedgerEntry, LotSource, Payment, PaymentKind, PaymentStatus, Provider
from pricing.money import format_credits

from .alerts import team_notify
from .book import Book
from .credits import plan_cycle_grant, plan_grant_reference
from .payments import customer_ensure, usd
from .providers import FAKE_CARDS, LineItem, provider_get

logger = logging.getLogger(__name__)

FREE = "free"


def _lock_subscription(team_id: int) -> Subscription:
    Team.objects.select_for_update().only("pk").get(pk=team_id)  # the team first, as elsewhere
    return (
        Subscription.objects.select_for_update(of=("self",))
        .select_related("team", "plan", "pending_plan")
        .get(team_id=team_id)
    )


def seats(team_id: int) -> int:
    return Membership.objects.filter(team_id=team_id).count()


def plan_price_cents(plan: Plan, quantity: int) -> int:
    return plan.monthly_price_cents * (quantity if plan.price_per_member else 1)


# ---- starting and cancelling ------------------------------------------------------------------


def subscription_checkout_start(
    *, membership: Membership, plan: Plan, success_url: str, cancel_url: str
) -> str:
    """Owners move the team to a paid plan: the Checkout URL to send them to."""
    if membership.role != Role.OWNER:
        raise ApplicationError("forbidden", "Only owners change the plan.", status_code=403)
    team = membership.team
    if not plan.monthly_price_cents:
        raise ApplicationError("invalid_plan", f"{plan.name} is not a paid plan.")
    current = Subscription.objects.select_related("plan").get(team=team)
    if (
        current.plan_id == plan.pk
        and current.status == SubscriptionStatus.ACTIVE
        and (current.provider_subscription_id or current.provider == Provider.FAKE)
    ):
        raise ApplicationError("unchanged", f"The team is already on {plan.name}.", status_code=409)
    members = seats(team.pk)
    if plan.member_limit is not None and members > plan.member_limit:
        raise ApplicationError(
            "member_limit",
            f"The {plan.name} plan allows {plan.member_limit} member(s) and the team has "
            f"{members}; remove members first.",
            fields={"plan": ["Too many members for this plan."]},
        )
    customer = customer_ensure(team=team, email=membership.user.email)
    quantity = members if plan.price_per_member else 1
    checkout = provider_get(customer.provider).checkout_subscription(
        customer_id=customer.customer_id,
        item=LineItem(
            name=f"gateway_billing {plan.name}"
            + (" (per member)" if plan.price_per_member else ""),
            unit_amount_cents=plan.monthly_price_cents,
            quantity=quantity,
        ),
        metadata={
            "team_id": str(team.pk),
            "plan": plan.code,
            "quantity": str(quantity),
            "nonce": uuid.uuid4().hex[:12],
        },
        success_url=success_url,
        cancel_url=cancel_url,
        idempotency_key=f"subscribe:{team.pk}:{plan.code}:{uuid.uuid4().hex}",
    )
    return checkout.url


@transaction.atomic
def subscription_cancel(
    *, membership: Membership, ip: str | None = None, now: datetime | None = None
) -> Subscription:
    """Owners move back to Free: billing stops at the period end, the team keeps its plan
    until the cycle ends (the renew job applies the downgrade)."""
    if membership.role != Role.OWNER:
        raise ApplicationError("forbidden", "Only owners change the plan.", status_code=403)
    subscription = _lock_subscription(membership.team_id)
    if subscription.plan.code == FREE:
        raise ApplicationError("unchanged", "The team is already on Free.", status_code=409)
    free = Plan.objects.get(code=FREE)
    members = seats(membership.team_id)
    if free.member_limit is not None and members > free.member_limit:
        raise ApplicationError(
            "member_limit",
            f"The Free plan allows {free.member_limit} member(s) and the team has {members}; "
            "remove members first.",
            fields={"plan": ["Too many members for this plan."]},
        )
    subscription.pending_plan = free
    subscription.cancel_at_period_end = True
    subscription.save(update_fields=["pending_plan", "cancel_at_period_end"])
    if (
        subscription.provider_subscription_id
        and subscription.status != SubscriptionStatus.CANCELED  # ended at the provider already
    ):
        provider_get(subscription.provider).subscription_update(
            subscription_id=subscription.provider_subscription_id, cancel_at_period_end=True
        )
    audit_record(
        actor=membership.user,
        team=subscription.team,
        action="plan.cancel",
        target=f"subscription:{subscription.team.slug}",
        before={"plan": subscription.plan.code},
        after={"pending_plan": FREE, "effective": subscription.current_cycle_end.isoformat()},
        ip=ip,
    )
    return subscription


@transaction.atomic
def subscription_resume(*, membership: Membership, ip: str | None = None) -> Subscription:
    """Undo a cancellation before the period ends."""
    if membership.role != Role.OWNER:
        raise ApplicationError("forbidden", "Only owners change the plan.", status_code=403)
    subscription = _lock_subscription(membership.team_id)
    if not subscription.cancel_at_period_end:
        return subscription
    if subscription.status == SubscriptionStatus.CANCELED:
        raise ApplicationError(
            "subscription_ended",
            "The subscription has ended at the payment provider: choose the plan again to "
            "subscribe.",
            status_code=409,
        )
    subscription.pending_plan, subscription.cancel_at_period_end = None, False
    subscription.save(update_fields=["pending_plan", "cancel_at_period_end"])
    if subscription.provider_subscription_id:
        provider_get(subscription.provider).subscription_update(
            subscription_id=subscription.provider_subscription_id, cancel_at_period_end=False
        )
    audit_record(
        actor=membership.user,
        team=subscription.team,
        action="plan.resume",
        target=f"subscription:{subscription.team.slug}",
        after={"plan": subscription.plan.code},
        ip=ip,
    )
    return subscription


# ---- the provider's answers --------------------------------------------------------------------


def _invoice_subscription(invoice: dict[str, Any]) -> tuple[str | None, dict[str, str]]:
    """(subscription id, its metadata) from an invoice, in the old and the new API shapes."""
    details = (
        (invoice.get("parent") or {}).get("subscription_details")
        or invoice.get("subscription_details")
        or {}
    )
    subscription = details.get("subscription") or invoice.get("subscription")
    if isinstance(subscription, dict):
        subscription = subscription.get("id")
    return subscription, details.get("metadata") or {}


def _is_proration(line: dict[str, Any]) -> bool:
    parent = line.get("parent") or {}
    details = parent.get("subscription_item_details") or parent.get("invoice_item_details") or {}
    return bool(line.get("proration") or details.get("proration"))


def _period_line(invoice: dict[str, Any]) -> dict[str, Any] | None:
    """The invoice's line for the plan's period: not a proration (a seat added mid-cycle is
    billed on the next invoice as a proration line covering the rest of the old period).
    None when the invoice holds prorations only: a mid-cycle charge, not a new period."""
    lines = (invoice.get("lines") or {}).get("data") or []
    periodic = [line for line in lines if not _is_proration(line)]
    if lines and not periodic:
        return None
    return max(
        periodic, key=lambda line: int((line.get("period") or {}).get("end") or 0), default={}
    )


def _moment(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value), tz=UTC)


def _target(subscription_id: str | None, metadata: dict[str, str]) -> Subscription | None:
    team_id = metadata.get("team_id")
    if team_id and str(team_id).isdigit():
        return Subscription.objects.filter(team_id=int(team_id)).first()
    if subscription_id:
        return Subscription.objects.filter(provider_subscription_id=subscription_id).first()
    return None


def subscription_checkout_completed(*, session: dict[str, Any]) -> None:
    """The customer finished Checkout: remember the provider's subscription (the first
    invoice's ``invoice.paid`` switches the plan)."""
    metadata = session.get("metadata") or {}
    subscription_id = session.get("subscription")
    if isinstance(subscription_id, dict):
        subscription_id = subscription_id.get("id")
    target = _target(subscription_id, metadata)
    if target is None or not subscription_id:
        return
    with transaction.atomic():
        subscription = _lock_subscription(target.team_id)
        if not subscription.provider_subscription_id and subscription.plan.code != metadata.get(
            "plan"
        ):
            subscription.status = SubscriptionStatus.INCOMPLETE
            subscription.save(update_fields=["status"])


@transaction.atomic
def subscription_invoice_paid(
    *, invoice: dict[str, Any], provider: str = Provider.STRIPE, now: datetime | None = None
) -> bool:
    """A paid invoice opens (or renews) the cycle it covers and grants its credits. Returns
    whether this call did it (False: that invoice was already applied, or it is recorded but
    opens no cycle: prorations only, or a renewal of a subscription the team no longer has)."""
    now = now or timezone.now()
    subscription_id, metadata = _invoice_subscription(invoice)
    target = _target(subscription_id, metadata)
    invoice_id = invoice.get("id")
    if target is None or not invoice_id:
        logger.warning("invoice %s names no subscription of ours", invoice_id)
        return False
    subscription = _lock_subscription(target.team_id)
    if Payment.objects.filter(invoice_id=invoice_id, status=PaymentStatus.SUCCEEDED).exists():
        return False
    line = _period_line(invoice)
    period = (line or {}).get("period") or {}
    start = _moment(period.get("start") or invoice.get("period_start") or now.timestamp())
    end = _moment(period["end"]) if period.get("end") else cycle_bounds(start)[1]
    plan_code = metadata.get("plan") or subscription.plan.code
    plan = Plan.objects.get(code=plan_code)
    # A renewal of a subscription the team no longer has (replaced by a newer plan, or
    # cancelled after the grace period) arriving late must not switch the team back (and
    # cancel the current one): only a new subscription's first invoice changes the plan.
    stale = (
        subscription_id != subscription.provider_subscription_id
        and (invoice.get("billing_reason") or "subscription_create") != "subscription_create"
    )
    Payment.objects.update_or_create(
        invoice_id=invoice_id,
        defaults={
            "team_id": subscription.team_id,
            "kind": PaymentKind.SUBSCRIPTION,
            "provider": provider,
            "status": PaymentStatus.SUCCEEDED,
            "amount_cents": int(invoice.get("amount_paid") or 0),
            "credits_nano": 0,
            "description": f"{plan.name} plan, {start:%Y-%m-%d} to {end:%Y-%m-%d}",
            "receipt_url": invoice.get("hosted_invoice_url") or "",
            "payment_intent_id": None,
            "paid_at": now,
            "updated_at": now,
            "raw": {"invoice": invoice},
        },
    )
    if line is None or stale:
        logger.warning(
            "invoice %s of subscription %s paid: no new period for team %s (%s)",
            invoice_id,
            subscription_id,
            subscription.team_id,
            "a replaced subscription" if stale else "prorations only",
        )
        return False
    old_provider_id = subscription.provider_subscription_id
    before = {"plan": subscription.plan.code, "cycle_start": subscription.current_cycle_start}
    # The cycle the invoice covers replaces the one running: what is left of the old cycle's
    # monthly credits expires now (a renewal finds them expired already at the old end).
    if start < subscription.current_cycle_end or subscription.plan_id != plan.pk:
        book = Book.open(subscription.team_id, now=now)
        for lot in [lot for lot in book.lots if lot.source == LotSource.PLAN]:
            book.expire_lot(lot)
        book.close()
    subscription.plan, subscription.pending_plan = plan, None
    subscription.current_cycle_start, subscription.current_cycle_end = start, end
    subscription.status, subscription.past_due_since = SubscriptionStatus.ACTIVE, None
    subscription.cancel_at_period_end = False
    subscription.provider = provider
    subscription.provider_subscription_id = subscription_id
    subscription.quantity = int(line.get("quantity") or subscription.quantity or 1)
    subscription.save()
    # Once per cycle start; but the cycle this invoice replaces may have started the same
    # second (a team created, or renewed, and upgraded within it) and holds that reference:
    # this invoice's own grant then (the invoice is applied once, checked above).
    reference = plan_grant_reference(subscription.team_id, start)
    if LedgerEntry.objects.filter(reference=reference).exists():
        reference = f"{reference}:{invoice_id}"
    plan_cycle_grant(
        team=subscription.team, plan=plan, cycle_start=start, cycle_end=end, reference=reference
    )
    if old_provider_id and old_provider_id != subscription_id:  # a change of paid plan
        old = old_provider_id
        transaction.on_commit(
            lambda: provider_get(provider).subscription_cancel_now(subscription_id=old),
            robust=True,
        )
    transaction.on_commit(lambda: team_keys_forget(subscription.team_id))
    if plan.price_per_member and seats(subscription.team_id) != subscription.quantity:
        # members joined (or left) between the checkout and its payment: bill them too
        team_id = subscription.team_id
        transaction.on_commit(lambda: _seats_sync_enqueue(team_id), robust=True)
    audit_record(
        actor=None,
        team=subscription.team,
        action="plan.invoice_paid",
        target=f"subscription:{subscription.team.slug}",
        before={"plan": before["plan"], "cycle_start": before["cycle_start"].isoformat()},
        after={
            "plan": plan.code,
            "cycle_start": start.isoformat(),
            "cycle_end": end.isoformat(),
            "paid_usd": usd(int(invoice.get("amount_paid") or 0)),
            "granted": format_credits(plan.monthly_credits * 10**9),
        },
    )
    webhook_event_emit(
        team_id=subscription.team_id,
        type="subscription.changed",
        data={"plan": plan.code, "cycle_start": start.isoformat(), "cycle_end": end.isoformat()},
    )
    return True


@transaction.atomic
def subscription_invoice_failed(
    *, invoice: dict[str, Any], provider: str = Provider.STRIPE, now: datetime | None = None
) -> bool:
    """A subscription payment failed: past due from now, the owners are told once per
    invoice; the renew job moves the team to Free when the grace period ends unpaid."""
    now = now or timezone.now()
    subscription_id, metadata = _invoice_subscription(invoice)
    target = _target(subscription_id, metadata)
    invoice_id = invoice.get("id")
    if target is None or not invoice_id:
        return False
    subscription = _lock_subscription(target.team_id)
    payment, created = Payment.objects.get_or_create(
        invoice_id=invoice_id,
        defaults={
            "team_id": subscription.team_id,
            "kind": PaymentKind.SUBSCRIPTION,
            "provider": provider,
            "status": PaymentStatus.FAILED,
            "amount_cents": int(invoice.get("amount_due") or 0),
            "credits_nano": 0,
            "description": f"{subscription.plan.name} plan renewal",
            "failure_code": "invoice_payment_failed",
            "raw": {"invoice": invoice},
        },
    )
    if not created or payment.status == PaymentStatus.SUCCEEDED:
        return False
    if subscription.provider_subscription_id != subscription_id:
        # The first payment of a plan the team never reached, or a subscription it no longer
        # has (replaced by a newer plan): nothing to lose, the current plan is not past due.
        return False
    subscription.status = SubscriptionStatus.PAST_DUE
    subscription.past_due_since = subscription.past_due_since or now
    subscription.save(update_fields=["status", "past_due_since"])
    deadline = grace_deadline(subscription)
    team_notify(
        subscription.team_id,
        kind="subscription_payment_failed",
        event="subscription.payment_failed",
        title="Plan payment failed",
        body=f"The ${usd(payment.amount_cents)} payment for your {subscription.plan.name} plan "
        f"failed. Update your card before {deadline:%Y-%m-%d}, or the team moves to Free.",
        data={
            "plan": subscription.plan.code,
            "amount_usd": usd(payment.amount_cents),
            "grace_until": deadline.isoformat(),
        },
    )
    return True


@transaction.atomic
def subscription_updated(*, subscription: dict[str, Any]) -> None:
    """Mirror what the provider changed: cancellation at period end, seats."""
    target = _target(subscription.get("id"), subscription.get("metadata") or {})
    if target is None or target.provider_subscription_id != subscription.get("id"):
        return
    row = _lock_subscription(target.team_id)
    was_cancelling = row.cancel_at_period_end
    row.cancel_at_period_end = bool(subscription.get("cancel_at_period_end"))
    if row.cancel_at_period_end and row.pending_plan_id is None:
        row.pending_plan = Plan.objects.get(code=FREE)
    elif was_cancelling and not row.cancel_at_period_end:  # resumed at the provider
        row.pending_plan = None
    items = (subscription.get("items") or {}).get("data") or []
    if items and items[0].get("quantity"):
        row.quantity = int(items[0]["quantity"])
    row.save(update_fields=["cancel_at_period_end", "pending_plan", "quantity"])


@transaction.atomic
def subscription_ended(*, subscription: dict[str, Any]) -> None:
    """The provider's subscription ended: Free from the cycle end (the renew job)."""
    target = _target(subscription.get("id"), subscription.get("metadata") or {})
    if target is None or target.provider_subscription_id != subscription.get("id"):
        return  # an old subscription replaced by a newer plan: nothing to do
    row = _lock_subscription(target.team_id)
    row.status = SubscriptionStatus.CANCELED
    row.pending_plan = Plan.objects.get(code=FREE)
    row.save(update_fields=["status", "pending_plan"])


# ---- the renew job's part ----------------------------------------------------------------------


def fake_invoice(
    *,
    invoice_id: str,
    subscription_id: str | None,
    team_id: int,
    plan: Plan,
    quantity: int,
    start: datetime,
    end: datetime,
    billing_reason: str,
) -> dict[str, Any]:
    """The invoice Stripe would send, for the fake provider."""
    amount = plan_price_cents(plan, quantity)
    return {
        "id": invoice_id,
        "object": "invoice",
        "billing_reason": billing_reason,
        "amount_paid": amount,
        "amount_due": amount,
        "subscription": subscription_id,
        "subscription_details": {"metadata": {"team_id": str(team_id), "plan": plan.code}},
        "lines": {
            "data": [
                {
                    "period": {"start": int(start.timestamp()), "end": int(end.timestamp())},
                    "quantity": quantity,
                }
            ]
        },
    }


def fake_card_pays(team_id: int) -> bool:
    from ledger.models import PaymentCustomer

    method = (
        PaymentCustomer.objects.filter(team_id=team_id)
        .values_list("payment_method_id", flat=True)
        .first()
    )
    return FAKE_CARDS.get(method or "", ("", "", "failed", ""))[2] == "succeeded"


def grace_deadline(subscription: Subscription) -> datetime:
    """When an unpaid plan falls to Free: the grace period from the cycle end, or from the
    failed payment when it failed later (the date the owners were told)."""
    failed = subscription.past_due_since or subscription.current_cycle_end
    return max(subscription.current_cycle_end, failed) + timedelta(
        days=settings.SUBSCRIPTION_GRACE_DAYS
    )


def billed_renewal(subscription: Subscription, now: datetime) -> str:
    """Called by the renew job (holding the subscription's lock) for a cycle that ended:
    "renew" (our job grants the next cycle), "wait" (the provider's invoice will), or "done"
    (the fake provider's invoice was paid, which opened the next cycle)."""
    if subscription.plan.code == FREE:
        return "renew"
    # Cancelled (by the owner, or at the provider): Free from the cycle end. Checked before
    # the provider, so a paid plan with no provider (set up before payments) is cancelled too.
    if subscription.cancel_at_period_end or subscription.status == SubscriptionStatus.CANCELED:
        subscription.pending_plan = Plan.objects.get(code=FREE)
        _stop_billing(subscription)  # the provider ends it now too, if it has not already
        _detach(subscription)
        return "renew"
    if not subscription.provider:
        return "renew"
    if subscription.provider == Provider.FAKE and subscription.status in (
        SubscriptionStatus.ACTIVE,
        SubscriptionStatus.PAST_DUE,  # the fake provider retries during the grace period too
    ):
        start, end = cycle_bounds(subscription.current_cycle_end)
        invoice = fake_invoice(
            invoice_id=f"fake_in_{subscription.team_id}_{int(start.timestamp())}",
            subscription_id=subscription.provider_subscription_id,
            team_id=subscription.team_id,
            plan=subscription.plan,
            quantity=subscription.quantity,
            start=start,
            end=end,
            billing_reason="subscription_cycle",
        )
        if fake_card_pays(subscription.team_id):
            subscription_invoice_paid(invoice=invoice, provider=Provider.FAKE, now=now)
            return "done"
        subscription_invoice_failed(invoice=invoice, provider=Provider.FAKE, now=now)
        subscription.refresh_from_db()
    if now < grace_deadline(subscription):
        return "wait"
    # Unpaid past the grace period: Free from now, and the provider stops billing.
    subscription.pending_plan = Plan.objects.get(code=FREE)
    _stop_billing(subscription)
    _detach(subscription)
    team_notify(
        subscription.team_id,
        kind="subscription_downgraded",
        event="subscription.changed",
        title="Moved to the Free plan",
        body=f"The {subscription.plan.name} plan was not paid within "
        f"{settings.SUBSCRIPTION_GRACE_DAYS} days, so the team is on Free now.",
        data={"plan": FREE, "reason": "unpaid"},
    )
    return "renew"


def _stop_billing(subscription: Subscription) -> None:
    """After commit, cancel the provider's subscription we are letting go of: a team we move
    to Free is never billed again (its late invoices change nothing, see above)."""
    if subscription.provider_subscription_id:
        old, name = subscription.provider_subscription_id, subscription.provider
        transaction.on_commit(
            lambda: provider_get(name).subscription_cancel_now(subscription_id=old), robust=True
        )


def _detach(subscription: Subscription) -> None:
    subscription.provider, subscription.provider_subscription_id = "", None
    subscription.status, subscription.cancel_at_period_end = SubscriptionStatus.ACTIVE, False
    subscription.past_due_since = None
    subscription.save(
        update_fields=[
            "pending_plan",
            "provider",
            "provider_subscription_id",
            "status",
            "cancel_at_period_end",
            "past_due_since",
        ]
    )


# ---- seats -------------------------------------------------------------------------------------


def _seats_sync_enqueue(team_id: int) -> None:
    from ledger.tasks import subscription_seats_sync as task  # tasks import the services

    task.delay(team_id)


@transaction.atomic
def subscription_seats_sync(*, team_id: int) -> int | None:
    """Per-member plans bill one seat per member: bring the provider's quantity in line.
    Returns the quantity set, or None when nothing was to do."""
    subscription = _lock_subscription(team_id)
    if (
        not subscription.plan.price_per_member
        or not subscription.provider
        or subscription.status == SubscriptionStatus.CANCELED  # Stripe refuses to change it
    ):
        return None
    quantity = seats(team_id)
    if quantity == subscription.quantity:
        return None
    if subscription.provider_subscription_id:
        provider_get(subscription.provider).subscription_update(
            subscription_id=subscription.provider_subscription_id, quantity=quantity
        )
    subscription.quantity = quantity
    subscription.save(update_fields=["quantity"])
    return quantity


def fake_subscription_pay(*, team_id: int, plan_code: str, session_id: str) -> bool:
    """The fake checkout page's "Pay" for a plan: the invoice Stripe would send, paid now."""
    now = timezone.now()
    plan = Plan.objects.get(code=plan_code)
    start, end = cycle_bounds(now)
    invoice = fake_invoice(
        invoice_id=f"fake_in_{session_id}",
        subscription_id=f"fake_sub_{session_id}",
        team_id=team_id,
        plan=plan,
        quantity=seats(team_id) if plan.price_per_member else 1,
        start=start,
        end=end,
        billing_reason="subscription_create",
    )
    return subscription_invoice_paid(invoice=invoice, provider=Provider.FAKE, now=now)
