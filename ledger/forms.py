"""HTML forms of the team's money pages: input parsing and field errors only; the rules live in
the services (ledger/services/budgets.py checks them again)."""

from __future__ import annotations

from datetime import date, timedelta

from django import forms

from accounts.models import ApiKey, Membership, Project
from ledger.models import BudgetPeriod, BudgetScope
from ledger.selectors_usage import DIMENSIONS
from pricing.money import MoneyError, format_credits_short, parse_credits

MAX_RANGE_DAYS = 400
DATE_HELP = "A date such as 2026-11-01."


class UsageFilterForm(forms.Form):
    """The usage table's period (whole local days, both included) and grouping."""

    start = forms.DateField(
        label="From",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        error_messages={"invalid": f"“From” is not a date. {DATE_HELP}"},
    )
    end = forms.DateField(
        label="To",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        error_messages={"invalid": f"“To” is not a date. {DATE_HELP}"},
    )
    group_by = forms.ChoiceField(
        label="Group by",
        required=False,
        choices=[(name, name.capitalize() if name != "key" else "API key") for name in DIMENSIONS],
        error_messages={"invalid_choice": "Group by model, project, member or API key."},
    )

    def __init__(self, data=None, *, today: date, **kwargs) -> None:
        self.today = today
        initial = {"start": today - timedelta(days=29), "end": today, "group_by": "model"}
        # An empty field means its default, so the form is always bound (and validated).
        values = {k: v for k, v in (data or {}).items() if k in self.base_fields and v != ""}
        bound = {key: (value.isoformat() if isinstance(value, date) else value)
                 for key, value in {**initial, **values}.items()}  # fmt: skip
        super().__init__(bound, **kwargs)

    def clean(self) -> dict:
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end:
            if start > end:
                self.add_error("end", "“To” must be on or after “From”.")
            elif (end - start).days + 1 > MAX_RANGE_DAYS:
                self.add_error("start", f"Choose at most {MAX_RANGE_DAYS} days at once.")
        return data


class ThresholdsField(forms.CharField):
    """Whole percentages separated by commas: "50, 80" -> [50, 80]."""

    message = "Thresholds are whole percentages from 1 to 100, separated by commas (e.g. 50, 80)."

    def to_python(self, value: str | None) -> list[int]:
        text = super().to_python(value)
        out = []
        for part in text.replace(" ", "").split(","):
            if not part:
                continue
            if not part.isdigit() or not 1 <= int(part) <= 100:
                raise forms.ValidationError(self.message)
            out.append(int(part))
        return sorted(set(out))

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        return value


class BudgetForm(forms.Form):
    name = forms.CharField(max_length=120, help_text="For you, e.g. “Web app daily”.")
    scope = forms.ChoiceField(
        label="Applies to",
        choices=BudgetScope.choices,
        help_text="The whole team, or one project, member or API key (choose it below).",
    )
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(), required=False, empty_label="(choose a project)"
    )
    member = forms.ModelChoiceField(
        queryset=Membership.objects.none(), required=False, empty_label="(choose a member)"
    )
    api_key = forms.ModelChoiceField(
        label="API key",
        queryset=ApiKey.objects.none(),
        required=False,
        empty_label="(choose a key)",
    )
    period = forms.ChoiceField(
        choices=BudgetPeriod.choices,
        help_text="Spend starts again from zero each period (in the team's time zone).",
    )
    limit = forms.CharField(
        label="Limit (credits)",
        max_length=40,
        widget=forms.TextInput(attrs={"inputmode": "decimal"}),
        help_text="Up to 9 decimal places, e.g. 250 or 12.5.",
    )
    thresholds = ThresholdsField(
        label="Alert at (%)",
        required=False,
        max_length=200,
        help_text="Whole percentages of the limit, separated by commas, e.g. 50, 80.",
    )
    hard_cap = forms.BooleanField(
        label="Hard cap: refuse requests in this scope once the limit is reached",
        required=False,
    )

    TARGETS = {BudgetScope.PROJECT: "project", BudgetScope.MEMBER: "member",
               BudgetScope.KEY: "api_key"}  # fmt: skip

    def __init__(self, *args, projects, members, keys, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects
        self.fields["project"].label_from_instance = lambda p: f"{p.name} ({p.slug})"
        self.fields["member"].queryset = members
        self.fields["member"].label_from_instance = lambda m: (
            f"{m.user.email or m.user.username} ({m.get_role_display()})"
        )
        self.fields["api_key"].queryset = keys
        self.fields["api_key"].label_from_instance = lambda k: (
            f"{k.name} ({k.prefix}…)" if k.name else f"{k.prefix}…"
        )

    @classmethod
    def initial_of(cls, budget) -> dict:
        return {
            "name": budget.name,
            "scope": budget.scope,
            "project": budget.project_id,
            "member": budget.member_id,
            "api_key": budget.api_key_id,
            "period": budget.period,
            "limit": format_credits_short(budget.limit_nano),
            "thresholds": budget.thresholds,
            "hard_cap": budget.hard_cap,
        }

    def clean_limit(self) -> int:
        try:
            nano = parse_credits(self.cleaned_data["limit"], field="The limit")
        except MoneyError:
            raise forms.ValidationError(
                "Enter the limit in credits, e.g. 250 or 12.5 (at most 9 decimal places)."
            ) from None
        if nano <= 0:
            raise forms.ValidationError("The limit must be more than 0 credits.")
        return nano

    def clean(self) -> dict:
        data = super().clean()
        target = self.TARGETS.get(data.get("scope"))
        if target and not data.get(target) and target not in self.errors:
            noun = {"project": "project", "member": "member", "api_key": "API key"}[target]
            self.add_error(target, f"Choose the {noun} this budget applies to.")
        return data

    def service_values(self) -> dict:
        """The keyword arguments of budget_create / budget_update."""
        data = self.cleaned_data
        scope = data["scope"]
        return {
            "name": data["name"].strip(),
            "scope": scope,
            "project": data["project"] if scope == BudgetScope.PROJECT else None,
            "member": data["member"] if scope == BudgetScope.MEMBER else None,
            "api_key": data["api_key"] if scope == BudgetScope.KEY else None,
            "period": data["period"],
            "limit_nano": data["limit"],
            "thresholds": data["thresholds"],
            "hard_cap": data["hard_cap"],
        }
