"""The Django admin's money and tenancy lists: filters, search and date drill-down work, the
ledger, usage, audit and payment records are read-only, and a changelist costs the same
number of queries with 2 rows as with 8 (no query per row)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import AuditEntry
from ledger.models import (
    AutoRecharge,
    Budget,
    CreditLot,
    LedgerEntry,
    Payment,
    PaymentCustomer,
    StripeEvent,
    UsageEvent,
)
from ledger.services.budgets import budget_create
from ledger.services.credits import ledger_adjust
from pricing.money import NANO
from tests.conftest import make_user

from .conftest import grant

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("zero_plan")]

CHANGELISTS = {
    "teams": "/admin/accounts/team/",
    "memberships": "/admin/accounts/membership/",
    "api keys": "/admin/accounts/apikey/",
    "audit entries": "/admin/accounts/auditentry/",
    "usage events": "/admin/ledger/usageevent/",
    "ledger entries": "/admin/ledger/ledgerentry/",
    "lots": "/admin/ledger/creditlot/",
    "balances": "/admin/ledger/teambalance/",
    "budgets": "/admin/ledger/budget/",
    "payments": "/admin/ledger/payment/",
    "payment customers": "/admin/ledger/paymentcustomer/",
    "stripe events": "/admin/ledger/stripeevent/",
    "auto recharge": "/admin/ledger/autorecharge/",
}


@pytest.fixture
def superuser():
    user = make_user("root@example.com")
    user.is_staff = user.is_superuser = True
    user.save()
    return user


_made = {"n": 0}


def _rows(count: int, *, team_factory, key_client, actor) -> None:
    """`count` teams, each with a row in every list above."""
    for _ in range(count):
        _made["n"] += 1
        n = _made["n"]
        team = team_factory(plan="test-zero")
        grant(team, 10)
        ledger_adjust(
            team=team, amount_nano=-NANO, reason="test", author=actor, reference=f"manual:{n}"
        )
        response = key_client(team).post(
            "/api/v1/usage",
            {"id": f"e{n}", "model": "gpt-5", "usage": {"input_tokens": 10}},
            format="json",
        )
        assert response.status_code == 201
        budget_create(
            team=team,
            actor=actor,
            name=f"b{n}",
            scope="team",
            period="month",
            limit_nano=5 * NANO,
        )
        Payment.objects.create(
            team=team,
            kind="topup",
            provider="fake",
            status="succeeded",
            amount_cents=500,
            credits_nano=900 * NANO,
            paid_at=timezone.now(),
        )
        PaymentCustomer.objects.create(team=team, provider="fake", customer_id=f"cus_{n}")
        AutoRecharge.objects.create(team=team, enabled=True, threshold_nano=10 * NANO)
        StripeEvent.objects.create(
            event_id=f"evt_{n}", type="checkout.session.completed", payload={"id": f"evt_{n}"}
        )


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(queries)


def test_changelists_do_not_query_per_row(client, superuser, team_factory, key_client):
    client.force_login(superuser)
    _rows(2, team_factory=team_factory, key_client=key_client, actor=superuser)
    few = {name: _queries(client, url) for name, url in CHANGELISTS.items()}
    _rows(6, team_factory=team_factory, key_client=key_client, actor=superuser)
    assert Payment.objects.count() == 8 and UsageEvent.objects.count() == 8
    many = {name: _queries(client, url) for name, url in CHANGELISTS.items()}
    assert many == few


def test_filters_search_and_date_drill_down(client, superuser, team_factory, key_client):
    client.force_login(superuser)
    _rows(2, team_factory=team_factory, key_client=key_client, actor=superuser)
    today = timezone.now()
    day = (
        f"created_at__year={today.year}&created_at__month={today.month}&created_at__day={today.day}"
    )
    cases = {
        f"/admin/ledger/ledgerentry/?kind__exact=adjustment&{day}": 2,
        "/admin/ledger/ledgerentry/?q=manual": 2,
        "/admin/ledger/usageevent/?state__exact=billed&provider__exact=openai": 2,
        "/admin/ledger/payment/?status__exact=succeeded&kind__exact=topup": 2,
        "/admin/ledger/payment/?status__exact=refunded": 0,
        "/admin/ledger/stripeevent/?q=evt_": 2,
        "/admin/ledger/budget/?scope__exact=team&period__exact=month": 2,
        f"/admin/accounts/auditentry/?{day}": AuditEntry.objects.count(),
        f"/admin/accounts/team/?{day}": 2,
        "/admin/ledger/creditlot/?source__exact=addon": 2,
    }
    for url, expected in cases.items():
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.context["cl"].result_count == expected, url


READ_ONLY = {
    "ledgerentry": LedgerEntry,
    "usageevent": UsageEvent,
    "creditlot": CreditLot,
    "budget": Budget,
    "payment": Payment,
    "paymentcustomer": PaymentCustomer,
    "stripeevent": StripeEvent,
    "autorecharge": AutoRecharge,
}


def test_records_are_read_only_even_for_a_superuser(client, superuser, team_factory, key_client):
    client.force_login(superuser)
    _rows(1, team_factory=team_factory, key_client=key_client, actor=superuser)
    audit = AuditEntry.objects.first()
    targets = [(f"ledger/{name}", model.objects.first().pk) for name, model in READ_ONLY.items()]
    targets.append(("accounts/auditentry", audit.pk))
    for path, pk in targets:
        base = f"/admin/{path}/"
        assert client.get(f"{base}{pk}/change/").status_code == 200, path  # view
        assert client.post(f"{base}{pk}/change/", {}).status_code == 403, path
        assert client.get(f"{base}add/").status_code == 403, path
        assert client.post(f"{base}{pk}/delete/").status_code == 403, path
    entry = LedgerEntry.objects.filter(kind="adjustment").first()
    assert client.get(f"/admin/ledger/ledgerentry/{entry.pk}/change/").status_code == 200
    assert client.get("/admin/ledger/ledgerentry/adjust/").status_code == 200  # still there


def test_stripe_event_payload_is_readable(client, superuser):
    client.force_login(superuser)
    event = StripeEvent.objects.create(
        event_id="evt_x",
        type="payment_intent.succeeded",
        payload={"id": "evt_x", "data": {"object": {"amount": 500}}},
    )
    html = client.get(f"/admin/ledger/stripeevent/{event.pk}/change/").content.decode()
    assert "<pre>{\n  &quot;data&quot;: {\n    &quot;object&quot;: {" in html
    assert "&quot;amount&quot;: 500" in html
