"""Shared fixtures: the catalog, personas (owner, admin, finance, member, outsider team),
API clients and keys. Tests run on PostgreSQL and Redis (gateway_billing.settings.test)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.authentication import keys_forget_all
from accounts.models import ApiKey, Membership, Plan, Role, Team
from pricing.selectors import forget_book

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

User = get_user_model()
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    forget_book()  # the next price_book() call compares with the (now empty) shared version
    keys_forget_all()
    yield
    cache.clear()
    forget_book()
    keys_forget_all()


@pytest.fixture
def catalog(db) -> None:
    """Plans, providers, models, prices and limits, loaded from the project's catalog file."""
    if not Plan.objects.exists():
        call_command("loadcatalog", verbosity=0)


def make_user(email: str) -> User:
    return User.objects.create_user(username=email, email=email, password=PASSWORD)


@dataclass
class Persona:
    user: User
    membership: Membership

    @property
    def team(self) -> Team:
        return self.membership.team


@pytest.fixture
def team_factory(catalog) -> Callable[..., Team]:
    counter = {"n": 0}

    def make(plan: str = "free", owner_email: str | None = None, name: str | None = None) -> Team:
        counter["n"] += 1
        n = counter["n"]
        owner = make_user(owner_email or f"owner{n}@example.com")
        return account_services.team_create(
            name=name or f"Team {n}", owner=owner, plan_code=plan, slug=f"team-{n}"
        )

    return make


@pytest.fixture
def team(team_factory) -> Team:
    return team_factory(plan="pro", owner_email="owner@example.com", name="Acme")


def _persona(team: Team, email: str, role: str) -> Persona:
    user = make_user(email)
    membership = Membership.objects.create(team=team, user=user, role=role)
    return Persona(user=user, membership=membership)


@pytest.fixture
def owner(team) -> Persona:
    membership = team.memberships.get(role=Role.OWNER)
    return Persona(user=membership.user, membership=membership)


@pytest.fixture
def admin_member(team) -> Persona:
    return _persona(team, "admin@example.com", Role.ADMIN)


@pytest.fixture
def finance(team) -> Persona:
    return _persona(team, "finance@example.com", Role.FINANCE)


@pytest.fixture
def member(team) -> Persona:
    return _persona(team, "member@example.com", Role.MEMBER)


@pytest.fixture
def outsider_team(team_factory) -> Team:
    return team_factory(plan="pro", owner_email="outsider@example.com", name="Outsider")


@pytest.fixture
def outsider(outsider_team) -> Persona:
    membership = outsider_team.memberships.get(role=Role.OWNER)
    return Persona(user=membership.user, membership=membership)


@pytest.fixture
def key_factory() -> Callable[..., tuple[ApiKey, str]]:
    def make(team: Team, scopes: list[str] | None = None, **kwargs) -> tuple[ApiKey, str]:
        created = account_services.api_key_create(
            team=team, scopes=scopes or ["usage:write", "usage:read", "authorize"], **kwargs
        )
        return created.key, created.secret

    return make


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def key_client(key_factory) -> Callable[..., APIClient]:
    """An APIClient authenticated with a fresh key of `team`."""

    def make(team: Team, scopes: list[str] | None = None, **kwargs) -> APIClient:
        _, secret = key_factory(team, scopes, **kwargs)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return client

    return make
