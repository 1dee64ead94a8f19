"""Team pages for usage and the ledger: the usage chart and table (with its CSV export) and the
ledger history. Thin: a form parses the filters, selectors aggregate in the database."""

from __future__ import annotations

import csv
from datetime import timedelta

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from accounts.decorators import AUDITORS, MANAGERS, page_context, team_view
from accounts.models import Membership
from ledger.forms import UsageFilterForm
from ledger.models import EntryKind
from ledger.selectors_usage import (
    DailyUsage,
    ledger_page,
    local_day_start,
    usage_daily,
    usage_table,
    usage_total,
    zone,
)
from pricing.money import format_credits, format_usd

read_page = require_http_methods(["GET", "HEAD"])

# The money record (top-ups, refunds, adjustments): owners, admins and finance; plain members see
# their usage and budgets.
LEDGER_READERS = MANAGERS | AUDITORS
LEDGER_PAGE_SIZE = 50
STACKS = {"model": "Model", "project": "Project", "member": "Member"}


def _chart_data(daily: DailyUsage) -> dict:
    """The chart's data as decimal strings (JavaScript parses them only to draw)."""
    return {
        "days": [day.isoformat() for day in daily.days],
        "stacks": {
            stack: [{"label": s.label, "credits": [format_credits(v) for v in s.nano]}
                    for s in series]
            for stack, series in daily.stacks.items()
        },
    }  # fmt: skip


def _filtered(request: HttpRequest, membership: Membership):
    """The bound filter form and, when it is valid, the period's bounds and the rows."""
    tz = zone(membership.team.time_zone)
    form = UsageFilterForm(request.GET, today=timezone.now().astimezone(tz).date())
    if not form.is_valid():
        return form, None
    data = form.cleaned_data
    start = local_day_start(data["start"], tz)
    end = local_day_start(data["end"] + timedelta(days=1), tz)
    rows = usage_table(team_id=membership.team_id, start=start, end=end, group_by=data["group_by"])
    return form, rows


@team_view()
@read_page
def usage_page(request: HttpRequest, membership: Membership) -> HttpResponse:
    team = membership.team
    form, rows = _filtered(request, membership)
    context = page_context(
        membership,
        form=form,
        rows=rows,
        total=usage_total(rows) if rows else None,
        group_label=dict(form.fields["group_by"].choices).get(form.data.get("group_by"), ""),
        chart=_chart_data(usage_daily(team_id=team.id, time_zone=team.time_zone)),
        stacks=STACKS,
        query=request.GET.urlencode(),
    )
    return render(request, "ledger/usage.html", context, status=200 if rows is not None else 400)


CSV_COLUMNS = (
    "events",
    "billed_events",
    "unrated_events",
    "credits",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
)


def _cell(text: str) -> str:
    """Names come from users: never let a spreadsheet read one as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@team_view()
@read_page
def usage_export(request: HttpRequest, membership: Membership) -> HttpResponse:
    form, rows = _filtered(request, membership)
    if rows is None:
        errors = "; ".join(str(e) for errs in form.errors.values() for e in errs)
        return HttpResponse(errors, status=400, content_type="text/plain; charset=utf-8")
    data = form.cleaned_data
    name = f"usage-{membership.team.slug}-{data['start']}-{data['end']}-by-{data['group_by']}.csv"
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    writer = csv.writer(response)
    writer.writerow([data["group_by"], *CSV_COLUMNS])
    for row in rows:
        writer.writerow(
            [
                _cell(row.label),
                row.events,
                row.billed_events,
                row.unrated_events,
                format_credits(row.credits_nano),
                format_usd(row.cost_usd),
                row.input_tokens,
                row.output_tokens,
                row.cache_read_tokens,
                row.cache_write_tokens,
            ]
        )
    return response


def _cursor(request: HttpRequest, name: str) -> int | None:
    value = request.GET.get(name, "")
    return int(value) if value.isdigit() and len(value) < 19 else None


@team_view(roles=LEDGER_READERS)
@read_page
def ledger_history(request: HttpRequest, membership: Membership) -> HttpResponse:
    kind = request.GET.get("kind", "")
    kind = kind if kind in EntryKind.values else ""
    page = ledger_page(
        team_id=membership.team_id,
        kinds=[kind] if kind else None,
        before=_cursor(request, "before"),
        after=_cursor(request, "after"),
        size=LEDGER_PAGE_SIZE,
    )
    context = page_context(membership, page=page, kind=kind, kinds=EntryKind.choices)
    return render(request, "ledger/history.html", context)
