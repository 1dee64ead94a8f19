"""The finance dashboard (/finance/) and its ledger CSV: who may see them, and every figure
checked exactly against data written through the real services and the usage API."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from ledger.models import (
    EntryKind,
    LedgerEntry,
    LotSource,
    Payment,
    PaymentKind,
    PaymentStatus,
    TeamBalance,
)
from ledger.services.credits import credits_grant, ledger_adjust
from pricing.models import Price
from pricing.money import NANO
from tests.conftest import make_user

from .conftest import grant

pytestmark = pytest.mark.django_db
URL = "/finance/"
CSV_URL = "/finance/ledger.csv"
RECONCILE_URL = "/finance/reconcile/"

GPT5 = {"input_tokens": 1000, "output_tokens": 500, "cache_read_tokens": 200}  # 1.1295 credits
SONNET = {"input_tokens": 1000, "output_tokens": 1000}  # 0.018 USD = 3.24 credits


def _staff(email: str, *, superuser: bool = False, perm: bool = False, staff: bool = True):
    user = make_user(email)
    user.is_staff, user.is_superuser = staff, superuser
    user.save()
    if perm:
        user.user_permissions.add(Permission.objects.get(codename="view_ledgerentry"))
    return user


@pytest.fixture
def superuser():
    return _staff("root@example.com", superuser=True)


@pytest.fixture
def finance_staff():
    return _staff("fin@example.com", perm=True)


# ---- access ----------------------------------------------------------------------------------


def test_anonymous_is_sent_to_the_login_page(client):
    for url in (URL, f"{CSV_URL}?from=2026-01-01"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=/finance/")
    assert client.post(RECONCILE_URL).status_code == 302


@pytest.mark.parametrize(
    "who",
    ["team_owner", "staff_without_permission", "superuser_not_staff", "permission_not_staff"],
)
def test_everyone_else_gets_403(client, team, owner, who):
    user = {
        "team_owner": lambda: owner.user,
        "staff_without_permission": lambda: _staff("staff@example.com"),
        "superuser_not_staff": lambda: _staff("su@example.com", superuser=True, staff=False),
        "permission_not_staff": lambda: _staff("p@example.com", perm=True, staff=False),
    }[who]()
    client.force_login(user)
    page = client.get(URL)
    assert page.status_code == 403
    assert "finance dashboard is for staff" in page.content.decode()
    assert client.get(CSV_URL).status_code == 403
    assert client.post(RECONCILE_URL).status_code == 403
    assert 'href="/finance/"' not in client.get("/pricing/").content.decode()  # no nav link


@pytest.mark.parametrize("who", ["finance_staff", "superuser"])
def test_staff_with_the_permission_and_superusers_get_in(client, request, who):
    client.force_login(request.getfixturevalue(who))
    response = client.get(URL)
    assert response.status_code == 200
    assert 'href="/finance/"' in response.content.decode()  # the header links to it
    assert client.get(CSV_URL).status_code == 200
    index = client.get("/admin/")
    assert index.status_code == 200 and 'href="/finance/"' in index.content.decode()


# ---- the figures -----------------------------------------------------------------------------


def _usage(key_client_for, event_id: str, model: str, usage: dict) -> dict:
    response = key_client_for.post(
        "/api/v1/usage", {"id": event_id, "model": model, "usage": usage}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def _payment(team, kind, status, cents, *, paid_at, refunded=0):
    return Payment.objects.create(
        team=team,
        kind=kind,
        provider="fake",
        status=status,
        amount_cents=cents,
        refunded_cents=refunded,
        credits_nano=cents * 18 * NANO // 10,  # 1.80 credits per cent
        paid_at=paid_at,
    )


@pytest.fixture
def days():
    today = timezone.now().astimezone(UTC).date()
    return {
        "today": today,
        "yesterday": today - timedelta(days=1),
        "today_at": datetime.combine(today, time(0, 0, 1), tzinfo=UTC),
        "yesterday_at": datetime.combine(today - timedelta(days=1), time(12), tzinfo=UTC),
        "long_ago_at": datetime.combine(today - timedelta(days=40), time(12), tzinfo=UTC),
    }


@pytest.fixture
def books(team, outsider_team, key_client, superuser, days):
    """Credits in and out of `team` through the services and the API, an outsider team in
    overdraft, unrated usage, and payments in every state."""
    grant(team, 100)  # a top-up: +100
    credits_grant(
        team_id=team.id,
        kind=EntryKind.PROMO_GRANT,
        source=LotSource.PROMO,
        amount_nano=20 * NANO,
        reference="promo:test",
    )
    ledger_adjust(
        team=team,
        amount_nano=-5 * NANO,
        reason="=HYPERLINK(evil) double charge",
        author=superuser,
        reference="manual:minus",
    )
    ledger_adjust(
        team=team,
        amount_nano=3 * NANO,
        reason="goodwill",
        author=superuser,
        reference="manual:plus",
    )
    api = key_client(team)
    _usage(api, "g1", "gpt-5", GPT5)
    _usage(api, "g2", "gpt-5", GPT5)
    _usage(api, "s1", "claude-sonnet-4-5-20250929", SONNET)
    assert _usage(api, "u1", "gpt-5-pro", GPT5)["state"] == "unrated"
    assert _usage(api, "u2", "gpt-5-pro", GPT5)["state"] == "unrated"
    _usage(key_client(outsider_team), "o1", "gpt-5", GPT5)  # from zero: an overdraft

    T, A, S = PaymentKind.TOPUP, PaymentKind.AUTO_RECHARGE, PaymentKind.SUBSCRIPTION
    ok, refunded = PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED
    _payment(team, T, ok, 2000, paid_at=days["today_at"])
    _payment(team, A, ok, 1000, paid_at=days["today_at"])
    _payment(team, T, refunded, 500, paid_at=days["yesterday_at"], refunded=500)
    _payment(
        team, S, PaymentStatus.PARTIALLY_REFUNDED, 2900, paid_at=days["yesterday_at"], refunded=900
    )
    _payment(team, T, PaymentStatus.FAILED, 9999, paid_at=None)
    _payment(team, T, PaymentStatus.PENDING, 7777, paid_at=None)
    _payment(outsider_team, T, ok, 4242, paid_at=days["long_ago_at"])
    return team


def test_revenue_by_day_counts_taken_money_and_refunds_exactly(client, books, superuser, days):
    client.force_login(superuser)
    context = client.get(URL).context
    revenue = context["revenue"]
    assert len(revenue.days) == 30
    assert revenue.days[-1].day == days["today"]
    today, yesterday = revenue.days[-1], revenue.days[-2]
    assert (today.topups_cents, today.auto_recharges_cents, today.net_cents) == (2000, 1000, 3000)
    assert (yesterday.topups_cents, yesterday.subscriptions_cents) == (500, 2900)
    assert (yesterday.refunds_cents, yesterday.net_cents) == (-1400, 2000)
    total = revenue.total
    assert (total.topups_cents, total.auto_recharges_cents, total.subscriptions_cents) == (
        2500,
        1000,
        2900,
    )
    assert (total.refunds_cents, total.net_cents, total.payments) == (-1400, 5000, 4)
    assert context["chart_data"][-1] == {
        "day": days["today"].isoformat(),
        "gross": "30.00",
        "refunds": "0.00",
        "net": "30.00",
    }
    assert context["chart_data"][-2]["refunds"] == "-14.00"
    html = client.get(URL).content.decode()
    assert '<td data-testid="total-net">50.00</td>' in html
    assert '<td data-testid="total-refunds">-14.00</td>' in html
    assert 'id="revenue-data"' in html  # the chart's data, as decimal strings

    # A period that reaches back 40 days includes the old payment.
    first = (days["today"] - timedelta(days=40)).isoformat()
    older = client.get(URL, {"from": first}).context["revenue"]
    assert older.total.topups_cents == 2500 + 4242 and older.total.net_cents == 5000 + 4242


def test_credits_issued_and_consumed(client, books, superuser):
    client.force_login(superuser)
    credits = client.get(URL).context["credits"]
    total = credits.total
    # in: top-up 100 + promo 20 + adjustment 3; out: usage 3 x 1.1295 (two of ours, one of the
    # outsider's) + 3.24, the -5 adjustment
    assert total.issued == 123 * NANO
    assert total.consumed == -(3 * 1_129_500_000 + 3_240_000_000)
    assert total.expired == 0
    assert total.other_out == -5 * NANO
    kinds = {k.kind: (k.credits_in, k.credits_out, k.entries) for k in credits.kinds}
    assert kinds == {
        "topup": (100 * NANO, 0, 1),
        "promo_grant": (20 * NANO, 0, 1),
        "adjustment": (3 * NANO, -5 * NANO, 2),
        "usage": (0, -(3 * 1_129_500_000 + 3_240_000_000), 4),
    }
    assert credits.days[-1].issued == 123 * NANO  # all written today


def test_liability_overdrafts_provider_cost_and_unrated(client, books, superuser, outsider_team):
    client.force_login(superuser)
    context = client.get(URL).context
    team_balance = 123 * NANO - 5 * NANO - 2 * 1_129_500_000 - 3_240_000_000  # 112.501
    liability = context["liability"]
    assert (liability.credits_nano, liability.teams) == (team_balance, 1)
    assert liability.usd == Decimal("0.63")  # 112.501 / 180 = 0.6250055...
    assert sum(liability.by_source.values()) == team_balance

    overdrafts = context["overdrafts"]
    assert overdrafts.count == 1
    row = overdrafts.rows[0]
    assert (row.team_id, row.balance_nano, row.overdraft_nano) == (
        outsider_team.id,
        -1_129_500_000,
        1_129_500_000,
    )

    costs = {p.provider: p for p in context["provider_costs"]}
    assert set(costs) == {"openai", "anthropic"}
    assert costs["openai"].cost_usd == Decimal("0.018825")  # 3 x 0.006275
    assert costs["openai"].credits_nano == 3 * 1_129_500_000
    assert costs["openai"].events == 3
    assert [(m.model, m.cost_usd) for m in costs["openai"].models] == [
        ("gpt-5", Decimal("0.018825"))
    ]
    assert costs["anthropic"].cost_usd == Decimal("0.018")
    assert costs["anthropic"].credits_nano == 3_240_000_000

    unrated = context["unrated"]
    assert [(r["model__name"], r["events"], r["teams"]) for r in unrated] == [("gpt-5-pro", 2, 1)]

    html = client.get(URL).content.decode()
    assert '<td data-testid="cost-openai"><strong>0.018825</strong></td>' in html
    assert '<td data-testid="unrated-gpt-5-pro">2</td>' in html
    assert "112.501 credits ≈ $0.63" in html


def test_the_period_filters_what_happened_in_it(client, books, superuser, days):
    client.force_login(superuser)
    a_month_ago = days["today"] - timedelta(days=35)
    context = client.get(
        URL, {"from": a_month_ago.isoformat(), "to": (a_month_ago + timedelta(days=3)).isoformat()}
    ).context
    assert len(context["revenue"].days) == 4
    assert context["revenue"].total.payments == 0
    assert context["credits"].total.issued == 0
    assert context["provider_costs"] == []
    # Balances are today's, whatever the period.
    assert context["liability"].teams == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2026-13-01"}, "Enter the start date as YYYY-MM-DD."),
        ({"to": "yesterday"}, "Enter the end date as YYYY-MM-DD."),
        ({"from": "2026-05-02", "to": "2026-05-01"}, "The start date is after the end date."),
        ({"from": "2024-01-01", "to": "2026-01-01"}, "Choose at most 366 days at a time."),
    ],
)
def test_bad_dates_are_refused_with_a_message(client, superuser, params, message):
    client.force_login(superuser)
    page = client.get(URL, params)
    assert page.status_code == 400
    assert message in page.content.decode()
    assert "revenue" not in page.context
    export = client.get(CSV_URL, params)
    assert export.status_code == 400
    assert message in export.content.decode()


def test_a_full_year_is_accepted(client, superuser):
    client.force_login(superuser)
    response = client.get(URL, {"from": "2025-01-01", "to": "2026-01-01"})
    assert response.status_code == 200
    assert len(response.context["revenue"].days) == 366


# ---- CSV -------------------------------------------------------------------------------------


def _csv(response) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response.streaming
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_ledger_csv_has_one_exact_row_per_entry(client, books, superuser, days):
    client.force_login(superuser)
    response = client.get(CSV_URL, {"from": days["today"].isoformat()})
    today = days["today"].strftime("%Y%m%d")
    assert response["Content-Disposition"] == f'attachment; filename="ledger-{today}-{today}.csv"'
    rows = _csv(response)
    assert rows[0] == [
        "id",
        "created_at",
        "team",
        "kind",
        "credits",
        "balance_after",
        "reference",
        "price_version",
        "reason",
        "author",
    ]
    entries = list(LedgerEntry.objects.order_by("id"))
    assert [int(row[0]) for row in rows[1:]] == [e.id for e in entries]
    by_reference = {row[6]: row for row in rows[1:]}
    minus = by_reference["manual:minus"]
    assert minus[2:6] == [books.slug, "adjustment", "-5.000000000", "115.000000000"]
    assert minus[8] == "'=HYPERLINK(evil) double charge"  # not run as a formula
    assert minus[9] == "root@example.com"
    usage = next(row for row in rows[1:] if row[3] == "usage")
    gpt5 = Price.objects.get(model__name="gpt-5")
    assert usage[4] == "-1.129500000" and usage[7] == str(gpt5.id)
    assert datetime.fromisoformat(usage[1]).tzinfo is not None
    topup = by_reference[next(r for r in by_reference if r.startswith("test-grant:"))]
    assert topup[4:6] == ["100.000000000", "100.000000000"] and topup[7:10] == ["", "", ""]


def test_ledger_csv_of_an_empty_period_is_its_header(client, books, superuser):
    client.force_login(superuser)
    rows = _csv(client.get(CSV_URL, {"from": "2025-01-01", "to": "2025-01-31"}))
    assert len(rows) == 1


# ---- reconciliation --------------------------------------------------------------------------


def test_reconciliation_runs_on_demand_and_the_dashboard_shows_the_last_run(
    client, books, superuser
):
    client.force_login(superuser)
    assert "No reconciliation has run yet" in client.get(URL).content.decode()
    page = client.post(RECONCILE_URL)
    assert page.status_code == 200
    assert "no drift" in page.content.decode()
    assert client.get(RECONCILE_URL).status_code == 405  # POST only (CSRF-protected)

    TeamBalance.objects.filter(team=books).update(balance_nano=1)  # behind the ledger's back
    page = client.post(RECONCILE_URL).content.decode()
    assert "1 drift" in page and books.slug in page
    assert "112.501000000" in page  # expected, from the entries
    dashboard = client.get(URL)
    assert dashboard.context["reconciliation"]["drifts"] == 1
    assert "1 drift" in dashboard.content.decode()


# ---- queries ---------------------------------------------------------------------------------


def _more_data(team_factory, key_client, n: int) -> None:
    for i in range(n):
        other = team_factory(plan="test-zero")
        grant(other, 10)
        _usage(key_client(other), f"x{i}", "gpt-5", GPT5)
        _payment(other, PaymentKind.TOPUP, PaymentStatus.SUCCEEDED, 100, paid_at=timezone.now())


def test_the_dashboard_and_the_csv_take_a_bounded_number_of_queries(
    client, books, superuser, team_factory, key_client, django_assert_max_num_queries
):
    client.force_login(superuser)
    # session, user, then one query per report (revenue, credits, 2 for liability, provider
    # cost, unrated, overdrafts)
    with django_assert_max_num_queries(9):
        assert client.get(URL).status_code == 200
    with django_assert_max_num_queries(3):
        _csv(client.get(CSV_URL))
    _more_data(team_factory, key_client, 6)
    with django_assert_max_num_queries(9):
        assert client.get(URL).context["revenue"].total.payments == 4 + 6
    entries = LedgerEntry.objects.count()
    with django_assert_max_num_queries(3):
        rows = _csv(client.get(CSV_URL))
    assert len(rows) == 1 + entries
