"""Billing cycles and plan changes.

A subscription's cycle runs from ``current_cycle_start`` to ``current_cycle_end``, one
calendar month (``accounts.services.cycle_bounds``). When it ends, ``subscription_renew``,
holding the subscription's row lock:

1. writes the expiry of every lot past its end: what is left of the previous cycle's monthly
   credits (and of any prorated upgrade credits), through the team's book;
2. advances the cycle: new start = old end (as many months as it takes to reach now, when the
   job was down for longer than a cycle; only the current cycle is granted);
3. applies a pending downgrade;
4. grants the plan's monthly credits for the new cycle, expiring at its end (``plan_cycle_grant``,
   idempotent on ``plan_grant:<team>:<cycle start>``).

Racing workers queue on the row lock and the second finds the cycle already advanced.

Add-on, auto-recharge and adjustment lots never expire, on any plan: they roll over from cycle
to cycle, and a team that moves down to Free keeps what it bought (Free teams cannot buy more).

Plan changes (``subscription_change_plan``, owners only): an upgrade (more monthly credits, or
as many) applies at once and grants the difference for the rest of the cycle, prorated to the
microsecond and floored once, as a plan lot expiring at the cycle end; a downgrade is stored as
``pending_plan`` and applied by the renewal. Choosing the current plan again cancels a pending
downgrade.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from accounts.authentication import team_keys_forget
from accounts.models import Membership, Plan, Role, Subscription, Team
from accounts.services import audit_record, cycle_bounds
from gateway_billing.errors import ApplicationError
from ledger.models import EntryKind, LotSource
from pricing.money import NANO, format_credits

from .credits import credits_grant, lots_expire_due, plan_cycle_grant
from .subscriptions import billed_renewal

logger = logging.getLogger(__name__)

_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Renewal:
    team_id: int
    plan_code: str
    cycle_start: datetime
    cycle_end: datetime
    granted_nano: int
    expired_lots: int
    downgraded_from: str | None = None


def _lock_subscription(**lookup) -> Subscription:
    # `of=("self",)`: lock the subscription row only, not the plan rows joined to it.
    return (
        Subscription.objects.select_for_update(of=("self",))
        .select_related("team", "plan", "pending_plan")
        .get(**lookup)
    )


def _plan_changed(team_id: int) -> None:
    """The team's keys carry its plan (the gate's limits): drop them after commit."""
    transaction.on_commit(lambda: team_keys_forget(team_id))


def _renew_locked(subscription: Subscription, now: datetime) -> Renewal:
    expired = lots_expire_due(team_id=subscription.team_id)
    start, end = subscription.current_cycle_start, subscription.current_cycle_end
    while end <= now:
        start, end = cycle_bounds(end)
    downgraded_from = None
    if subscription.pending_plan_id is not None:
        downgraded_from = subscription.plan.code
        subscription.plan = subscription.pending_plan
        subscription.pending_plan = None
        audit_record(
            actor=None,
            team=subscription.team,
            action="plan.downgrade_applied",
            target=f"subscription:{subscription.team.slug}",
            before={"plan": downgraded_from},
            after={"plan": subscription.plan.code, "cycle_start": start.isoformat()},
        )
    subscription.current_cycle_start, subscription.current_cycle_end = start, end
    subscription.save(
        update_fields=["plan", "pending_plan", "current_cycle_start", "current_cycle_end"]
    )
    _plan_changed(subscription.team_id)  # the keys carry the plan and the cycle start
    entry = plan_cycle_grant(
        team=subscription.team, plan=subscription.plan, cycle_start=start, cycle_end=end
    )
    return Renewal(
        team_id=subscription.team_id,
        plan_code=subscription.plan.code,
        cycle_start=start,
        cycle_end=end,
        granted_nano=entry.amount_nano if entry else 0,
        expired_lots=expired,
        downgraded_from=downgraded_from,
    )


@transaction.atomic
def subscription_renew(*, subscription_id: int, now: datetime | None = None) -> Renewal | None:
    """Start the subscription's next cycle if the current one has ended; None when it has not
    (already renewed by another worker, or not due)."""
    now = now or timezone.now()
    subscription = _lock_subscription(pk=subscription_id)
    if subscription.current_cycle_end > now:
        return None
    # A plan billed by a payment provider renews when its invoice is paid (or falls to Free
    # when it is not, after the grace period).
    if billed_renewal(subscription, now) != "renew":
        return None
    return _renew_locked(subscription, now)


def subscription_due_ids(*, now: datetime, limit: int = 1000) -> list[int]:
    return list(
        Subscription.objects.filter(current_cycle_end__lte=now)
        .order_by("current_cycle_end", "pk")
        .values_list("pk", flat=True)[:limit]
    )


def cycles_renew_due(*, now: datetime | None = None) -> int:
    """Renew every subscription whose cycle has ended, each in its own transaction; one
    team's failure is logged and retried on the next run, never blocks the others."""
    now = now or timezone.now()
    renewed = 0
    for subscription_id in subscription_due_ids(now=now):
        try:
            renewed += subscription_renew(subscription_id=subscription_id, now=now) is not None
        except Exception:
            logger.exception("renewing subscription %s failed", subscription_id)
    return renewed


# ---- plan changes --------------------------------------------------------------------------


def upgrade_proration_nano(
    *, old: Plan, new: Plan, cycle_start: datetime, cycle_end: datetime, now: datetime
) -> int:
    """(new - old monthly credits) x remaining / cycle length, in nano-credits: exact integer
    arithmetic on microseconds, floored once."""
    difference = (new.monthly_credits - old.monthly_credits) * NANO
    if difference <= 0 or now >= cycle_end:
        return 0
    remaining = (cycle_end - max(now, cycle_start)) // _MICROSECOND
    length = (cycle_end - cycle_start) // _MICROSECOND
    return difference * remaining // length


def plan_upgrade_reference(team_id: int, cycle_start: datetime, plan_code: str) -> str:
    return f"plan_upgrade:{team_id}:{cycle_start.isoformat()}:{plan_code}"


@dataclass(frozen=True)
class PlanChange:
    subscription: Subscription
    effective: str  # "now" | "cycle_end" | "cancelled" | "unchanged"
    granted_nano: int = 0


@transaction.atomic
def subscription_change_plan(
    *,
    team: Team,
    plan: Plan,
    actor: AbstractBaseUser,
    ip: str | None = None,
    now: datetime | None = None,
) -> PlanChange:
    """Owners change the team's plan: an upgrade now (with its prorated credits), a downgrade
    at the cycle end. No payment is taken here (test mode until payments land)."""
    now = now or timezone.now()
    Team.objects.select_for_update().only("pk").get(pk=team.pk)  # the team first, as elsewhere
    role = Membership.objects.filter(team=team, user=actor).values_list("role", flat=True).first()
    if role != Role.OWNER:
        raise ApplicationError("forbidden", "Only owners change the plan.", status_code=403)
    try:
        subscription = _lock_subscription(team=team)
    except Subscription.DoesNotExist:
        raise ApplicationError(
            "no_subscription", "This team has no subscription.", status_code=409
        ) from None
    if subscription.current_cycle_end <= now:  # the change belongs to the cycle running now
        _renew_locked(subscription, now)
    old = subscription.plan
    members = Membership.objects.filter(team=team).count()
    if plan.pk != old.pk and plan.member_limit is not None and members > plan.member_limit:
        raise ApplicationError(
            "member_limit",
            f"The {plan.name} plan allows {plan.member_limit} member(s) and the team has "
            f"{members}; remove members first.",
            fields={"plan": ["Too many members for this plan."]},
        )
    before = {"plan": old.code, "pending_plan": getattr(subscription.pending_plan, "code", None)}
    granted = 0
    if plan.pk == old.pk:
        if subscription.pending_plan_id is None:
            return PlanChange(subscription=subscription, effective="unchanged")
        subscription.pending_plan = None
        effective = "cancelled"
    elif plan.monthly_credits < old.monthly_credits:
        subscription.pending_plan = plan
        effective = "cycle_end"
    else:
        subscription.plan, subscription.pending_plan = plan, None
        effective = "now"
        granted = upgrade_proration_nano(
            old=old,
            new=plan,
            cycle_start=subscription.current_cycle_start,
            cycle_end=subscription.current_cycle_end,
            now=now,
        )
    subscription.save(update_fields=["plan", "pending_plan"])
    if effective == "now":
        _plan_changed(team.pk)
    if granted:
        credits_grant(
            team_id=team.pk,
            kind=EntryKind.PLAN_GRANT,
            source=LotSource.PLAN,
            amount_nano=granted,
            reference=plan_upgrade_reference(team.pk, subscription.current_cycle_start, plan.code),
            expires_at=subscription.current_cycle_end,
            author_id=actor.pk,
            reason=f"Upgrade from {old.name} to {plan.name}: the difference for the rest of "
            f"the cycle ending {subscription.current_cycle_end:%Y-%m-%d %H:%M} UTC",
        )
    audit_record(
        actor=actor,
        team=team,
        action="plan.change",
        target=f"subscription:{team.slug}",
        before=before,
        after={
            "plan": subscription.plan.code,
            "pending_plan": getattr(subscription.pending_plan, "code", None),
            "effective": effective,
            "granted": format_credits(granted),
        },
        ip=ip,
    )
    return PlanChange(subscription=subscription, effective=effective, granted_nano=granted)
