"""Finance reports across every team: revenue, credits issued and consumed, liability,
provider cost, unrated usage, overdrafts, reconciliation status and the ledger export.

Staff only (the views check); not tenant-scoped on purpose. Every figure is aggregated in the
database (GROUP BY, days truncated in UTC) with one query per report, so a page costs the same
whatever the number of teams, entries or events. Money stays exact: cents and nano-credits are
integers, USD a Decimal.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

from django.core.cache import cache
from django.db.models import Count, Min, Q, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from ledger.models import (
    CreditLot,
    EntryKind,
    LedgerEntry,
    LotSource,
    Payment,
    PaymentKind,
    PaymentStatus,
    TeamBalance,
    UsageEvent,
    UsageState,
)
from ledger.services.reconcile import LAST_RUN_KEY
from pricing.money import NANO, cents_to_usd

# Payments that took money: a refund keeps the payment in the figures, as a negative amount.
REVENUE_STATUSES = (
    PaymentStatus.SUCCEEDED,
    PaymentStatus.PARTIALLY_REFUNDED,
    PaymentStatus.REFUNDED,
)
EXPIRY_KINDS = (EntryKind.PLAN_EXPIRY, EntryKind.PROMO_EXPIRY)
MAX_PERIOD_DAYS = 366
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Period:
    """Whole UTC days, both ends included."""

    first: date
    last: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time.min, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """Exclusive: midnight after the last day."""
        return datetime.combine(self.last + timedelta(days=1), time.min, tzinfo=UTC)

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    @classmethod
    def last_days(cls, count: int, *, today: date | None = None) -> Period:
        today = today or timezone.now().astimezone(UTC).date()
        return cls(first=today - timedelta(days=count - 1), last=today)


def _day(expression: str | Coalesce) -> TruncDate:
    return TruncDate(expression, tzinfo=UTC)


# ---- revenue ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RevenueDay:
    day: date
    topups_cents: int = 0
    auto_recharges_cents: int = 0
    subscriptions_cents: int = 0
    refunds_cents: int = 0  # negative (or zero)
    payments: int = 0

    @property
    def gross_cents(self) -> int:
        return self.topups_cents + self.auto_recharges_cents + self.subscriptions_cents

    @property
    def net_cents(self) -> int:
        return self.gross_cents + self.refunds_cents

    @property
    def net_usd(self) -> Decimal:
        return cents_to_usd(self.net_cents)


@dataclass(frozen=True, slots=True)
class Revenue:
    days: list[RevenueDay]
    total: RevenueDay  # day = the period's first day


def revenue_by_day(*, period: Period) -> Revenue:
    """Money taken per UTC day of payment (one query). Refunds are negative and counted on the
    day of the payment they refund: a payment records how much was refunded, not when."""
    paid = Coalesce("paid_at", "created_at")
    rows = (
        Payment.objects.filter(status__in=REVENUE_STATUSES)
        .annotate(paid=paid)
        .filter(paid__gte=period.start, paid__lt=period.end)
        .annotate(day=_day(paid))
        .values("day")
        .annotate(
            topups=Sum("amount_cents", filter=Q(kind=PaymentKind.TOPUP), default=0),
            auto=Sum("amount_cents", filter=Q(kind=PaymentKind.AUTO_RECHARGE), default=0),
            subscriptions=Sum("amount_cents", filter=Q(kind=PaymentKind.SUBSCRIPTION), default=0),
            refunds=Sum("refunded_cents", default=0),
            payments=Count("id"),
        )
        .order_by("day")
    )
    by_day = {
        row["day"]: RevenueDay(
            day=row["day"],
            topups_cents=row["topups"],
            auto_recharges_cents=row["auto"],
            subscriptions_cents=row["subscriptions"],
            refunds_cents=-row["refunds"],
            payments=row["payments"],
        )
        for row in rows
    }
    days = [by_day.get(day) or RevenueDay(day=day) for day in period.days]
    total = RevenueDay(
        day=period.first,
        topups_cents=sum(d.topups_cents for d in days),
        auto_recharges_cents=sum(d.auto_recharges_cents for d in days),
        subscriptions_cents=sum(d.subscriptions_cents for d in days),
        refunds_cents=sum(d.refunds_cents for d in days),
        payments=sum(d.payments for d in days),
    )
    return Revenue(days=days, total=total)


# ---- credits issued and consumed ------------------------------------------------------------


@dataclass(slots=True)
class CreditsDay:
    day: date
    issued: int = 0  # every credit in (grants, purchases, positive corrections)
    consumed: int = 0  # usage, negative (or zero)
    expired: int = 0  # plan and promotional expiries, negative (or zero)
    other_out: int = 0  # negative corrections (adjustments, refunds, reversals)

    @property
    def net(self) -> int:
        return self.issued + self.consumed + self.expired + self.other_out


@dataclass(slots=True)
class KindTotal:
    kind: str
    label: str
    credits_in: int = 0
    credits_out: int = 0
    entries: int = 0


@dataclass(slots=True)
class CreditsFlow:
    days: list[CreditsDay]
    kinds: list[KindTotal]
    total: CreditsDay = field(default_factory=lambda: CreditsDay(day=date.min))


def credits_by_day(*, period: Period) -> CreditsFlow:
    """Ledger entries of the period, per UTC day and kind, in and out (one query)."""
    rows = (
        LedgerEntry.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
        .annotate(day=_day("created_at"))
        .values("day", "kind")
        .annotate(
            credits_in=Sum("amount_nano", filter=Q(amount_nano__gt=0), default=0),
            credits_out=Sum("amount_nano", filter=Q(amount_nano__lt=0), default=0),
            entries=Count("id"),
        )
        .order_by()
    )
    by_day = {day: CreditsDay(day=day) for day in period.days}
    kinds = {kind.value: KindTotal(kind=kind.value, label=kind.label) for kind in EntryKind}
    for row in rows:
        day, kind = by_day[row["day"]], row["kind"]
        day.issued += row["credits_in"]
        if kind == EntryKind.USAGE:
            day.consumed += row["credits_out"]
        elif kind in EXPIRY_KINDS:
            day.expired += row["credits_out"]
        else:
            day.other_out += row["credits_out"]
        total = kinds.setdefault(kind, KindTotal(kind=kind, label=kind))
        total.credits_in += row["credits_in"]
        total.credits_out += row["credits_out"]
        total.entries += row["entries"]
    days = list(by_day.values())
    total = CreditsDay(
        day=period.first,
        issued=sum(d.issued for d in days),
        consumed=sum(d.consumed for d in days),
        expired=sum(d.expired for d in days),
        other_out=sum(d.other_out for d in days),
    )
    return CreditsFlow(days=days, kinds=[k for k in kinds.values() if k.entries], total=total)


# ---- liability -------------------------------------------------------------------------------


def usd_of_credits(nano: int, *, credits_per_usd: Decimal) -> Decimal:
    """Credits valued in USD at `credits_per_usd`, rounded half-even to the cent."""
    with localcontext() as ctx:
        ctx.prec = 60
        return (Decimal(nano) / NANO / credits_per_usd).quantize(CENT, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class Liability:
    credits_nano: int  # sum of positive team balances
    teams: int  # teams holding a positive balance
    usd: Decimal  # credits_nano valued at credits_per_usd, to the cent
    by_source: dict[str, int]  # live (unexpired) lots by source: what the credits are


def liability_get(*, credits_per_usd: Decimal, now: datetime | None = None) -> Liability:
    """Credits the teams hold and could still spend (two queries)."""
    now = now or timezone.now()
    totals = TeamBalance.objects.filter(balance_nano__gt=0).aggregate(
        credits=Sum("balance_nano", default=0), teams=Count("team_id")
    )
    lots = (
        CreditLot.objects.filter(remaining_nano__gt=0)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .values("source")
        .annotate(remaining=Sum("remaining_nano"))
        .order_by()
    )
    by_source = {source.value: 0 for source in LotSource}
    for row in lots:
        by_source[row["source"]] = row["remaining"]
    return Liability(
        credits_nano=totals["credits"],
        teams=totals["teams"],
        usd=usd_of_credits(totals["credits"], credits_per_usd=credits_per_usd),
        by_source=by_source,
    )


# ---- provider cost ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelCost:
    provider: str
    model: str
    cost_usd: Decimal
    credits_nano: int
    events: int


@dataclass(frozen=True, slots=True)
class ProviderCost:
    provider: str
    cost_usd: Decimal
    credits_nano: int
    events: int
    models: list[ModelCost]


def provider_costs(*, period: Period) -> list[ProviderCost]:
    """What the billed usage of the period cost us at the providers, by provider and model
    (one query): the sum of each event's exact USD cost."""
    rows = (
        UsageEvent.objects.filter(
            state=UsageState.BILLED, occurred_at__gte=period.start, occurred_at__lt=period.end
        )
        .values("provider", "model__name")
        .annotate(
            cost=Sum("cost_usd", default=Decimal(0)),
            credits=Sum("credits_nano", default=0),
            events=Count("id"),
        )
        .order_by("provider", "model__name")
    )
    grouped: dict[str, list[ModelCost]] = {}
    for row in rows:
        grouped.setdefault(row["provider"], []).append(
            ModelCost(
                provider=row["provider"],
                model=row["model__name"],
                cost_usd=row["cost"],
                credits_nano=row["credits"],
                events=row["events"],
            )
        )
    return [
        ProviderCost(
            provider=provider,
            cost_usd=sum((m.cost_usd for m in models), Decimal(0)),
            credits_nano=sum(m.credits_nano for m in models),
            events=sum(m.events for m in models),
            models=sorted(models, key=lambda m: (-m.cost_usd, m.model)),
        )
        for provider, models in grouped.items()
    ]


# ---- unrated usage, overdrafts, reconciliation ----------------------------------------------


def unrated_usage() -> list[dict[str, Any]]:
    """Usage waiting for a price, by model: events, teams, the oldest (one query, on the
    partial index of unrated events)."""
    return list(
        UsageEvent.objects.filter(state=UsageState.UNRATED)
        .values("provider", "model__name")
        .annotate(
            events=Count("id"),
            teams=Count("team_id", distinct=True),
            oldest=Min("occurred_at"),
        )
        .order_by("-events", "model__name")
    )


@dataclass(frozen=True, slots=True)
class Overdrafts:
    count: int
    rows: list[TeamBalance]  # the deepest first, at most `limit`


def overdraft_teams(*, limit: int = 50) -> Overdrafts:
    """Teams that spent beyond their credits (an overdraft, or a negative balance)."""
    queryset = TeamBalance.objects.filter(Q(overdraft_nano__gt=0) | Q(balance_nano__lt=0))
    rows = list(
        queryset.select_related("team").order_by("balance_nano", "-overdraft_nano")[: limit + 1]
    )
    count = len(rows) if len(rows) <= limit else queryset.count()
    return Overdrafts(count=count, rows=rows[:limit])


def reconciliation_last() -> dict[str, Any] | None:
    """The last reconciliation run (nightly job, `manage.py reconcile`, or the dashboard's
    button), from the cache: recomputing reads every entry, too slow for a page view."""
    last = cache.get(LAST_RUN_KEY)
    if not last:
        return None
    return {**last, "at": datetime.fromisoformat(last["at"])}


# ---- the ledger as CSV -----------------------------------------------------------------------

LEDGER_CSV_COLUMNS = (
    "id",
    "created_at",
    "team",
    "kind",
    "credits",
    "balance_after",
    "reference",
    "price_version",
    "reason",
    "author",
)


def ledger_rows(*, period: Period, chunk_size: int = 2000) -> Iterator[tuple]:
    """Every entry of the period in id order, as plain values (one streamed query):
    (id, created_at, team slug, kind, amount_nano, balance_after_nano, reference, price id,
    reason, author email)."""
    return (
        LedgerEntry.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
        .order_by("id")  # the primary key follows time (created_at is set at insert)
        .values_list(
            "id",
            "created_at",
            "team__slug",
            "kind",
            "amount_nano",
            "balance_after_nano",
            "reference",
            "price_id",
            "reason",
            "author__email",
        )
        .iterator(chunk_size=chunk_size)
    )
