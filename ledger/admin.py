"""The ledger in the admin: read-only for everyone; finance staff (permission
`ledger.adjust_ledger`) write adjustments, refunds and reversals as compensating entries."""

from __future__ import annotations

import uuid

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from accounts.models import Team
from gateway_billing.errors import ApplicationError
from ledger.models import CreditLot, EntryKind, LedgerEntry, TeamBalance, UsageEvent
from ledger.services.credits import MANUAL_KINDS, ledger_adjust
from pricing.money import MoneyError, format_credits, parse_credits


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class AdjustmentForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.order_by("slug"), to_field_name="slug")
    kind = forms.ChoiceField(choices=[(k.value, k.label) for k in MANUAL_KINDS])
    amount = forms.CharField(
        help_text="Credits, signed: 25 adds credits, -25 takes them away (up to 9 decimals)."
    )
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=500)
    token = forms.CharField(widget=forms.HiddenInput)

    def clean_amount(self) -> int:
        try:
            amount = parse_credits(self.cleaned_data["amount"], field="amount")
        except MoneyError as exc:
            raise forms.ValidationError(str(exc)) from None
        if amount == 0:
            raise forms.ValidationError("The amount must not be zero.")
        return amount


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "team", "kind", "credits", "balance_after", "reference", "created_at")
    list_filter = ("kind",)
    search_fields = ("reference", "team__slug", "reason")
    date_hierarchy = "created_at"
    list_select_related = ("team",)
    change_list_template = "admin/ledger/ledgerentry/change_list.html"

    @admin.display(description="Credits", ordering="amount_nano")
    def credits(self, entry: LedgerEntry) -> str:
        return format_credits(entry.amount_nano)

    @admin.display(description="Balance after")
    def balance_after(self, entry: LedgerEntry) -> str:
        return format_credits(entry.balance_after_nano)

    def get_urls(self):
        adjust = self.admin_site.admin_view(self.adjust_view)
        return [path("adjust/", adjust, name="ledger_ledgerentry_adjust"), *super().get_urls()]

    def adjust_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("ledger.adjust_ledger"):
            raise PermissionDenied
        if request.method == "POST":
            form = AdjustmentForm(request.POST)
            if form.is_valid():
                data = form.cleaned_data
                try:
                    entry = ledger_adjust(
                        team=data["team"],
                        amount_nano=data["amount"],
                        reason=data["reason"],
                        author=request.user,
                        kind=data["kind"],
                        reference=f"manual:{data['token']}",
                    )
                except ApplicationError as exc:
                    form.add_error(None, exc.message)
                else:
                    messages.success(
                        request,
                        f"{EntryKind(data['kind']).label} of {format_credits(entry.amount_nano)} "
                        f"credits written for {data['team'].slug}.",
                    )
                    return HttpResponseRedirect(reverse("admin:ledger_ledgerentry_changelist"))
        else:
            form = AdjustmentForm(initial={"token": uuid.uuid4().hex, **request.GET.dict()})
        context = {
            **self.admin_site.each_context(request),
            "title": "Write an adjustment",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/ledger/adjust.html", context)


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "team", "model", "state", "credits_nano", "occurred_at")
    list_filter = ("state", "provider")
    search_fields = ("event_id", "request_id", "team__slug")
    date_hierarchy = "occurred_at"
    list_select_related = ("team", "model")


@admin.register(CreditLot)
class CreditLotAdmin(ReadOnlyAdmin):
    list_display = ("id", "team", "source", "amount_nano", "remaining_nano", "expires_at")
    list_filter = ("source",)
    search_fields = ("team__slug", "reference")
    list_select_related = ("team",)


@admin.register(TeamBalance)
class TeamBalanceAdmin(ReadOnlyAdmin):
    list_display = ("team", "balance", "overdraft", "updated_at")
    search_fields = ("team__slug",)
    list_select_related = ("team",)

    @admin.display(description="Balance", ordering="balance_nano")
    def balance(self, row: TeamBalance) -> str:
        return format_credits(row.balance_nano)

    @admin.display(description="Overdraft", ordering="overdraft_nano")
    def overdraft(self, row: TeamBalance) -> str:
        return format_credits(row.overdraft_nano)
