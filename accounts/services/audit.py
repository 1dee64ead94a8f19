"""The audit log: one row per human (or scheduled) action that changes who can do what, what a
team pays, or where its data goes. Rows are append-only at the database."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction

from ..models import AuditEntry, Team


@transaction.atomic
def audit_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    team: Team | None,
    action: str,
    target: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    ip: str | None = None,
) -> AuditEntry:
    """Write one audit entry in the caller's transaction: it exists only if the change does.

    `actor` None (or anonymous) is the system (a scheduled job, a management command); `team`
    None is a global action (a price edit); `ip` is the request's address when a view has one.
    """
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    return AuditEntry.objects.create(
        actor=actor,
        team=team,
        action=action,
        target=target[:300],
        before=before,
        after=after,
        ip=ip or None,
    )
