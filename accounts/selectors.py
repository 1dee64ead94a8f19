"""Every read of the accounts app. Team-owned rows are always looked up through their team, so
another team's id finds nothing (a 404 for the caller), never another team's row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db.models import F, QuerySet
from django.utils import timezone

from ledger.models import TeamBalance
from pricing.money import format_credits

from .keys import hash_secret
from .models import (
    ApiKey,
    AuditEntry,
    Invitation,
    Membership,
    Notification,
    Plan,
    Project,
    Team,
    WebhookDelivery,
    WebhookEndpoint,
)

User = get_user_model()


def membership_for_team(*, user: User, slug: str) -> Membership | None:
    """The user's membership in the team with this slug (with team, subscription and plan)."""
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.select_related("team", "team__subscription__plan")
        .filter(user=user, team__slug=slug)
        .first()
    )


def membership_first(*, user: User) -> Membership | None:
    """The team the home page opens: the oldest membership."""
    return (
        Membership.objects.select_related("team")
        .filter(user=user)
        .order_by("created_at", "id")
        .first()
    )


@dataclass(frozen=True)
class TeamSummary:
    team: Team
    plan_name: str | None
    plan_code: str | None
    cycle_start: datetime | None
    cycle_end: datetime | None
    member_count: int
    active_key_count: int
    project_count: int


def team_summary(*, team: Team) -> TeamSummary:
    subscription = getattr(team, "subscription", None)
    return TeamSummary(
        team=team,
        plan_name=subscription.plan.name if subscription else None,
        plan_code=subscription.plan.code if subscription else None,
        cycle_start=subscription.current_cycle_start if subscription else None,
        cycle_end=subscription.current_cycle_end if subscription else None,
        member_count=Membership.objects.filter(team=team).count(),
        active_key_count=ApiKey.objects.filter(team=team, revoked_at__isnull=True).count(),
        project_count=Project.objects.filter(team=team).count(),
    )


def membership_list(*, team: Team) -> QuerySet[Membership]:
    return Membership.objects.filter(team=team).select_related("user").order_by("created_at", "id")


def membership_get(*, team: Team, membership_id: int) -> Membership | None:
    return Membership.objects.select_related("team").filter(team=team, pk=membership_id).first()


def invitation_pending_list(*, team: Team) -> QuerySet[Invitation]:
    return (
        Invitation.objects.filter(
            team=team,
            accepted_at__isnull=True,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        )
        .select_related("invited_by")
        .order_by("-created_at")
    )


def invitation_get(*, team: Team, invitation_id: int) -> Invitation | None:
    return Invitation.objects.select_related("team").filter(team=team, pk=invitation_id).first()


def invitation_by_token(*, token: str) -> Invitation | None:
    """The token is the capability: whoever holds the link may see the team's name."""
    return Invitation.objects.select_related("team").filter(token_hash=hash_secret(token)).first()


def api_key_list(*, team: Team) -> QuerySet[ApiKey]:
    return (
        ApiKey.objects.filter(team=team)
        .select_related("project", "member__user")
        .order_by(F("revoked_at").asc(nulls_first=True), "-created_at")
    )


def api_key_get(*, team: Team, key_id: int) -> ApiKey | None:
    return ApiKey.objects.filter(team=team, pk=key_id).first()


def project_list(*, team: Team) -> QuerySet[Project]:
    return Project.objects.filter(team=team).order_by("slug")


def project_get(*, team: Team, slug: str) -> Project | None:
    return Project.objects.filter(team=team, slug=slug).first()


@dataclass(frozen=True)
class KeyIdentity:
    team_slug: str
    team_name: str
    project: str | None
    scopes: list[str]
    key_prefix: str


def api_key_identity(*, team_id: int, key_id: int) -> KeyIdentity | None:
    """What an API key is: its team, project, scopes and visible prefix (None once revoked)."""
    key = (
        ApiKey.objects.select_related("team", "project")
        .filter(team_id=team_id, pk=key_id, revoked_at__isnull=True)
        .first()
    )
    if key is None:
        return None
    return KeyIdentity(
        team_slug=key.team.slug,
        team_name=key.team.name,
        project=key.project.slug if key.project else None,
        scopes=sorted(key.scopes),
        key_prefix=key.prefix,
    )


def plan_list() -> QuerySet[Plan]:
    return Plan.objects.order_by("sort_order", "monthly_credits", "code")


def webhook_endpoint_list(*, team: Team) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(team=team).order_by("-is_active", "created_at", "id")


def webhook_endpoint_get(*, team: Team, endpoint_id: int) -> WebhookEndpoint | None:
    return WebhookEndpoint.objects.filter(team=team, pk=endpoint_id).first()


def webhook_delivery_list(*, team: Team, limit: int = 50) -> list[WebhookDelivery]:
    """The team's latest delivery attempts, newest first."""
    return list(
        WebhookDelivery.objects.filter(endpoint__team=team)
        .select_related("endpoint", "event")
        .order_by("-id")[:limit]
    )


def webhook_delivery_get(*, team: Team, delivery_id: int) -> WebhookDelivery | None:
    return (
        WebhookDelivery.objects.select_related("endpoint", "event")
        .filter(endpoint__team=team, pk=delivery_id)
        .first()
    )


def audit_entry_list(*, team: Team, action: str | None = None) -> QuerySet[AuditEntry]:
    """The team's audit log, newest first."""
    entries = AuditEntry.objects.filter(team=team).select_related("actor").order_by("-id")
    if action:
        entries = entries.filter(action=action)
    return entries


def notification_list(*, team: Team, limit: int = 10) -> list[Notification]:
    return list(Notification.objects.filter(team=team)[:limit])


def balance_low_threshold(*, team: Team) -> str | None:
    """The team's balance-alert threshold in credits, or None when the alert is off."""
    nano = (
        TeamBalance.objects.filter(team=team).values_list("low_threshold_nano", flat=True).first()
    )
    return None if nano is None else format_credits(nano)
