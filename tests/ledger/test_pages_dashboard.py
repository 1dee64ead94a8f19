"""The team dashboard's balance: the split (monthly, add-on, promotional, overdraft), the cycle
end and every live lot with its expiry, for every role, in a bounded number of queries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from ledger.models import EntryKind, LotSource

from .conftest import grant
from .pages import PERSONA_FIXTURE, ROLES, event, login, post_usage

pytestmark = pytest.mark.django_db


def dashboard(user, team) -> str:
    response = login(user).get(reverse("accounts:team", args=[team.slug]))
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize("role", ROLES)
def test_every_role_sees_the_balance_split_and_the_lots(request, team, role):
    expires = timezone.now() + timedelta(days=5)
    grant(team, 100, source=LotSource.PLAN, kind=EntryKind.PLAN_GRANT, expires_at=expires)
    grant(team, "25.5")
    grant(team, 7, source=LotSource.PROMO, kind=EntryKind.PROMO_GRANT, expires_at=expires)
    html = dashboard(request.getfixturevalue(PERSONA_FIXTURE[role]).user, team)
    assert '<strong id="balance-total">132.50</strong> credits' in html
    assert "<dt>Monthly</dt><dd>100.00" in html
    assert "<dt>Add-on</dt><dd>25.50" in html
    assert "<dt>Promotional</dt><dd>7.00" in html
    assert "<dt>Overdraft</dt><dd>0.00" in html
    assert html.count(f'datetime="{expires.isoformat()}"') == 2  # the plan and promo lots
    for label in ("Monthly plan credits", "Add-on purchase", "Promotional grant"):
        assert label in html


def test_an_overdraft_is_shown_until_paid(team, owner, key_client):
    post_usage(key_client(team), [event("od1")])  # 1.125 credits on an empty book
    html = dashboard(owner.user, team)
    assert '<strong id="balance-total">-1.125</strong>' in html
    assert '<strong class="error">1.125</strong>' in html
    grant(team, 2)
    html = dashboard(owner.user, team)
    assert (
        '<strong id="balance-total">0.875</strong>' in html and "<dt>Overdraft</dt><dd>0.00" in html
    )


def test_the_dashboard_links_the_money_pages_by_role(team, owner, member):
    usage, ledger = (reverse(f"ledger:{n}", args=[team.slug]) for n in ("usage", "history"))
    assert usage in dashboard(member.user, team) and ledger not in dashboard(member.user, team)
    assert ledger in dashboard(owner.user, team)


def test_the_dashboard_takes_the_same_queries_for_1_or_30_lots(
    team, owner, django_assert_max_num_queries
):
    client = login(owner.user)
    url = reverse("accounts:team", args=[team.slug])
    counts = []
    for n in (1, 29):
        for _ in range(n):
            grant(team, 1, expires_at=timezone.now() + timedelta(days=3))
        with django_assert_max_num_queries(10) as captured:
            assert client.get(url).status_code == 200
        counts.append(len(captured))
    assert counts[0] == counts[1], counts
