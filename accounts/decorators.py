"""`team_view`: every team page resolves the caller's membership once, from (user, slug).

Not logged in: the login page (then back). Not a member: 404, so a page never confirms that
another team exists. A member without a required role: a 403 page. The view is called as
``view(request, membership, **kwargs)`` with ``membership.team`` (and its subscription) loaded.

The role matrix lives in the ``roles=`` of each view in accounts/views.py; the groups are here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from . import selectors
from .models import Membership, Role

OWNERS = frozenset({Role.OWNER})
MANAGERS = frozenset({Role.OWNER, Role.ADMIN})
AUDITORS = frozenset({Role.OWNER, Role.FINANCE})


def page_context(membership: Membership, **extra) -> dict:
    """What every team page's template needs: the team, the caller's role and what it allows."""
    return {
        "team": membership.team,
        "membership": membership,
        "can_manage": membership.role in MANAGERS,
        "is_owner": membership.role in OWNERS,
        "can_audit": membership.role in AUDITORS,
        **extra,
    }


def team_view(roles: Iterable[str] | None = None) -> Callable:
    allowed = frozenset(roles) if roles is not None else None

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, slug: str, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            membership = selectors.membership_for_team(user=request.user, slug=slug)
            if membership is None:
                raise Http404("No such team.")
            if allowed is not None and membership.role not in allowed:
                return render(
                    request,
                    "accounts/forbidden.html",
                    page_context(membership),
                    status=403,
                )
            return view(request, membership, **kwargs)

        return wrapper

    return decorator
