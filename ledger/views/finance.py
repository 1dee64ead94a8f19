"""The finance dashboard (/finance/): revenue, credits issued and consumed, liability, provider
cost, unrated usage, overdrafts and reconciliation, for staff; and the ledger as CSV.

Who: staff users who are superusers or hold ``ledger.view_ledgerentry``. Anyone else logged
in gets a 403; logged out, the login page. Reads are in ``ledger.selectors_finance``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from datetime import date, timedelta
from functools import wraps
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from accounts.models import Team
from gateway_billing.assets import CHART_JS, vendored
from ledger import selectors_finance as reports
from ledger.models import LotSource
from ledger.services.reconcile import reconcile_run
from pricing.money import cents_to_usd, format_credits, format_usd

DEFAULT_DAYS = 30
MAX_DRIFTS_SHOWN = 200
# A spreadsheet runs a cell that starts with one of these as a formula: quote free text.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def can_view_finance(user: Any) -> bool:
    return bool(
        user.is_authenticated
        and user.is_active
        and user.is_staff
        and (user.is_superuser or user.has_perm("ledger.view_ledgerentry"))
    )


def finance_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not can_view_finance(request.user):
            return render(request, "ledger/finance_forbidden.html", status=403)
        return view(request, *args, **kwargs)

    return wrapper


class PeriodForm(forms.Form):
    """?from=YYYY-MM-DD&to=YYYY-MM-DD, whole UTC days, both included; default the last 30."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # "from" is a Python keyword: the fields are added by name.
        self.fields["from"] = forms.DateField(
            label="From",
            required=False,
            input_formats=["%Y-%m-%d"],
            widget=forms.DateInput(attrs={"type": "date"}),
            error_messages={"invalid": "Enter the start date as YYYY-MM-DD."},
        )
        self.fields["to"] = forms.DateField(
            label="To",
            required=False,
            input_formats=["%Y-%m-%d"],
            widget=forms.DateInput(attrs={"type": "date"}),
            error_messages={"invalid": "Enter the end date as YYYY-MM-DD."},
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        today = timezone.now().date()
        last: date = cleaned.get("to") or today
        first: date = cleaned.get("from") or last - timedelta(days=DEFAULT_DAYS - 1)
        if first > last:
            raise forms.ValidationError("The start date is after the end date.")
        if (last - first).days + 1 > reports.MAX_PERIOD_DAYS:
            raise forms.ValidationError(f"Choose at most {reports.MAX_PERIOD_DAYS} days at a time.")
        cleaned["period"] = reports.Period(first=first, last=last)
        return cleaned

    @property
    def period(self) -> reports.Period:
        return self.cleaned_data["period"]

    def messages(self) -> list[str]:
        return [error for errors in self.errors.values() for error in errors]


def _period_form(request: HttpRequest) -> PeriodForm:
    form = PeriodForm(request.GET)
    form.is_valid()
    return form


def _chart_data(revenue: reports.Revenue) -> list[dict[str, str]]:
    """Revenue per day for the chart: decimal strings (the page parses them for drawing)."""
    return [
        {
            "day": day.day.isoformat(),
            "gross": format_usd(cents_to_usd(day.gross_cents)),
            "refunds": format_usd(cents_to_usd(day.refunds_cents)),
            "net": format_usd(day.net_usd),
        }
        for day in revenue.days
    ]


@finance_view
@require_safe
def finance_dashboard(request: HttpRequest) -> HttpResponse:
    form = _period_form(request)
    context: dict[str, Any] = {"form": form, "chart_js": vendored(CHART_JS)}
    if form.errors:
        return render(request, "ledger/finance.html", context, status=400)
    period = form.period
    # Show the dates in force (the defaults too) in the form.
    context["form"] = PeriodForm(initial={"from": period.first, "to": period.last})
    revenue = reports.revenue_by_day(period=period)
    liability = reports.liability_get(credits_per_usd=settings.CREDITS_PER_USD)
    context.update(
        period=period,
        revenue=revenue,
        chart_data=_chart_data(revenue),
        credits=reports.credits_by_day(period=period),
        liability=liability,
        lot_sources=[
            (source.label, liability.by_source.get(source.value, 0)) for source in LotSource
        ],
        credits_per_usd=settings.CREDITS_PER_USD,
        provider_costs=reports.provider_costs(period=period),
        unrated=reports.unrated_usage(),
        overdrafts=reports.overdraft_teams(),
        reconciliation=reports.reconciliation_last(),
    )
    return render(request, "ledger/finance.html", context)


class _Echo:
    """A file-like object whose write returns the line, for streaming csv.writer output."""

    def write(self, value: str) -> str:
        return value


def _text(value: str | None) -> str:
    value = value or ""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def _csv_lines(rows: Iterable[tuple]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(reports.LEDGER_CSV_COLUMNS)
    for entry_id, created_at, team, kind, amount, balance, reference, price, reason, author in rows:
        yield writer.writerow(
            (
                entry_id,
                created_at.isoformat(),
                _text(team),
                kind,
                format_credits(amount),
                format_credits(balance),
                _text(reference),
                price or "",
                _text(reason),
                _text(author),
            )
        )


@finance_view
@require_safe
def finance_ledger_csv(request: HttpRequest) -> HttpResponse:
    """The ledger entries of a period as CSV, streamed (constant memory at any size)."""
    form = _period_form(request)
    if form.errors:
        return HttpResponse(
            "\n".join(form.messages()) + "\n", status=400, content_type="text/plain; charset=utf-8"
        )
    period = form.period
    response = StreamingHttpResponse(
        _csv_lines(reports.ledger_rows(period=period)), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = (
        f'attachment; filename="ledger-{period.first:%Y%m%d}-{period.last:%Y%m%d}.csv"'
    )
    return response


@finance_view
@require_POST
def finance_reconcile(request: HttpRequest) -> HttpResponse:
    """Run the reconciliation now (every balance, overdraft and lot against the entries) and
    show its drifts; the dashboard shows the latest run."""
    report = reconcile_run()
    drifts = report.drifts[:MAX_DRIFTS_SHOWN]
    slugs = dict(Team.objects.filter(id__in={d.team_id for d in drifts}).values_list("id", "slug"))
    context = {
        "report": report,
        "drifts": [
            {
                "team": slugs.get(d.team_id, str(d.team_id)),
                "kind": d.kind,
                "detail": d.detail,
                "expected": format_credits(d.expected),
                "actual": format_credits(d.actual),
            }
            for d in drifts
        ],
        "more": len(report.drifts) - len(drifts),
    }
    return render(request, "ledger/finance_reconcile.html", context)
