"""Every write of the accounts app: teams, members, invitations, projects, API keys."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from gateway_billing.errors import ApplicationError

from .authentication import key_cache_key
from .keys import hash_secret, new_api_key, new_token
from .models import (
    ALL_SCOPES,
    ApiKey,
    Invitation,
    Membership,
    Plan,
    Project,
    Role,
    Subscription,
    Team,
)

User = get_user_model()
INVITATION_DAYS = 7


def cycle_bounds(start: datetime) -> tuple[datetime, datetime]:
    """A billing cycle: from `start` to the same moment one calendar month later (clamped to
    the month's last day: Jan 31 -> Feb 28/29)."""
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start, start.replace(year=year, month=month, day=day)


def _unique_slug(base: str) -> str:
    slug = slugify(base)[:50] or "team"
    candidate, n = slug, 1
    while Team.objects.filter(slug=candidate).exists():
        n += 1
        candidate = f"{slug}-{n}"
    return candidate


@transaction.atomic
def team_create(
    *, name: str, owner: User, plan_code: str = "free", slug: str | None = None
) -> Team:
    """A team with its owner and a subscription whose first cycle starts now."""
    plan = Plan.objects.filter(code=plan_code).first()
    if plan is None:
        raise ApplicationError("unknown_plan", f"No plan with code {plan_code!r}; run loadcatalog.")
    if slug and Team.objects.filter(slug=slug).exists():
        raise ApplicationError(
            "slug_taken", f"A team with slug {slug!r} exists.", fields={"slug": ["Taken."]}
        )
    team = Team.objects.create(name=name, slug=slug or _unique_slug(name))
    Membership.objects.create(team=team, user=owner, role=Role.OWNER, can_manage_billing=True)
    start, end = cycle_bounds(timezone.now().replace(microsecond=0))
    Subscription.objects.create(
        team=team, plan=plan, current_cycle_start=start, current_cycle_end=end
    )
    return team


@transaction.atomic
def user_signup(*, email: str, password: str, team_name: str) -> tuple[User, Team]:
    email = User.objects.normalize_email(email).lower()
    if User.objects.filter(username=email).exists():
        raise ApplicationError(
            "email_taken",
            "An account with this email exists; log in instead.",
            fields={"email": ["Taken."]},
        )
    user = User.objects.create_user(username=email, email=email, password=password)
    team = team_create(name=team_name or email.split("@")[0], owner=user)
    return user, team


@transaction.atomic
def project_create(*, team: Team, slug: str, name: str = "") -> Project:
    try:
        with transaction.atomic():
            return Project.objects.create(team=team, slug=slugify(slug), name=name or slug)
    except IntegrityError:
        raise ApplicationError(
            "project_exists", f"Project {slug!r} exists in this team.", fields={"slug": ["Taken."]}
        ) from None


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str  # shown once, never stored


def _validate_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ApplicationError(
            "invalid_scopes",
            f"Unknown scopes {unknown}; use {ALL_SCOPES}.",
            fields={"scopes": [f"Unknown: {', '.join(unknown)}"]},
        )
    if not scopes:
        raise ApplicationError(
            "invalid_scopes", "Choose at least one scope.", fields={"scopes": ["Required."]}
        )
    return sorted(set(scopes))


@transaction.atomic
def api_key_create(
    *,
    team: Team,
    scopes: list[str],
    name: str = "",
    project: Project | None = None,
    member: Membership | None = None,
    created_by: User | None = None,
) -> CreatedKey:
    if project is not None and project.team_id != team.id:
        raise ApplicationError("not_found", "No such project.", status_code=404)
    if member is not None and member.team_id != team.id:
        raise ApplicationError("not_found", "No such member.", status_code=404)
    raw, prefix, key_hash = new_api_key()
    key = ApiKey.objects.create(
        team=team,
        project=project,
        member=member,
        name=name,
        prefix=prefix,
        key_hash=key_hash,
        scopes=_validate_scopes(scopes),
        created_by=created_by,
    )
    return CreatedKey(key=key, secret=raw)


@transaction.atomic
def api_key_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        key_hash = key.key_hash
        transaction.on_commit(lambda: cache.delete(key_cache_key(key_hash)))
        cache.delete(key_cache_key(key_hash))
    return key


@transaction.atomic
def invitation_create(
    *, team: Team, email: str, role: str, invited_by: User
) -> tuple[Invitation, str]:
    """Invite an email to the team; returns the invitation and the one-time token."""
    email = email.strip().lower()
    if role not in Role.values or (role == Role.OWNER and not _is_owner(team, invited_by)):
        raise ApplicationError(
            "invalid_role", "Choose a valid role.", fields={"role": ["Invalid."]}
        )
    if Membership.objects.filter(team=team, user__username=email).exists():
        raise ApplicationError(
            "already_member",
            f"{email} is already a member.",
            fields={"email": ["Already a member."]},
        )
    limit = team.subscription.plan.member_limit if hasattr(team, "subscription") else None
    if limit is not None and team.memberships.count() >= limit:
        raise ApplicationError(
            "member_limit",
            f"The {team.subscription.plan.name} plan allows "
            f"{limit} member(s); upgrade to invite more.",
        )
    raw, token_hash = new_token()
    invitation = Invitation.objects.create(
        team=team,
        email=email,
        role=role,
        token_hash=token_hash,
        invited_by=invited_by,
        expires_at=timezone.now() + timedelta(days=INVITATION_DAYS),
    )
    url = f"{settings.SITE_URL}/invitations/{raw}/"
    transaction.on_commit(
        lambda: send_mail(
            f"You are invited to {team.name} on gateway_billing",
            f"{invited_by.email} invited you to join {team.name} as {role}.\n\nAccept: {url}\n"
            f"The link expires in {INVITATION_DAYS} days.",
            settings.DEFAULT_FROM_EMAIL,
            [email],
        )
    )
    return invitation, raw


def invitation_get(*, token: str) -> Invitation | None:
    return Invitation.objects.select_related("team").filter(token_hash=hash_secret(token)).first()


@transaction.atomic
def invitation_accept(*, token: str, user: User) -> Membership:
    invitation = (
        Invitation.objects.select_for_update().filter(token_hash=hash_secret(token)).first()
    )
    if invitation is None or not invitation.is_pending:
        raise ApplicationError(
            "invitation_invalid", "This invitation is unknown, used or expired.", status_code=404
        )
    if invitation.email != (user.email or user.username).lower():
        raise ApplicationError(
            "invitation_wrong_user",
            f"This invitation is for {invitation.email}; log in as that user.",
            status_code=403,
        )
    membership, _ = Membership.objects.get_or_create(
        team=invitation.team, user=user, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    return membership


def _is_owner(team: Team, user: User) -> bool:
    return Membership.objects.filter(team=team, user=user, role=Role.OWNER).exists()


@transaction.atomic
def membership_role_change(*, membership: Membership, role: str, actor: User) -> Membership:
    if not _is_owner(membership.team, actor):
        raise ApplicationError("forbidden", "Only owners change roles.", status_code=403)
    if role not in Role.values:
        raise ApplicationError(
            "invalid_role", "Choose a valid role.", fields={"role": ["Invalid."]}
        )
    locked = Membership.objects.select_for_update().get(pk=membership.pk)
    if locked.role == Role.OWNER and role != Role.OWNER:
        owners = Membership.objects.select_for_update().filter(
            team_id=locked.team_id, role=Role.OWNER
        )
        if owners.count() <= 1:
            raise ApplicationError(
                "last_owner",
                "A team needs at least one owner; promote another member to owner first.",
            )
    locked.role = role
    locked.save(update_fields=["role"])
    return locked
