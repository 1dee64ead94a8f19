"""Accounts test fixtures. `catalog` loads the project's catalog when `loadcatalog` exists and
otherwise creates the three plans itself, so these tests run before and after it lands."""

from __future__ import annotations

import pytest
from django.core.management import call_command, get_commands
from django.test import Client

from accounts.models import Plan

PLANS = [
    {
        "code": "free",
        "name": "Free",
        "monthly_credits": 300,
        "member_limit": 1,
        "sort_order": 0,
    },
    {
        "code": "personal",
        "name": "Personal",
        "monthly_credits": 1000,
        "monthly_price_cents": 900,
        "can_purchase_credits": True,
        "addon_pack_credits": 500,
        "addon_pack_price_cents": 500,
        "auto_recharge_pack_credits": 200,
        "auto_recharge_pack_price_cents": 500,
        "sort_order": 1,
    },
    {
        "code": "pro",
        "name": "Pro",
        "monthly_credits": 5000,
        "monthly_price_cents": 2000,
        "price_per_member": True,
        "can_purchase_credits": True,
        "addon_pack_credits": 1500,
        "addon_pack_price_cents": 1000,
        "auto_recharge_pack_credits": 1000,
        "auto_recharge_pack_price_cents": 2000,
        "sort_order": 2,
    },
]


def ensure_plans() -> None:
    if Plan.objects.exists():
        return
    if "loadcatalog" in get_commands():
        call_command("loadcatalog", verbosity=0)
        return
    for plan in PLANS:
        Plan.objects.get_or_create(code=plan["code"], defaults=plan)


@pytest.fixture
def catalog(db) -> None:
    ensure_plans()


@pytest.fixture
def login_as():
    """A browser client logged in as a persona's user."""

    def make(persona_or_user) -> Client:
        client = Client()
        client.force_login(getattr(persona_or_user, "user", persona_or_user))
        return client

    return make
