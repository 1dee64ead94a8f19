"""The ledger in the admin: read-only for everyone; finance staff (permission
`ledger.adjust_ledger`) write adjustments, refunds and reversals as compensating entries.

Payments, payment customers, Stripe events, auto-recharge settings and budgets are shown here
read-only too: they change through their services (checkout, webhooks, the team pages), which
keep the ledger, the provider and the caches in step; an edit here would bypass them."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from accounts.models import Team
from gateway_billing.errors import ApplicationError
from ledger.models import (
    AutoRecharge,
    Budget,
    BudgetSpend,
    CreditLot,
    EntryKind,
    LedgerEntry,
    Payment,
    PaymentCustomer,
    StripeEvent,
    TeamBalance,
    UsageEvent,
)
from ledger.services.credits import MANUAL_KINDS, ledger_adjust
from pricing.money import MoneyError, cents_to_usd, format_credits, format_usd, parse_credits


def pretty_json(value: Any) -> str:
    """A JSON document, indented, for reading in the admin."""
    if value in (None, "", {}, []):
        return "—"
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, default=str))


def usd_of_cents(cents: int | None) -> str:
    return "—" if cents is None else format_usd(cents_to_usd(cents))


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
    list_filter = ("kind", "created_at")
    search_fields = ("reference", "team__slug", "reason")
    date_hierarchy = "created_at"
    list_select_related = ("team",)
    exclude = ("allocations", "buckets_after")
    readonly_fields = ("allocations_json", "buckets_after_json")

    @admin.display(description="Allocations (lots and overdraft moved)")
    def allocations_json(self, entry: LedgerEntry) -> str:
        return pretty_json(entry.allocations)

    @admin.display(description="Balance split after")
    def buckets_after_json(self, entry: LedgerEntry) -> str:
        return pretty_json(entry.buckets_after)

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
    list_display = ("event_id", "team", "model", "state", "cost_usd", "credits", "occurred_at")
    list_filter = ("state", "provider", "usage_format", "occurred_at")
    search_fields = ("event_id", "request_id", "team__slug", "model__name")
    date_hierarchy = "occurred_at"
    list_select_related = ("team", "model")

    @admin.display(description="Credits", ordering="credits_nano")
    def credits(self, event: UsageEvent) -> str:
        return "—" if event.credits_nano is None else format_credits(event.credits_nano)


@admin.register(CreditLot)
class CreditLotAdmin(ReadOnlyAdmin):
    list_display = ("id", "team", "source", "amount", "remaining", "expires_at", "created_at")
    list_filter = ("source", ("expires_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("team__slug", "reference")
    date_hierarchy = "created_at"
    list_select_related = ("team",)

    @admin.display(description="Amount", ordering="amount_nano")
    def amount(self, lot: CreditLot) -> str:
        return format_credits(lot.amount_nano)

    @admin.display(description="Remaining", ordering="remaining_nano")
    def remaining(self, lot: CreditLot) -> str:
        return format_credits(lot.remaining_nano)


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


class BudgetSpendInline(admin.TabularInline):
    model = BudgetSpend
    extra = 0
    can_delete = False
    fields = ("period_start", "spent_nano")
    readonly_fields = fields
    ordering = ("-period_start",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Budget)
class BudgetAdmin(ReadOnlyAdmin):
    """Budgets change on the team's pages and API (the service keeps the ingest flags right)."""

    list_display = ("name", "team", "scope", "project", "period", "limit", "hard_cap", "created_at")
    list_filter = ("scope", "period", "hard_cap", "created_at")
    search_fields = ("name", "team__slug")
    date_hierarchy = "created_at"
    list_select_related = ("team", "project")
    inlines = (BudgetSpendInline,)

    @admin.display(description="Limit (credits)", ordering="limit_nano")
    def limit(self, budget: Budget) -> str:
        return format_credits(budget.limit_nano)


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "team",
        "kind",
        "status",
        "provider",
        "amount_usd",
        "refunded_usd",
        "credits",
        "paid_at",
        "created_at",
    )
    list_filter = ("kind", "status", "provider", "currency", "paid_at", "created_at")
    search_fields = (
        "team__slug",
        "payment_intent_id",
        "checkout_session_id",
        "invoice_id",
        "charge_id",
        "idempotency_key",
    )
    date_hierarchy = "created_at"
    list_select_related = ("team",)
    exclude = ("raw",)
    readonly_fields = ("raw_json",)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # Django 6's default

    @admin.display(description="Amount (USD)", ordering="amount_cents")
    def amount_usd(self, payment: Payment) -> str:
        return usd_of_cents(payment.amount_cents)

    @admin.display(description="Refunded (USD)", ordering="refunded_cents")
    def refunded_usd(self, payment: Payment) -> str:
        return usd_of_cents(payment.refunded_cents)

    @admin.display(description="Credits", ordering="credits_nano")
    def credits(self, payment: Payment) -> str:
        return format_credits(payment.credits_nano)

    @admin.display(description="Provider objects")
    def raw_json(self, payment: Payment) -> str:
        return pretty_json(payment.raw)

    actions = ["refund_in_full"]

    @admin.action(
        description="Refund what is left of the selected payments", permissions=["adjust"]
    )
    def refund_in_full(self, request: HttpRequest, queryset) -> None:
        """Refunds at the provider; the refund entry follows Stripe's charge.refunded (written at
        once for the fake provider). Partial refunds: in the Stripe dashboard."""
        from ledger.services.payments import payment_refund

        for payment in queryset:
            left = payment.amount_cents - payment.refunded_cents
            try:
                payment_refund(payment=payment, amount_cents=left, author_id=request.user.pk)
            except ApplicationError as error:
                self.message_user(request, f"Payment {payment.pk}: {error.message}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Payment {payment.pk}: ${usd_of_cents(left)} refunded.",
                    messages.SUCCESS,
                )

    def has_adjust_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("ledger.adjust_ledger")


@admin.register(PaymentCustomer)
class PaymentCustomerAdmin(ReadOnlyAdmin):
    list_display = ("team", "provider", "customer_id", "card_brand", "card_last4", "created_at")
    list_filter = ("provider", "created_at")
    search_fields = ("team__slug", "customer_id")
    date_hierarchy = "created_at"
    list_select_related = ("team",)


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "type", "status", "livemode", "attempts", "received_at")
    list_filter = ("status", "type", "livemode", "received_at")
    search_fields = ("event_id", "type")
    date_hierarchy = "received_at"
    exclude = ("payload",)
    readonly_fields = ("payload_json",)

    @admin.display(description="Payload")
    def payload_json(self, event: StripeEvent) -> str:
        return pretty_json(event.payload)


@admin.register(AutoRecharge)
class AutoRechargeAdmin(ReadOnlyAdmin):
    list_display = (
        "team",
        "enabled",
        "threshold",
        "amount_usd",
        "monthly_cap",
        "consecutive_failures",
        "retry_after",
        "updated_at",
    )
    list_filter = ("enabled", "updated_at")
    search_fields = ("team__slug", "disabled_reason")
    list_select_related = ("team",)

    @admin.display(description="Threshold (credits)", ordering="threshold_nano")
    def threshold(self, row: AutoRecharge) -> str:
        return format_credits(row.threshold_nano)

    @admin.display(description="Amount (USD)", ordering="amount_cents")
    def amount_usd(self, row: AutoRecharge) -> str:
        return "plan pack" if row.amount_cents is None else usd_of_cents(row.amount_cents)
