"""Staff admin for tenancy. API keys are created through the service (the page or
`manage.py create_api_key`) so their secret is shown once; here they can only be renamed or
revoked (through the service, which also drops the cached lookup). Webhooks, the outbox and
the audit log are read-only here: they change through their services and pages."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from . import services
from .models import (
    ApiKey,
    AuditEntry,
    Invitation,
    Membership,
    OutboxEvent,
    Plan,
    Project,
    Subscription,
    Team,
    WebhookDelivery,
    WebhookEndpoint,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]
    fields = ["user", "role", "can_manage_billing", "created_at"]
    readonly_fields = ["created_at"]


class SubscriptionInline(admin.StackedInline):
    model = Subscription
    extra = 0
    max_num = 1
    can_delete = False
    fields = ["plan", "pending_plan", "current_cycle_start", "current_cycle_end", "created_at"]
    readonly_fields = ["pending_plan", "created_at"]


class ProjectInline(admin.TabularInline):
    model = Project
    extra = 0
    fields = ["slug", "name", "created_at"]
    readonly_fields = ["created_at"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "plan", "member_count", "created_at"]
    list_filter = ["subscription__plan", "subscription__status", "created_at"]
    search_fields = ["slug", "name", "memberships__user__email"]
    date_hierarchy = "created_at"
    readonly_fields = ["created_at"]
    inlines = [SubscriptionInline, MembershipInline, ProjectInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        queryset = super().get_queryset(request).select_related("subscription__plan")
        return queryset.annotate(member_total=Count("memberships"))

    @admin.display(description="Plan", ordering="subscription__plan__sort_order")
    def plan(self, obj: Team) -> str:
        subscription = getattr(obj, "subscription", None)
        return subscription.plan.name if subscription else "—"

    @admin.display(description="Members", ordering="member_total")
    def member_count(self, obj: Team) -> int:
        return obj.member_total


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role", "can_manage_billing", "created_at"]
    list_filter = ["role", "can_manage_billing", "created_at"]
    search_fields = ["user__email", "user__username", "team__slug", "team__name"]
    date_hierarchy = "created_at"
    raw_id_fields = ["user", "team"]
    list_select_related = ["user", "team"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "team", "created_at"]
    search_fields = ["slug", "name", "team__slug"]
    raw_id_fields = ["team"]
    list_select_related = ["team"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "prefix",
        "name",
        "team",
        "project",
        "scopes",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["prefix", "name", "team__slug"]
    date_hierarchy = "created_at"
    list_select_related = ["team", "project"]
    # Everything the cached lookup depends on is read-only: an edit here would not reach it.
    readonly_fields = [
        "team",
        "project",
        "member",
        "prefix",
        "key_hash",
        "scopes",
        "created_at",
        "created_by",
        "last_used_at",
        "revoked_at",
    ]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        keys = list(queryset.filter(revoked_at__isnull=True))
        for key in keys:
            services.api_key_revoke(key=key, actor=request.user)
        self.message_user(request, f"Revoked {len(keys)} key(s).", messages.SUCCESS)


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "name",
        "monthly_credits",
        "monthly_price_cents",
        "price_per_member",
        "member_limit",
        "can_purchase_credits",
        "addon_pack_credits",
        "addon_pack_price_cents",
        "auto_recharge_pack_credits",
        "auto_recharge_pack_price_cents",
        "sort_order",
    ]
    list_filter = ["can_purchase_credits", "price_per_member"]
    search_fields = ["code", "name"]


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = [
        "team",
        "plan",
        "pending_plan",
        "current_cycle_start",
        "current_cycle_end",
        "created_at",
    ]
    readonly_fields = ["pending_plan"]
    list_filter = ["plan"]
    search_fields = ["team__slug", "team__name"]
    raw_id_fields = ["team"]
    list_select_related = ["team", "plan"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = [
        "email",
        "team",
        "role",
        "created_at",
        "expires_at",
        "accepted_at",
        "revoked_at",
    ]
    list_filter = [
        "role",
        ("accepted_at", admin.EmptyFieldListFilter),
        ("revoked_at", admin.EmptyFieldListFilter),
    ]
    search_fields = ["email", "team__slug"]
    raw_id_fields = ["team", "invited_by"]
    readonly_fields = ["token_hash", "created_at", "accepted_at"]
    list_select_related = ["team"]


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = ["url", "team", "is_active", "failure_count", "disabled_at", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["url", "team__slug"]
    list_select_related = ["team"]
    exclude = ["secret"]


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "type", "team", "created_at", "dispatched_at"]
    list_filter = ["type", ("dispatched_at", admin.EmptyFieldListFilter)]
    search_fields = ["event_id", "team__slug"]
    list_select_related = ["team"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "event",
        "endpoint",
        "attempt",
        "state",
        "status_code",
        "next_attempt_at",
        "delivered_at",
    ]
    list_filter = ["state"]
    search_fields = ["event__event_id", "endpoint__url"]
    list_select_related = ["event", "endpoint"]


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """Append-only: nobody adds, changes or deletes an entry here (the database refuses too)."""

    list_display = ["created_at", "action", "target", "team", "actor", "ip"]
    list_filter = ["action", ("team", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["action", "target", "team__slug", "actor__email"]
    date_hierarchy = "created_at"
    list_select_related = ["team", "actor"]
