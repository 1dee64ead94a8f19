"""Budgets: limits on a scope of the team (the team, a project, a member, an API key) per
period (billing cycle, calendar month or day in the team's time zone), with soft alert
thresholds and an optional hard cap.

Spend is live: every billed usage event adds to its budgets' `BudgetSpend` row of the event's
period, in the transaction that bills it and under the team's lock, so a threshold crossing is
seen exactly once. A new period is a new row: nothing that belongs to the current period is ever
reset. The gate (ratelimits) refuses an authorize for a hard-capped budget whose committed spend
plus the request's worst case would pass its limit.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction

from accounts.authentication import team_keys_forget
from accounts.models import ApiKey, Membership, Project, Subscription, Team
from accounts.services import audit_record
from gateway_billing.errors import ApplicationError
from ledger.models import Budget, BudgetPeriod, BudgetScope, TeamBalance
from pricing.money import format_credits

from .alerts import team_notify
from .book import Book

# Called after commit with (team_id, [(budget_id, period_start, spent_nano)]): the gate mirrors
# committed budget spend this way (registered by ratelimits at start-up).
after_budget_commit: list[Callable[[int, list[tuple[int, datetime, int]]], None]] = []


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _month_back(at: datetime) -> datetime:
    year, month = (at.year - 1, 12) if at.month == 1 else (at.year, at.month - 1)
    return at.replace(year=year, month=month, day=min(at.day, calendar.monthrange(year, month)[1]))


def period_start(
    *, period: str, at: datetime, time_zone: str, cycle_start: datetime | None
) -> datetime:
    """The start of the period containing `at`: local midnight or the local first of the month
    in the team's time zone, or the billing cycle's start."""
    if period == BudgetPeriod.CYCLE and cycle_start is not None:
        start = cycle_start
        while at < start:  # a late event of an earlier cycle
            start = _month_back(start)
        return start
    local = at.astimezone(_zone(time_zone))
    day = local.date() if period == BudgetPeriod.DAY else local.date().replace(day=1)
    return datetime.combine(day, time(0), tzinfo=local.tzinfo)


def matches(budget: Budget | dict, *, project_id: int | None, member_id: int | None,
            key_id: int | None) -> bool:  # fmt: skip
    get = budget.get if isinstance(budget, dict) else lambda f: getattr(budget, f)
    scope = get("scope")
    if scope == BudgetScope.TEAM:
        return True
    if scope == BudgetScope.PROJECT:
        return project_id is not None and get("project_id") == project_id
    if scope == BudgetScope.MEMBER:
        return member_id is not None and get("member_id") == member_id
    return key_id is not None and get("api_key_id") == key_id


_UPSERT = (
    "INSERT INTO ledger_budgetspend (budget_id, period_start, spent_nano) VALUES (%s, %s, %s) "
    "ON CONFLICT (budget_id, period_start) DO UPDATE "
    "SET spent_nano = ledger_budgetspend.spent_nano + excluded.spent_nano RETURNING spent_nano"
)


def budgets_after_debit(
    *, book: Book, results: Iterable[Any], member_id: int | None, key_id: int | None,
    notify: bool = True,
) -> list[tuple[int, datetime, int]]:  # fmt: skip
    """Add billed usage to its budgets and fire the crossed thresholds (call before close).
    Returns (budget id, period start, spent after) per period touched; with `notify` the
    after_budget_commit hooks get them after commit (without, the caller passes them on)."""
    if not book.has_budgets:
        return []
    budgets = list(Budget.objects.filter(team_id=book.team_id).select_related("team"))
    if not budgets:
        return []
    cycle_start = None
    if any(b.period == BudgetPeriod.CYCLE for b in budgets):
        cycle_start = (
            Subscription.objects.filter(team_id=book.team_id)
            .values_list("current_cycle_start", flat=True)
            .first()
        )
    deltas: dict[tuple[int, datetime], int] = {}
    by_id = {b.id: b for b in budgets}
    for r in results:
        if not r.credits_nano or r.usage_event_id is None or r.state != "billed":
            continue
        for b in budgets:
            if matches(b, project_id=r.project_id, member_id=member_id, key_id=key_id):
                start = period_start(period=b.period, at=r.occurred_at,
                                     time_zone=b.team.time_zone, cycle_start=cycle_start)  # fmt: skip
                deltas[(b.id, start)] = deltas.get((b.id, start), 0) + r.credits_nano
    mirrored: list[tuple[int, datetime, int]] = []
    with connection.cursor() as cursor:
        for (budget_id, start), delta in deltas.items():
            cursor.execute(_UPSERT, [budget_id, connection.ops.adapt_datetimefield_value(start),
                                     delta])  # fmt: skip
            after = cursor.fetchone()[0]
            mirrored.append((budget_id, start, after))
            _alert(by_id[budget_id], before=after - delta, after=after, start=start)
    if notify and mirrored and after_budget_commit:
        team_id = book.team_id
        transaction.on_commit(lambda: [hook(team_id, mirrored) for hook in after_budget_commit])
    return mirrored


def _alert(budget: Budget, *, before: int, after: int, start: datetime) -> None:
    limit = budget.limit_nano
    data = {"budget": budget.id, "name": budget.name, "scope": budget.scope,
            "period": budget.period, "period_start": start.isoformat(),
            "limit": format_credits(limit), "spent": format_credits(after)}  # fmt: skip
    for percent in sorted(set(budget.thresholds)):
        if before * 100 < limit * percent <= after * 100:
            team_notify(
                budget.team_id, kind=f"budget_{budget.id}_{percent}",
                event="budget.threshold_reached",
                title=f"Budget {budget.name}: {percent} % used",
                body=f"{format_credits(after)} of {format_credits(limit)} credits spent this "
                f"{budget.get_period_display().lower()}.",
                data={**data, "percent": percent},
            )  # fmt: skip
    if before < limit <= after:
        team_notify(
            budget.team_id, kind=f"budget_{budget.id}_exceeded", event="budget.exceeded",
            title=f"Budget {budget.name} exceeded",
            body=f"{format_credits(after)} of {format_credits(limit)} credits spent"
            + ("; requests in this scope are refused until the period ends." if budget.hard_cap else "."),
            data=data,
        )  # fmt: skip


# ---- managing budgets ------------------------------------------------------------------------

FIELDS = ("name", "scope", "project", "member", "api_key", "period", "limit_nano", "thresholds",
          "hard_cap")  # fmt: skip


def _validate(team: Team, values: dict[str, Any]) -> dict[str, Any]:
    def invalid(field: str, message: str) -> ApplicationError:
        return ApplicationError("invalid", message, fields={field: [message]})

    if not str(values.get("name") or "").strip():
        raise invalid("name", "A budget needs a name.")
    if values.get("scope") not in BudgetScope.values:
        raise invalid("scope", f"scope must be one of {', '.join(BudgetScope.values)}.")
    if values.get("period") not in BudgetPeriod.values:
        raise invalid("period", f"period must be one of {', '.join(BudgetPeriod.values)}.")
    if not isinstance(values.get("limit_nano"), int) or values["limit_nano"] <= 0:
        raise invalid("limit", "limit must be a positive number of credits.")
    thresholds = values.get("thresholds") or []
    if not isinstance(thresholds, list) or any(
        isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 100 for t in thresholds
    ):
        raise invalid("thresholds", "thresholds are whole percentages from 1 to 100.")
    values["thresholds"] = sorted(set(thresholds))
    values["hard_cap"] = bool(values.get("hard_cap"))
    targets = {"project": (Project, "project"), "member": (Membership, "member"),
               "key": (ApiKey, "api_key")}  # fmt: skip
    for field in ("project", "member", "api_key"):
        values.setdefault(field, None)
    scope = values["scope"]
    for scope_name, (model, field) in targets.items():
        target = values.get(field)
        if scope == scope_name:
            if target is None:
                raise invalid(field, f"A {scope_name} budget names its {scope_name}.")
            if isinstance(target, int):
                target = model.objects.filter(team=team, pk=target).first()
            if target is None or target.team_id != team.id:
                raise ApplicationError("not_found", f"No such {scope_name} in this team.",
                                       fields={field: ["Not found."]}, status_code=404)  # fmt: skip
            values[field] = target
        else:
            values[field] = None
    return values


def _changed(team: Team) -> None:
    has = Budget.objects.filter(team=team).exists()
    Book.open(team.id).close()  # the balance row exists and is locked
    TeamBalance.objects.filter(team_id=team.id).update(has_budgets=has)
    team_id = team.id
    transaction.on_commit(lambda: team_keys_forget(team_id))  # keys carry the hard caps


def _snapshot(budget: Budget) -> dict[str, Any]:
    return {"name": budget.name, "scope": budget.scope, "period": budget.period,
            "limit": format_credits(budget.limit_nano), "thresholds": budget.thresholds,
            "hard_cap": budget.hard_cap}  # fmt: skip


@transaction.atomic
def budget_create(*, team: Team, actor: AbstractBaseUser, **values: Any) -> Budget:
    budget = Budget.objects.create(team=team, **_validate(team, values))
    _changed(team)
    audit_record(actor=actor, team=team, action="budget.create", target=f"budget:{budget.pk}",
                 after=_snapshot(budget))  # fmt: skip
    return budget


@transaction.atomic
def budget_update(*, budget: Budget, actor: AbstractBaseUser, **changes: Any) -> Budget:
    before = _snapshot(budget)
    values = {f: getattr(budget, f) for f in FIELDS}
    values.update(changes)
    for field, value in _validate(budget.team, values).items():
        setattr(budget, field, value)
    budget.save()
    _changed(budget.team)
    audit_record(actor=actor, team=budget.team, action="budget.update",
                 target=f"budget:{budget.pk}", before=before, after=_snapshot(budget))  # fmt: skip
    return budget


@transaction.atomic
def budget_delete(*, budget: Budget, actor: AbstractBaseUser) -> None:
    team, before, pk = budget.team, _snapshot(budget), budget.pk
    budget.delete()
    _changed(team)
    audit_record(actor=actor, team=team, action="budget.delete", target=f"budget:{pk}",
                 before=before)  # fmt: skip
