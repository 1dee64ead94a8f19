"""The team's budgets page: every member sees each budget's spend this period as a bar; owners
and admins create, change and delete them through ledger.services.budgets."""

from __future__ import annotations

from decimal import Decimal

from django.contrib import messages
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts import selectors as account_selectors
from accounts.decorators import MANAGERS, page_context, team_view
from accounts.forms import add_service_error
from accounts.models import Membership
from gateway_billing.errors import ApplicationError
from ledger.forms import BudgetForm
from ledger.models import Budget, BudgetScope
from ledger.selectors import budget_list
from ledger.services.budgets import budget_create, budget_delete, budget_update

form_page = require_http_methods(["GET", "HEAD", "POST"])
read_page = require_http_methods(["GET", "HEAD"])
TENTH = Decimal("0.1")


def _bar(row: dict) -> dict:
    """What the template draws: exact percentages (one decimal, rounded down) of the limit."""
    budget, spent = row["budget"], row["spent"]
    limit = budget.limit_nano

    def percent(nano: int) -> Decimal:
        return (Decimal(nano * 1000 // limit) / 10).quantize(TENTH)

    used = percent(spent)
    passed = [t for t in budget.thresholds if spent * 100 >= limit * t]
    state = "over" if spent >= limit else "warn" if passed else "ok"
    if budget.scope == BudgetScope.PROJECT:
        target = f"Project {budget.project.slug}"
    elif budget.scope == BudgetScope.MEMBER:
        target = f"Member {budget.member.user.email or budget.member.user.username}"
    elif budget.scope == BudgetScope.KEY:
        key = budget.api_key
        target = f"API key {key.name} ({key.prefix}…)" if key.name else f"API key {key.prefix}…"
    else:
        target = "The whole team"
    return {
        "budget": budget,
        "target": target,
        "period_start": row["period_start"],
        "spent": spent,
        "remaining": limit - spent,
        "percent": used,
        "width": min(used, Decimal("100.0")),
        "state": state,
        "passed": passed,
    }


@team_view()
@read_page
def budget_list_page(request: HttpRequest, membership: Membership) -> HttpResponse:
    rows = [_bar(row) for row in budget_list(team_id=membership.team_id)]
    return render(request, "ledger/budgets.html", page_context(membership, rows=rows))


def _form(membership: Membership, data=None, budget: Budget | None = None, **kwargs) -> BudgetForm:
    team = membership.team
    # Live keys, and the budget's own key even when it has been revoked since.
    live = Q(revoked_at__isnull=True) | Q(pk=budget.api_key_id if budget else None)
    return BudgetForm(
        data,
        projects=account_selectors.project_list(team=team),
        members=account_selectors.membership_list(team=team),
        keys=account_selectors.api_key_list(team=team).filter(live),
        **kwargs,
    )


def _budget(membership: Membership, budget_id: int) -> Budget:
    budget = Budget.objects.select_related("team").filter(team_id=membership.team_id,
                                                          pk=budget_id).first()  # fmt: skip
    if budget is None:
        raise Http404("No such budget.")
    return budget


def _form_page(
    request: HttpRequest, membership: Membership, form: BudgetForm, budget: Budget | None
) -> HttpResponse:
    status = 400 if form.is_bound else 200
    context = page_context(membership, form=form, budget=budget)
    return render(request, "ledger/budget_form.html", context, status=status)


@team_view(roles=MANAGERS)
@form_page
def budget_create_page(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = _form(membership, request.POST or None, initial={"thresholds": [50, 80, 100]})
    if request.method == "POST" and form.is_valid():
        try:
            budget = budget_create(
                team=membership.team, actor=request.user, **form.service_values()
            )
        except ApplicationError as exc:
            add_service_error(form, exc)
        else:
            messages.success(request, f"Budget {budget.name} created.")
            return redirect("ledger:budgets", slug=membership.team.slug)
    return _form_page(request, membership, form, None)


@team_view(roles=MANAGERS)
@form_page
def budget_edit_page(request: HttpRequest, membership: Membership, budget_id: int) -> HttpResponse:
    budget = _budget(membership, budget_id)
    form = _form(membership, request.POST or None, budget, initial=BudgetForm.initial_of(budget))
    if request.method == "POST" and form.is_valid():
        try:
            budget_update(budget=budget, actor=request.user, **form.service_values())
        except ApplicationError as exc:
            add_service_error(form, exc)
        else:
            messages.success(request, f"Budget {budget.name} saved.")
            return redirect("ledger:budgets", slug=membership.team.slug)
    return _form_page(request, membership, form, budget)


@team_view(roles=MANAGERS)
@require_POST
def budget_delete_action(
    request: HttpRequest, membership: Membership, budget_id: int
) -> HttpResponse:
    budget = _budget(membership, budget_id)
    name = budget.name
    budget_delete(budget=budget, actor=request.user)
    messages.success(request, f"Budget {name} deleted.")
    return redirect("ledger:budgets", slug=membership.team.slug)
