"""Auto recharge: when a team's balance falls below its threshold, charge its saved card
off-session for the refill, at most one charge in flight per team.

Who notices: the ledger (a debit that takes the balance below the threshold, decided under the
team's lock, enqueues ``auto_recharge_run`` after commit), the authorize gate (a team short of
credits, throttled), and a beat sweep (``auto_recharge_sweep``) that catches anything missed.

``recharge_start`` decides under the team's ``AutoRecharge`` row lock and records the payment
(pending) before any money moves; a partial unique index keeps one recharge in flight per team,
and the provider call carries the payment's idempotency key, so a retried or duplicated task
never charges twice. Credits land through ``payments.payment_credit`` (the charge's answer or
``payment_intent.succeeded``, whichever comes first). A decline or an authentication request
notifies the owners and backs off for an hour; three failures in a row switch it off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.authentication import team_keys_forget
from accounts.models import Membership, Notification, Subscription
from accounts.services import audit_record
from gateway_billing.errors import ApplicationError
from ledger.models import (
    IN_FLIGHT,
    AutoRecharge,
    Payment,
    PaymentCustomer,
    PaymentKind,
    PaymentStatus,
    TeamBalance,
)
from pricing.money import NANO, format_credits

from .alerts import team_notify
from .payments import credits_for_cents, custom_amount_cents, payment_credit, payment_fail, usd
from .providers import provider_get

logger = logging.getLogger(__name__)

FREQUENT_WINDOW = timedelta(minutes=10)
FREQUENT_COUNT = 3
KICK_SECONDS = 30


@dataclass(frozen=True)
class Refill:
    amount_cents: int
    credits_nano: int
    label: str


def refill_for(*, settings_row: AutoRecharge, plan) -> Refill | None:
    """The plan's auto-recharge pack, or the team's own amount at CREDITS_PER_USD."""
    if settings_row.amount_cents:
        cents = settings_row.amount_cents
        return Refill(cents, credits_for_cents(cents), f"${usd(cents)} auto recharge")
    if plan.auto_recharge_pack_credits and plan.auto_recharge_pack_price_cents:
        return Refill(
            plan.auto_recharge_pack_price_cents,
            plan.auto_recharge_pack_credits * NANO,
            f"{plan.name} auto-recharge pack",
        )
    return None


def _sync_gate(team_id: int) -> None:
    """The team's keys carry what the gate knows of auto recharge: drop them after commit."""
    transaction.on_commit(lambda: team_keys_forget(team_id))


# ---- settings -------------------------------------------------------------------------------


@transaction.atomic
def auto_recharge_configure(
    *,
    membership: Membership,
    enabled: bool,
    threshold_nano: int,
    amount: str | None,
    monthly_cap: int,
    ip: str | None = None,
) -> AutoRecharge:
    """Owners (and members with billing rights) switch auto recharge on or off and set it."""
    from .payments import require_billing_rights

    require_billing_rights(membership)
    team = membership.team
    plan = Subscription.objects.select_related("plan").get(team=team).plan
    if enabled and not plan.can_purchase_credits:
        raise ApplicationError(
            "plan_cannot_buy",
            f"The {plan.name} plan has no auto recharge: upgrade to a paid plan first.",
            status_code=403,
        )
    if threshold_nano < 0:
        raise ApplicationError(
            "invalid_threshold",
            "The threshold cannot be negative.",
            fields={"threshold": ["Zero or more credits."]},
        )
    if not 1 <= monthly_cap <= 100:
        raise ApplicationError(
            "invalid_cap",
            "Allow between 1 and 100 recharges a month.",
            fields={"monthly_cap": ["Between 1 and 100."]},
        )
    amount_cents = custom_amount_cents(amount) if amount else None
    row, _ = AutoRecharge.objects.select_for_update().get_or_create(team=team)
    if (
        enabled
        and refill_for(settings_row=AutoRecharge(amount_cents=amount_cents), plan=plan) is None
    ):
        raise ApplicationError(
            "invalid_amount",
            "Choose a refill amount: this plan has no auto-recharge pack.",
            fields={"amount": ["Required."]},
        )
    if (
        enabled
        and not PaymentCustomer.objects.filter(team=team).exclude(payment_method_id="").exists()
    ):
        raise ApplicationError(
            "no_saved_card",
            "Auto recharge charges the card saved by a top-up: make one top-up first.",
            fields={"enabled": ["No saved card yet."]},
        )
    before = {
        "enabled": row.enabled,
        "threshold": format_credits(row.threshold_nano),
        "amount_usd": usd(row.amount_cents) if row.amount_cents else None,
        "monthly_cap": row.monthly_cap,
    }
    switched_on = enabled and not row.enabled
    row.enabled, row.threshold_nano = enabled, threshold_nano
    row.amount_cents, row.monthly_cap = amount_cents, monthly_cap
    if switched_on:  # a fresh start: the owner fixed whatever made it fail
        row.consecutive_failures, row.retry_after, row.disabled_reason = 0, None, ""
    row.updated_at = timezone.now()
    row.save()
    TeamBalance.objects.filter(team=team).update(
        recharge_threshold_nano=threshold_nano if enabled else None
    )
    audit_record(
        actor=membership.user,
        team=team,
        action="auto_recharge.configure",
        target=f"team:{team.slug}",
        before=before,
        after={
            "enabled": enabled,
            "threshold": format_credits(threshold_nano),
            "amount_usd": usd(amount_cents) if amount_cents else None,
            "monthly_cap": monthly_cap,
        },
        ip=ip,
    )
    _sync_gate(team.pk)
    if enabled:
        transaction.on_commit(lambda: recharge_enqueue(team.pk, "configured"), robust=True)
    return row


def recharge_allowance(*, team_id: int, now: datetime | None = None) -> tuple[int, int] | None:
    """What the gate may count as spendable beyond the balance because a recharge is pending
    or can start, and the threshold: (refill nano-credits, threshold nano-credits), or None."""
    now = now or timezone.now()
    row = AutoRecharge.objects.filter(team_id=team_id, enabled=True).first()
    if row is None:
        return None
    pending = (
        Payment.objects.filter(
            team_id=team_id, kind=PaymentKind.AUTO_RECHARGE, status__in=IN_FLIGHT
        )
        .values_list("credits_nano", flat=True)
        .first()
    )
    if pending:
        return pending, row.threshold_nano
    if row.retry_after and row.retry_after > now:
        return None
    plan = Subscription.objects.select_related("plan").get(team_id=team_id).plan
    refill = refill_for(settings_row=row, plan=plan)
    if refill is None or not plan.can_purchase_credits or _cap_reached(row, now):
        return None
    return refill.credits_nano, row.threshold_nano


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _cap_reached(row: AutoRecharge, now: datetime) -> bool:
    count = Payment.objects.filter(
        team_id=row.team_id,
        kind=PaymentKind.AUTO_RECHARGE,
        created_at__gte=_month_start(now),
        status__in=[*IN_FLIGHT, PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED],
    ).count()
    return count >= row.monthly_cap


# ---- triggering -----------------------------------------------------------------------------


def recharge_enqueue(team_id: int, trigger: str) -> None:
    from ledger.tasks import auto_recharge_run

    auto_recharge_run.delay(team_id, trigger)


def recharge_kick(team_id: int) -> None:
    """The gate saw the team short of credits: start a recharge, at most every 30 s per team."""
    try:
        if not cache.add(f"recharge-kick:{team_id}", 1, KICK_SECONDS):
            return
        recharge_enqueue(team_id, f"gate:{int(timezone.now().timestamp()) // KICK_SECONDS}")
    except Exception:  # the sweep catches it within a minute
        logger.warning("auto recharge kick for team %s failed", team_id, exc_info=True)


def recharge_after_debit(*, team_id: int, trigger: str) -> None:
    """A debit took the balance below the threshold (decided under the team's lock, so one
    transaction sees each crossing): enqueue the recharge after commit. The trigger names the
    crossing, so a replayed task is the same recharge."""
    transaction.on_commit(lambda: recharge_enqueue(team_id, trigger), robust=True)


@transaction.atomic
def recharge_start(*, team_id: int, trigger: str, now: datetime | None = None) -> Payment | None:
    """Record an auto-recharge payment if one is due; None when it is not (off, backing off,
    one already in flight, the balance already clears the threshold, or the cap is reached)."""
    now = now or timezone.now()
    row = AutoRecharge.objects.select_for_update().filter(team_id=team_id).first()
    if row is None or not row.enabled:
        return None
    if row.retry_after and row.retry_after > now:
        return None
    if Payment.objects.filter(
        team_id=team_id, kind=PaymentKind.AUTO_RECHARGE, status__in=IN_FLIGHT
    ).exists():
        return None
    balance = (
        TeamBalance.objects.filter(team_id=team_id).values_list("balance_nano", flat=True).first()
    )
    if balance is None or balance >= row.threshold_nano:
        return None
    if _cap_reached(row, now):
        _notify_once(
            team_id,
            kind="auto_recharge_cap",
            since=_month_start(now),
            title="Auto recharge monthly cap reached",
            body=f"Auto recharge ran {row.monthly_cap} times this month, the cap you set; it "
            "resumes next month. Top up by hand or raise the cap.",
        )
        return None
    customer = PaymentCustomer.objects.filter(team_id=team_id).first()
    plan = Subscription.objects.select_related("plan").get(team_id=team_id).plan
    refill = refill_for(settings_row=row, plan=plan)
    if customer is None or not customer.payment_method_id or refill is None:
        return None
    if not plan.can_purchase_credits:  # moved to Free since it was set: Free teams never buy
        return None
    try:
        with transaction.atomic():
            return Payment.objects.create(
                team_id=team_id,
                kind=PaymentKind.AUTO_RECHARGE,
                provider=customer.provider,
                amount_cents=refill.amount_cents,
                credits_nano=refill.credits_nano,
                description=f"{refill.label}: {format_credits(refill.credits_nano)} credits",
                idempotency_key=f"recharge:{team_id}:{trigger}",
                created_at=now,
                updated_at=now,
            )
    except IntegrityError:  # this trigger already made its payment, or another is in flight
        return None


def recharge_charge(*, payment_id: int) -> str:
    """Send the charge for a recorded recharge (safe to repeat: same idempotency key) and apply
    the answer. Returns the payment's status."""
    payment = Payment.objects.get(pk=payment_id)
    if payment.status not in (PaymentStatus.PENDING,):
        return payment.status
    customer = PaymentCustomer.objects.get(team_id=payment.team_id)
    result = provider_get(payment.provider).charge_off_session(
        customer_id=customer.customer_id,
        payment_method_id=customer.payment_method_id,
        amount_cents=payment.amount_cents,
        metadata={
            "payment_id": str(payment.pk),
            "team_id": str(payment.team_id),
            "kind": "auto_recharge",
        },
        idempotency_key=payment.idempotency_key or f"recharge:{payment.pk}",
    )
    if result.status == "succeeded":
        payment_credit(
            payment_id=payment.pk, payment_intent_id=result.payment_intent_id, raw=result.raw
        )
    elif result.status == "processing":
        Payment.objects.filter(pk=payment.pk, status=PaymentStatus.PENDING).update(
            status=PaymentStatus.PROCESSING,
            payment_intent_id=result.payment_intent_id,
            updated_at=timezone.now(),
        )
    else:
        payment_fail(
            payment_id=payment.pk,
            code=result.failure_code or "failed",
            message=result.failure_message,
            payment_intent_id=result.payment_intent_id,
            status=PaymentStatus.REQUIRES_ACTION
            if result.status == "requires_action"
            else PaymentStatus.FAILED,
            raw=result.raw,
        )
    return Payment.objects.values_list("status", flat=True).get(pk=payment.pk)


def auto_recharge_run(*, team_id: int, trigger: str) -> str | None:
    payment = recharge_start(team_id=team_id, trigger=trigger)
    if payment is None:
        return None
    return recharge_charge(payment_id=payment.pk)


# ---- outcomes (called by payments.payment_credit / payment_fail, in their transaction) -------


def _notify_once(team_id: int, *, kind: str, since: datetime, title: str, body: str) -> None:
    if not Notification.objects.filter(team_id=team_id, kind=kind, created_at__gte=since).exists():
        team_notify(team_id, kind=kind, event=None, title=title, body=body, data={})


def recharge_succeeded(*, payment: Payment, now: datetime) -> None:
    AutoRecharge.objects.filter(team_id=payment.team_id).update(
        consecutive_failures=0, retry_after=None
    )
    _sync_gate(payment.team_id)
    recent = Payment.objects.filter(
        team_id=payment.team_id,
        kind=PaymentKind.AUTO_RECHARGE,
        status=PaymentStatus.SUCCEEDED,
        paid_at__gte=now - FREQUENT_WINDOW,
    ).count()
    if recent > FREQUENT_COUNT:
        _notify_once(
            payment.team_id,
            kind="auto_recharge_frequent",
            since=now - FREQUENT_WINDOW,
            title="Auto recharge is running often",
            body=f"{recent} auto recharges in the last 10 minutes. If this is not expected "
            "traffic, check your API keys and budgets, or switch auto recharge off.",
        )


def recharge_failed(*, payment: Payment, now: datetime) -> None:
    row = AutoRecharge.objects.select_for_update().get(team_id=payment.team_id)
    row.consecutive_failures += 1
    row.retry_after = now + timedelta(seconds=settings.AUTO_RECHARGE_BACKOFF_SECONDS)
    switched_off = row.consecutive_failures >= settings.AUTO_RECHARGE_MAX_FAILURES and row.enabled
    if switched_off:
        row.enabled = False
        row.disabled_reason = (
            f"Switched off after {row.consecutive_failures} failed charges in a row "
            f"({payment.failure_code})."
        )
        TeamBalance.objects.filter(team_id=payment.team_id).update(recharge_threshold_nano=None)
    row.updated_at = now
    row.save()
    _sync_gate(payment.team_id)
    needs_owner = payment.status == PaymentStatus.REQUIRES_ACTION
    body = (
        f"The ${usd(payment.amount_cents)} auto recharge "
        + ("needs you to confirm it with your bank: open Billing and finish the payment."
           if needs_owner else f"was declined: {payment.failure_message or payment.failure_code}.")
        + (" Auto recharge is now off: update your card and switch it on again."
           if switched_off else " We will not retry for an hour.")
    )  # fmt: skip
    team_notify(
        payment.team_id,
        kind="auto_recharge_failed",
        event="auto_recharge.failed",
        title="Auto recharge needs attention" if needs_owner else "Auto recharge failed",
        body=body,
        data={
            "payment_id": payment.pk,
            "amount_usd": usd(payment.amount_cents),
            "code": payment.failure_code,
            "requires_action": needs_owner,
            "consecutive_failures": row.consecutive_failures,
            "disabled": switched_off,
        },
    )


# ---- the sweep (beat, every minute) ---------------------------------------------------------


def auto_recharge_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Resend charges recorded but never answered (a worker died between recording and
    charging: the idempotency key makes the resend safe), give up on authentication requests
    left for a day, and start recharges a crossing did not (teams below their threshold)."""
    now = now or timezone.now()
    resent = started = abandoned = 0
    stuck = Payment.objects.filter(
        kind=PaymentKind.AUTO_RECHARGE,
        status=PaymentStatus.PENDING,
        payment_intent_id__isnull=True,
        created_at__lt=now - timedelta(minutes=2),
    ).values_list("pk", flat=True)[:200]
    for payment_id in stuck:
        try:
            recharge_charge(payment_id=payment_id)
            resent += 1
        except Exception:
            logger.exception("resending auto recharge %s failed", payment_id)
    for payment_id in Payment.objects.filter(
        kind=PaymentKind.AUTO_RECHARGE,
        status=PaymentStatus.REQUIRES_ACTION,
        updated_at__lt=now - timedelta(days=1),
    ).values_list("pk", flat=True)[:200]:
        abandoned += payment_fail(
            payment_id=payment_id,
            code="authentication_abandoned",
            message="Not confirmed within a day",
            status=PaymentStatus.CANCELED,
        )
    due = TeamBalance.objects.filter(
        recharge_threshold_nano__isnull=False,
        balance_nano__lt=F("recharge_threshold_nano"),
    ).values_list("team_id", "version")[:500]
    for team_id, version in due:
        try:
            started += auto_recharge_run(team_id=team_id, trigger=f"sweep:v{version}") is not None
        except Exception:
            logger.exception("auto recharge sweep for team %s failed", team_id)
    return {"resent": resent, "started": started, "abandoned": abandoned}
