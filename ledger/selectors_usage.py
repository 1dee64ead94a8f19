"""Reads behind the team's usage and ledger pages, each scoped to one team.

Everything is grouped and summed by the database (GROUP BY over the team's events of a time
range, on the (team, occurred_at) index); Python only shapes the few aggregated rows. Days are
the team's local days (``Team.time_zone``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from ledger.models import LedgerEntry, UsageEvent, UsageState

# What the usage table and chart group by: the id column and the columns of its label.
DIMENSIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "model": ("model_id", ("model__name",)),
    "project": ("project_id", ("project__slug", "project__name")),
    "member": ("member_id", ("member__user__email",)),
    "key": ("api_key_id", ("api_key__prefix", "api_key__name")),
}
NO_GROUP = {
    "model": "(unknown model)",
    "project": "(no project)",
    "member": "(no member)",
    "key": "(no key)",
}
OTHER = "Other"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_day_start(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def group_label(group_by: str, row: dict[str, Any]) -> str:
    values = [row[column] for column in DIMENSIONS[group_by][1]]
    if values[0] is None:
        return NO_GROUP[group_by]
    if group_by == "project":
        slug, name = values
        return f"{name} ({slug})" if name and name != slug else slug
    if group_by == "key":
        prefix, name = values
        return f"{name} ({prefix}…)" if name else f"{prefix}…"
    return str(values[0])


# ---- the usage table -------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageRow:
    label: str
    events: int
    billed_events: int
    unrated_events: int
    credits_nano: int
    cost_usd: Decimal
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int


SUMMED = (
    "events",
    "billed_events",
    "unrated_events",
    "credits_nano",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
)


def usage_table(*, team_id: int, start: datetime, end: datetime, group_by: str) -> list[UsageRow]:
    """The team's usage between `start` (inclusive) and `end` (exclusive), one row per group,
    the most credits first. One query. Credits and cost count billed events only."""
    id_column, label_columns = DIMENSIONS[group_by]
    rows = (
        UsageEvent.objects.filter(team_id=team_id, occurred_at__gte=start, occurred_at__lt=end)
        .values(id_column, *label_columns)
        .annotate(
            events=Count("id"),
            billed_events=Count("id", filter=Q(state=UsageState.BILLED)),
            unrated_events=Count("id", filter=Q(state=UsageState.UNRATED)),
            credits_nano=Sum("credits_nano", filter=Q(state=UsageState.BILLED), default=0),
            cost_usd=Sum("cost_usd", filter=Q(state=UsageState.BILLED), default=Decimal(0)),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cache_read_tokens=Sum("cache_read_tokens"),
            cache_write_tokens=Sum("cache_write_tokens"),
        )
        .order_by(F("credits_nano").desc(), *label_columns)
    )
    return [
        UsageRow(label=group_label(group_by, row), **{name: row[name] for name in SUMMED})
        for row in rows
    ]


def usage_total(rows: list[UsageRow]) -> UsageRow:
    """The total line of a table (sums of the already grouped rows: exact integers/Decimals)."""
    return UsageRow(
        label="Total",
        **{name: sum((getattr(r, name) for r in rows), Decimal(0) if name == "cost_usd" else 0)
           for name in SUMMED},
    )  # fmt: skip


# ---- the chart: credits per day, stacked -----------------------------------------------------


@dataclass(frozen=True)
class Series:
    label: str
    nano: list[int]  # one value per day


@dataclass(frozen=True)
class DailyUsage:
    days: list[date]
    stacks: dict[str, list[Series]] = field(default_factory=dict)


def usage_daily(
    *,
    team_id: int,
    time_zone: str,
    days: int = 30,
    stacks: tuple[str, ...] = ("model", "project", "member"),
    max_series: int = 8,
    now: datetime | None = None,
) -> DailyUsage:
    """Billed credits per local day over the last `days` days (today included), stacked by each
    dimension of `stacks`: one GROUP BY query per dimension. The largest `max_series - 1` groups
    keep their own series when there are more than `max_series`; the rest are summed as Other."""
    tz = zone(time_zone)
    today = (now or timezone.now()).astimezone(tz).date()
    day_list = [today - timedelta(days=days - 1 - i) for i in range(days)]
    index = {day: i for i, day in enumerate(day_list)}
    billed = UsageEvent.objects.filter(
        team_id=team_id,
        occurred_at__gte=local_day_start(day_list[0], tz),
        occurred_at__lt=local_day_start(today + timedelta(days=1), tz),
        state=UsageState.BILLED,
    ).annotate(day=TruncDate("occurred_at", tzinfo=tz))
    result = DailyUsage(days=day_list)
    for stack in stacks:
        id_column, label_columns = DIMENSIONS[stack]
        rows = (
            billed.values("day", id_column, *label_columns)
            .annotate(nano=Sum("credits_nano", default=0))
            .order_by()
        )
        by_group: dict[Any, tuple[str, list[int]]] = {}
        for row in rows:
            _, values = by_group.setdefault(row[id_column], (group_label(stack, row), [0] * days))
            if row["day"] in index:
                values[index[row["day"]]] += row["nano"]
        ranked = sorted(by_group.values(), key=lambda item: (-sum(item[1]), item[0]))
        if len(ranked) > max_series:
            keep, rest = ranked[: max_series - 1], ranked[max_series - 1 :]
            other = [sum(values[i] for _, values in rest) for i in range(days)]
            ranked = [*keep, (OTHER, other)]
        result.stacks[stack] = [Series(label=label, nano=values) for label, values in ranked]
    return result


# ---- ledger history --------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryPage:
    entries: list[LedgerEntry]
    has_newer: bool
    has_older: bool

    @property
    def first_id(self) -> int | None:
        return self.entries[0].id if self.entries else None

    @property
    def last_id(self) -> int | None:
        return self.entries[-1].id if self.entries else None


def ledger_page(
    *,
    team_id: int,
    kinds: list[str] | None = None,
    before: int | None = None,
    after: int | None = None,
    size: int = 50,
) -> EntryPage:
    """A page of the team's entries, newest first, by keyset on the (team, id) index: entries
    older than `before`, or newer than `after`. At most three queries, whatever the ledger's
    size (no COUNT over the whole ledger)."""
    entries = LedgerEntry.objects.filter(team_id=team_id).select_related("price__model")
    if kinds:
        entries = entries.filter(kind__in=kinds)
    if after is not None:
        rows = list(entries.filter(id__gt=after).order_by("id")[: size + 1])
        has_newer = len(rows) > size
        rows = rows[:size][::-1]
        has_older = bool(rows) and entries.filter(id__lt=rows[-1].id).exists()
    else:
        page = entries.filter(id__lt=before) if before is not None else entries
        rows = list(page.order_by("-id")[: size + 1])
        has_older = len(rows) > size
        rows = rows[:size]
        has_newer = before is not None and bool(rows) and entries.filter(id__gt=rows[0].id).exists()
    return EntryPage(entries=rows, has_newer=has_newer, has_older=has_older)
