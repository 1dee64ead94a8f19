"""Helpers for the plan-subscription tests: Stripe invoices as Stripe builds them (the new
``parent.subscription_details`` shape and the old ``subscription`` + ``subscription_details``
one), moving a team's cycle into the past, and reading its ledger."""

from __future__ import annotations

import itertools
import math
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Subscription, Team
from accounts.services import cycle_bounds
from ledger.models import CreditLot, EntryKind, LedgerEntry, LotSource, TeamBalance
from ledger.services.book import Book

from .stripe_server import event

_ids = itertools.count(1)


def second(moment: datetime | None = None) -> datetime:
    """Stripe's timestamps are whole seconds."""
    return (moment or timezone.now()).replace(microsecond=0)


def invoice(
    team: Team,
    *,
    sub: str,
    plan: str,
    start: datetime,
    end: datetime | None = None,
    amount: int = 900,
    quantity: int = 1,
    invoice_id: str | None = None,
    billing_reason: str = "subscription_create",
    shape: str = "new",
    extra_lines: list[dict] | None = None,
) -> dict:
    """An invoice of subscription `sub` (whose metadata names the team and the plan) for the
    period from `start` (one calendar month unless `end`)."""
    end = end or cycle_bounds(start)[1]
    metadata = {"team_id": str(team.pk), "plan": plan, "quantity": str(quantity)}
    period = {"start": int(start.timestamp()), "end": int(end.timestamp())}
    line: dict = {
        "id": f"il_test_{next(_ids)}",
        "object": "line_item",
        "amount": amount,
        "currency": "usd",
        "period": period,
        "quantity": quantity,
    }
    obj: dict = {
        "id": invoice_id or f"in_test_{next(_ids)}",
        "object": "invoice",
        "amount_due": amount,
        "amount_paid": amount,
        "billing_reason": billing_reason,
        "currency": "usd",
        "customer": f"cus_test_{team.pk}",
        "hosted_invoice_url": "https://invoice.stripe.test/i/1",
        "status": "paid",
    }
    if shape == "new":  # API 2025-03-31 and later
        line["parent"] = {
            "type": "subscription_item_details",
            "subscription_item_details": {"subscription": sub, "proration": False},
        }
        obj["parent"] = {
            "type": "subscription_details",
            "subscription_details": {"subscription": sub, "metadata": metadata},
        }
    else:
        line.update(type="subscription", proration=False, subscription=sub)
        obj.update(subscription=sub, subscription_details={"metadata": metadata})
    obj["lines"] = {"object": "list", "data": [*(extra_lines or []), line], "has_more": False}
    return obj


def proration_line(*, sub: str, start: datetime, end: datetime, amount: int, quantity: int):
    """A proration line (new shape): a seat added mid-cycle, billed on the next invoice."""
    return {
        "id": f"il_test_{next(_ids)}",
        "object": "line_item",
        "amount": amount,
        "period": {"start": int(start.timestamp()), "end": int(end.timestamp())},
        "quantity": quantity,
        "parent": {
            "type": "invoice_item_details",
            "invoice_item_details": {"subscription": sub, "proration": True},
        },
    }


def invoice_paid(team: Team, **kwargs) -> dict:
    return event("invoice.paid", invoice(team, **kwargs))


def invoice_failed(team: Team, **kwargs) -> dict:
    obj = invoice(team, **kwargs)
    obj.update(status="open", amount_paid=0)
    return event("invoice.payment_failed", obj)


def subscription_object(team: Team, *, sub: str, plan: str, **fields) -> dict:
    return {
        "id": sub,
        "object": "subscription",
        "status": "active",
        "cancel_at_period_end": False,
        "metadata": {"team_id": str(team.pk), "plan": plan},
        "items": {"object": "list", "data": [{"id": f"si_{sub}", "quantity": 1}]},
        **fields,
    }


def rewind(team: Team, delta: timedelta) -> Subscription:
    """Move the team's cycle (and its plan lots' expiry, and a failed payment's date) back by
    `delta`, as if that much time had passed."""
    subscription = Subscription.objects.get(team=team)
    subscription.current_cycle_start -= delta
    subscription.current_cycle_end -= delta
    if subscription.past_due_since:
        subscription.past_due_since -= delta
    subscription.save(update_fields=["current_cycle_start", "current_cycle_end", "past_due_since"])
    CreditLot.objects.filter(
        team_id=team.pk, source=LotSource.PLAN, expires_at__isnull=False
    ).update(expires_at=F("expires_at") - delta)
    return subscription


def end_cycle(team: Team, *, ago: timedelta = timedelta(hours=1)) -> Subscription:
    """Rewind so the current cycle ended `ago` (or a moment more: whole seconds, as Stripe's
    periods are)."""
    subscription = Subscription.objects.get(team=team)
    delta = subscription.current_cycle_end - timezone.now() + ago
    return rewind(team, timedelta(seconds=math.ceil(delta.total_seconds())))


def spend(team: Team, nano: int) -> None:
    with transaction.atomic():
        book = Book.open(team.pk)
        allocations = book.spend(nano)
        book.post(EntryKind.USAGE, -nano, allocations, f"test-usage:{team.pk}:{next(_ids)}")
        book.close()


def balance(team: Team) -> int:
    return TeamBalance.objects.get(team=team).balance_nano


def entries(team: Team, kind: str) -> list[int]:
    """The amounts of the team's entries of one kind, oldest first."""
    return list(
        LedgerEntry.objects.filter(team=team, kind=kind)
        .order_by("id")
        .values_list("amount_nano", flat=True)
    )
