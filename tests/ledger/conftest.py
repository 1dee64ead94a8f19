from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.db.models import Sum
from django.utils import timezone

from ledger.models import EntryKind, LedgerEntry, LotSource, TeamBalance
from ledger.services.credits import credits_grant
from pricing.money import NANO

_counter = {"n": 0}


def grant(
    team,
    credits: int | str,
    *,
    source: str = LotSource.ADDON,
    kind: str = EntryKind.TOPUP,
    expires_at: datetime | None = None,
    priority: int | None = None,
):
    from decimal import Decimal

    _counter["n"] += 1
    return credits_grant(
        team_id=team.id,
        kind=kind,
        source=source,
        amount_nano=int(Decimal(str(credits)) * NANO),
        reference=f"test-grant:{team.id}:{_counter['n']}",
        expires_at=expires_at,
        priority=priority,
    )


def balance_nano(team) -> int:
    return TeamBalance.objects.get(team_id=team.id).balance_nano


def entries_sum(team) -> int:
    return LedgerEntry.objects.filter(team_id=team.id).aggregate(s=Sum("amount_nano"))["s"] or 0


@pytest.fixture
def zero_plan(catalog):
    """A plan without monthly credits: ledger tests start from an empty book."""
    from accounts.models import Plan

    return Plan.objects.get_or_create(
        code="test-zero", defaults={"name": "Zero", "monthly_credits": 0}
    )[0]


@pytest.fixture
def team(team_factory, zero_plan):
    return team_factory(plan="test-zero", owner_email="owner@example.com", name="Acme")


@pytest.fixture
def outsider_team(team_factory, zero_plan):
    return team_factory(plan="test-zero", owner_email="outsider@example.com", name="Outsider")


@pytest.fixture
def soon():
    return timezone.now() + timedelta(days=10)
