"""Teams, members, invitations, projects, API keys. Changes to who can do what (roles,
invitations, keys) are written to the audit log in the same transaction.

Flows that check a team-wide rule (the last owner, the plan's member limit) lock the team row
first, so two concurrent requests cannot both pass the check, and always in the same order.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from gateway_billing.errors import ApplicationError
from ledger.services.credits import plan_cycle_grant

from ..authentication import team_keys_forget
from ..keys import hash_secret, new_api_key, new_token
from ..models import (
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
from .audit import audit_record

User = get_user_model()
INVITATION_DAYS = 7
MANAGER_ROLES = frozenset({Role.OWNER, Role.ADMIN})


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


def _lock_team(team_id: int) -> Team:
    return Team.objects.select_for_update().get(pk=team_id)


def _role_of(team: Team, user: User) -> str | None:
    return Membership.objects.filter(team=team, user=user).values_list("role", flat=True).first()


def _is_owner(team: Team, user: User) -> bool:
    return _role_of(team, user) == Role.OWNER


@transaction.atomic
def team_create(
    *, name: str, owner: User, plan_code: str = "free", slug: str | None = None
) -> Team:
    """A team with its owner and a subscription whose first cycle starts now."""
    name = name.strip()
    if not name:
        raise ApplicationError("invalid", "A team needs a name.", fields={"name": ["Required."]})
    plan = Plan.objects.filter(code=plan_code).first()
    if plan is None:
        raise ApplicationError("unknown_plan", f"No plan with code {plan_code!r}; run loadcatalog.")
    if slug is not None and (not slug or slugify(slug) != slug):
        raise ApplicationError(
            "invalid_slug",
            f"{slug!r} is not a slug: use lowercase letters, digits and hyphens.",
            fields={"slug": ["Invalid."]},
        )
    taken = ApplicationError(
        "slug_taken", f"A team with slug {slug!r} exists.", fields={"slug": ["Taken."]}
    )
    if slug and Team.objects.filter(slug=slug).exists():
        raise taken
    try:
        with transaction.atomic():
            team = Team.objects.create(name=name, slug=slug or _unique_slug(name))
    except IntegrityError:  # a concurrent create took the slug between the check and the insert
        raise taken from None
    Membership.objects.create(team=team, user=owner, role=Role.OWNER, can_manage_billing=True)
    start, end = cycle_bounds(timezone.now().replace(microsecond=0))
    Subscription.objects.create(
        team=team, plan=plan, current_cycle_start=start, current_cycle_end=end
    )
    # The first cycle's monthly credits, in the same transaction as the team itself.
    plan_cycle_grant(team=team, plan=plan, cycle_start=start, cycle_end=end)
    return team


@transaction.atomic
def user_signup(*, email: str, password: str, team_name: str) -> tuple[User, Team]:
    """A new user (username = lowercase email) and the Free team they own."""
    email = User.objects.normalize_email(email).strip().lower()
    taken = ApplicationError(
        "email_taken",
        "An account with this email exists; log in instead.",
        fields={"email": ["Taken."]},
    )
    if User.objects.filter(username=email).exists():
        raise taken
    try:
        with transaction.atomic():
            user = User.objects.create_user(username=email, email=email, password=password)
    except IntegrityError:  # a concurrent signup with the same email
        raise taken from None
    team = team_create(name=team_name.strip() or email.split("@")[0], owner=user)
    return user, team


@transaction.atomic
def project_create(*, team: Team, slug: str, name: str = "") -> Project:
    slug = slugify(slug)
    if not slug:
        raise ApplicationError(
            "invalid_slug",
            "A project needs a slug: lowercase letters, digits and hyphens.",
            fields={"slug": ["Required."]},
        )
    try:
        with transaction.atomic():
            return Project.objects.create(team=team, slug=slug, name=name.strip() or slug)
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
    ip: str | None = None,
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
        name=name.strip(),
        prefix=prefix,
        key_hash=key_hash,
        scopes=_validate_scopes(scopes),
        created_by=created_by,
    )
    audit_record(
        actor=created_by,
        team=team,
        action="api_key.create",
        target=f"api_key:{key.prefix}",
        after={
            "name": key.name,
            "scopes": key.scopes,
            "project": project.slug if project else None,
        },
        ip=ip,
    )
    return CreatedKey(key=key, secret=raw)


@transaction.atomic
def api_key_revoke(*, key: ApiKey, actor: User | None = None, ip: str | None = None) -> ApiKey:
    """Revoke a key; its next request is refused: after commit the team's epoch moves, so every
    process loads the key again (and finds it revoked)."""
    locked = ApiKey.objects.select_for_update().get(pk=key.pk)
    if locked.revoked_at is None:
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        team_id = locked.team_id
        transaction.on_commit(lambda: team_keys_forget(team_id))
        audit_record(
            actor=actor,
            team=locked.team,
            action="api_key.revoke",
            target=f"api_key:{locked.prefix}",
            before={"revoked": False},
            after={"revoked": True},
            ip=ip,
        )
    key.revoked_at = locked.revoked_at
    return key


def _check_member_limit(team: Team, *, pending_invitations: bool) -> None:
    subscription = Subscription.objects.select_related("plan").filter(team=team).first()
    limit = subscription.plan.member_limit if subscription else None
    if limit is None:
        return
    used = Membership.objects.filter(team=team).count()
    if pending_invitations:
        used += Invitation.objects.filter(
            team=team,
            accepted_at__isnull=True,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        ).count()
    if used >= limit:
        raise ApplicationError(
            "member_limit",
            f"The {subscription.plan.name} plan allows {limit} member(s); "
            "upgrade the plan to invite more.",
        )


@transaction.atomic
def invitation_create(
    *, team: Team, email: str, role: str, invited_by: User, ip: str | None = None
) -> tuple[Invitation, str]:
    """Invite an email to the team (owners and admins; only owners invite owners). Returns
    the invitation and its one-time token; the email leaves after commit. A new invitation to
    the same address replaces the pending one."""
    email = email.strip().lower()
    _lock_team(team.id)
    inviter_role = _role_of(team, invited_by)
    if inviter_role not in MANAGER_ROLES:
        raise ApplicationError(
            "forbidden", "Only owners and admins invite members.", status_code=403
        )
    if role not in Role.values or (role == Role.OWNER and inviter_role != Role.OWNER):
        raise ApplicationError(
            "invalid_role", "Choose a valid role.", fields={"role": ["Invalid."]}
        )
    if Membership.objects.filter(team=team, user__username=email).exists():
        raise ApplicationError(
            "already_member",
            f"{email} is already a member.",
            fields={"email": ["Already a member."]},
        )
    now = timezone.now()
    Invitation.objects.filter(
        team=team, email=email, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=now)
    _check_member_limit(team, pending_invitations=True)
    raw, token_hash = new_token()
    invitation = Invitation.objects.create(
        team=team,
        email=email,
        role=role,
        token_hash=token_hash,
        invited_by=invited_by,
        expires_at=now + timedelta(days=INVITATION_DAYS),
    )
    audit_record(
        actor=invited_by,
        team=team,
        action="invitation.create",
        target=f"invitation:{invitation.pk} {email}",
        after={"email": email, "role": role},
        ip=ip,
    )
    url = settings.SITE_URL.rstrip("/") + reverse("accounts:invitation", args=[raw])
    inviter = invited_by.email or invited_by.username
    transaction.on_commit(
        lambda: send_mail(
            f"You are invited to {team.name} on gateway_billing",
            f"{inviter} invited you to join {team.name} as {role}.\n\nAccept: {url}\n"
            f"The link expires in {INVITATION_DAYS} days.",
            settings.DEFAULT_FROM_EMAIL,
            [email],
        )
    )
    return invitation, raw


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor: User, ip: str | None = None) -> Invitation:
    if _role_of(invitation.team, actor) not in MANAGER_ROLES:
        raise ApplicationError(
            "forbidden", "Only owners and admins revoke invitations.", status_code=403
        )
    revoked = Invitation.objects.filter(
        pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=timezone.now())
    if revoked:
        audit_record(
            actor=actor,
            team=invitation.team,
            action="invitation.revoke",
            target=f"invitation:{invitation.pk} {invitation.email}",
            before={"email": invitation.email, "role": invitation.role},
            ip=ip,
        )
    invitation.refresh_from_db(fields=["revoked_at", "accepted_at"])
    return invitation


def _seats_changed(team_id: int) -> None:
    """Per-member plans bill each member: the provider's quantity follows, after commit."""

    def sync() -> None:
        from ledger.tasks import subscription_seats_sync

        subscription_seats_sync.delay(team_id)

    transaction.on_commit(sync, robust=True)


@transaction.atomic
def invitation_accept(*, token: str, user: User, ip: str | None = None) -> Membership:
    invalid = ApplicationError(
        "invitation_invalid", "This invitation is unknown, used or expired.", status_code=404
    )
    token_hash = hash_secret(token)
    team_id = (
        Invitation.objects.filter(token_hash=token_hash).values_list("team_id", flat=True).first()
    )
    if team_id is None:
        raise invalid
    team = _lock_team(team_id)  # the team first, as in every flow here: no lock-order deadlock
    invitation = Invitation.objects.select_for_update().get(token_hash=token_hash)
    if not invitation.is_pending:
        raise invalid
    if invitation.email != (user.email or user.username).lower():
        raise ApplicationError(
            "invitation_wrong_user",
            f"This invitation is for {invitation.email}; log in as that user.",
            status_code=403,
        )
    membership = Membership.objects.filter(team=team, user=user).first()
    if membership is None:
        # The plan may have changed since the invitation left: check the limit again.
        _check_member_limit(team, pending_invitations=False)
        membership = Membership.objects.create(team=team, user=user, role=invitation.role)
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    _seats_changed(team.pk)
    audit_record(
        actor=user,
        team=team,
        action="invitation.accept",
        target=f"invitation:{invitation.pk} {invitation.email}",
        after={"member": invitation.email, "role": membership.role},
        ip=ip,
    )
    return membership


@transaction.atomic
def membership_role_change(
    *, membership: Membership, role: str, actor: User, ip: str | None = None
) -> Membership:
    """Owners change roles; a team always keeps at least one owner."""
    _lock_team(membership.team_id)
    if not _is_owner(membership.team, actor):
        raise ApplicationError("forbidden", "Only owners change roles.", status_code=403)
    if role not in Role.values:
        raise ApplicationError(
            "invalid_role", "Choose a valid role.", fields={"role": ["Invalid."]}
        )
    locked = Membership.objects.get(pk=membership.pk)
    if locked.role == Role.OWNER and role != Role.OWNER:
        owners = Membership.objects.filter(team_id=locked.team_id, role=Role.OWNER).count()
        if owners <= 1:
            raise ApplicationError(
                "last_owner",
                "A team needs at least one owner; make another member an owner first.",
                fields={"role": ["The last owner cannot be demoted."]},
            )
    if locked.role != role:
        before = locked.role
        locked.role = role
        locked.save(update_fields=["role"])
        audit_record(
            actor=actor,
            team=locked.team,
            action="membership.role_change",
            target=f"membership:{locked.pk} {locked.user.email or locked.user.username}",
            before={"role": before},
            after={"role": role},
            ip=ip,
        )
    return locked
