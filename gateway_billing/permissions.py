"""Resolving the caller's team once per API request, and checking scopes.

An API key carries its team; a logged-in browser session names the team with `?team=<slug>`
(or has exactly one). Another team's objects are a 404, never a 403 that confirms they exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework import exceptions
from rest_framework.request import Request

from accounts.authentication import ApiPrincipal
from accounts.models import Membership

# Scopes a logged-in member may use through the browser session (read-only ones).
SESSION_SCOPES = frozenset({"usage:read"})


@dataclass(frozen=True, slots=True)
class TeamContext:
    team_id: int
    project_id: int | None = None
    member_id: int | None = None
    key_id: int | None = None
    user_id: int | None = None
    role: str | None = None


def session_membership(request: Request) -> Membership:
    """A logged-in user's membership of the team named by ?team=<slug> (or their only team);
    a team they do not belong to is a 404."""
    memberships = Membership.objects.filter(user=request.user).select_related("team")
    slug = request.query_params.get("team")
    if slug:
        membership = memberships.filter(team__slug=slug).first()
    else:
        found = list(memberships[:2])
        if len(found) > 1:
            raise exceptions.ValidationError(
                {"team": ["You belong to several teams: pass ?team=<slug>."]}
            )
        membership = found[0] if found else None
    if membership is None:
        raise exceptions.NotFound("No such team.")
    return membership


def key_context(principal: ApiPrincipal) -> TeamContext:
    """The team an API key acts for (its project and member when bound to them)."""
    return TeamContext(
        team_id=principal.team_id,
        project_id=principal.project_id,
        member_id=principal.member_id,
        key_id=principal.key_id,
    )


def team_context(request: Request, *, scope: str) -> TeamContext:
    """The caller's team for an operation needing `scope`, or a 401/403/404."""
    user = request.user
    if isinstance(user, ApiPrincipal):
        if scope not in user.scopes:
            raise exceptions.PermissionDenied(
                f"This API key lacks the `{scope}` scope; create a key that has it."
            )
        return key_context(user)
    if user is None or not getattr(user, "is_authenticated", False):
        raise exceptions.NotAuthenticated("Send an API key as `Authorization: Bearer <key>`.")
    if scope not in SESSION_SCOPES:
        raise exceptions.PermissionDenied(f"`{scope}` needs an API key, not a browser session.")
    membership = session_membership(request)
    return TeamContext(
        team_id=membership.team_id,
        member_id=membership.id,
        user_id=user.id,
        role=membership.role,
    )
