"""Reads of the ledger, each scoped to one team: balance, entries, usage summaries,
reconciliation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDay
from django.utils import timezone

from accounts.models import Subscription
from ledger.models import (
    BUCKET_OF_SOURCE,
    Budget,
    BudgetSpend,
    CreditLot,
    LedgerEntry,
    Payment,
    TeamBalance,
    UsageEvent,
    UsageState,
)
from ledger.services.budgets import period_start


@dataclass(frozen=True)
class Balance:
    total: int
    monthly: int
    addon: int
    promotional: int
    overdraft: int
    lots: list[dict[str, Any]]

    def buckets(self) -> dict[str, int]:
        return {
            "total": self.total,
            "monthly": self.monthly,
            "addon": self.addon,
            "promotional": self.promotional,
            "overdraft": self.overdraft,
        }


def balance_get(*, team_id: int, now: datetime | None = None) -> Balance:
    """The team's balance and its live lots (expired lots whose expiry entry is not yet
    written are shown as expired: the next ledger write or the expiry job writes it)."""
    now = now or timezone.now()
    row = TeamBalance.objects.filter(team_id=team_id).values_list(
        "balance_nano", "overdraft_nano"
    ).first() or (0, 0)
    split = {"monthly": 0, "addon": 0, "promotional": 0}
    lots = []
    for lot in CreditLot.objects.filter(team_id=team_id, remaining_nano__gt=0).order_by(
        "expires_at", "priority", "created_at", "id"
    ):
        expired = lot.expires_at is not None and lot.expires_at <= now
        if not expired:
            split[BUCKET_OF_SOURCE[lot.source]] += lot.remaining_nano
        lots.append(
            {
                "id": lot.id,
                "source": lot.source,
                "bucket": BUCKET_OF_SOURCE[lot.source],
                "amount": lot.amount_nano,
                "remaining": lot.remaining_nano,
                "expires_at": lot.expires_at,
                "expired": expired,
                "created_at": lot.created_at,
            }
        )
    total = row[0]
    return Balance(total=total, overdraft=row[1], lots=lots, **split)


def ledger_entries(
    *,
    team_id: int,
    kinds: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
):
    entries = LedgerEntry.objects.filter(team_id=team_id)
    if kinds:
        entries = entries.filter(kind__in=kinds)
    if start:
        entries = entries.filter(created_at__gte=start)
    if end:
        entries = entries.filter(created_at__lt=end)
    return entries.order_by("-id")


GROUPS = {
    "model": "model__name",
    "provider": "provider",
    "project": "project__slug",
    "member": "member__user__email",
    "key": "api_key__prefix",
    "day": "day",
}


def usage_summary(
    *, team_id: int, start: datetime, end: datetime, group_by: str = "model"
) -> list[dict[str, Any]]:
    """Billed usage of the team between `start` and `end`, grouped; exact sums."""
    key = GROUPS[group_by]
    events = UsageEvent.objects.filter(team_id=team_id, occurred_at__gte=start, occurred_at__lt=end)
    if group_by == "day":
        events = events.annotate(day=TruncDay("occurred_at"))
    rows = (
        events.values(key)
        .annotate(
            events=Count("id"),
            billed_events=Count("id", filter=Q(state=UsageState.BILLED)),
            credits_nano=Sum("credits_nano", filter=Q(state=UsageState.BILLED)),
            cost_usd=Sum("cost_usd", filter=Q(state=UsageState.BILLED)),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cache_read_tokens=Sum("cache_read_tokens"),
            cache_write_tokens=Sum("cache_write_tokens"),
        )
        .order_by(key)
    )
    out = []
    for row in rows:
        group = row.pop(key)
        if isinstance(group, datetime | date):
            group = group.date().isoformat() if isinstance(group, datetime) else group.isoformat()
        row["credits_nano"] = row["credits_nano"] or 0
        row["cost_usd"] = row["cost_usd"] or Decimal(0)
        out.append({"group": group, **row})
    return out


@dataclass(frozen=True)
class Drift:
    team_id: int
    kind: str
    expected: int
    actual: int
    detail: str = ""


def reconciliation_drifts(*, team_ids: list[int] | None = None) -> list[Drift]:
    """Recompute every balance from its entries and every lot from its allocations."""
    drifts: list[Drift] = []
    entry_sums = dict(
        LedgerEntry.objects.values("team_id")
        .annotate(total=Sum("amount_nano"))
        .values_list("team_id", "total")
    )
    balances = TeamBalance.objects.all()
    if team_ids is not None:
        balances = balances.filter(team_id__in=team_ids)
    seen = set()
    for balance in balances:
        seen.add(balance.team_id)
        expected = entry_sums.get(balance.team_id, 0)
        if balance.balance_nano != expected:
            drifts.append(Drift(balance.team_id, "balance", expected, balance.balance_nano))
    for team_id, total in entry_sums.items():
        if team_id not in seen and (team_ids is None or team_id in team_ids) and total:
            drifts.append(Drift(team_id, "balance", total, 0, "no balance row"))

    lot_moves: dict[int, int] = {}
    overdraft_moves: dict[int, int] = {}
    entries = LedgerEntry.objects.values_list("team_id", "allocations")
    if team_ids is not None:
        entries = entries.filter(team_id__in=team_ids)
    for team_id, allocations in entries.iterator(chunk_size=5000):
        for move in allocations:
            if "lot" in move:
                lot_moves[move["lot"]] = lot_moves.get(move["lot"], 0) + move["nano"]
            else:
                overdraft_moves[team_id] = overdraft_moves.get(team_id, 0) + move["overdraft"]
    lots = CreditLot.objects.all()
    if team_ids is not None:
        lots = lots.filter(team_id__in=team_ids)
    for lot_id, team_id, remaining in lots.values_list("id", "team_id", "remaining_nano"):
        expected = lot_moves.get(lot_id, 0)
        if remaining != expected:
            drifts.append(Drift(team_id, "lot", expected, remaining, f"lot {lot_id}"))
    for balance in balances:
        expected = overdraft_moves.get(balance.team_id, 0)
        if balance.overdraft_nano != expected:
            drifts.append(Drift(balance.team_id, "overdraft", expected, balance.overdraft_nano))
    return drifts


def budget_list(*, team_id: int, now: datetime | None = None) -> list[dict[str, Any]]:
    """The team's budgets with the spend of their current period (two queries)."""
    now = now or timezone.now()
    budgets = list(
        Budget.objects.filter(team_id=team_id)
        .select_related("team", "project", "member__user", "api_key")
        .order_by("id")
    )
    cycle_start = (
        Subscription.objects.filter(team_id=team_id)
        .values_list("current_cycle_start", flat=True)
        .first()
    )
    starts = {
        b.id: period_start(
            period=b.period, at=now, time_zone=b.team.time_zone, cycle_start=cycle_start
        )
        for b in budgets
    }
    spent = {
        (budget_id, start): value
        for budget_id, start, value in BudgetSpend.objects.filter(budget__team_id=team_id)
        .filter(period_start__in=set(starts.values()))
        .values_list("budget_id", "period_start", "spent_nano")
    }
    return [{"budget": b, "period_start": starts[b.id], "spent": spent.get((b.id, starts[b.id]), 0)}
            for b in budgets]  # fmt: skip


def payment_list(*, team_id: int) -> QuerySet[Payment]:
    """The team's payments (the caller orders and pages them)."""
    return Payment.objects.filter(team_id=team_id)
