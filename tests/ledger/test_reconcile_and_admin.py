"""Reconciliation (manage.py reconcile) and finance adjustments in the admin."""

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command

from accounts.models import Team
from ledger.models import LedgerEntry, TeamBalance
from pricing.money import NANO
from tests.conftest import make_user

from .conftest import balance_nano, entries_sum, grant

pytestmark = pytest.mark.django_db


def test_reconcile_reports_zero_drift_then_catches_a_tampered_balance(team, capsys):
    grant(team, 10)
    call_command("reconcile")
    assert "0 drift(s)" in capsys.readouterr().out
    TeamBalance.objects.filter(team=team).update(balance_nano=11 * NANO)  # behind the ledger's back
    with pytest.raises(CommandError, match="1 drift"):
        call_command("reconcile")
    out = capsys.readouterr().out
    assert f"DRIFT team={team.id} balance" in out
    assert "expected=10.000000000 actual=11.000000000" in out


@pytest.fixture
def finance_staff():
    user = make_user("fin@example.com")
    user.is_staff = True
    user.save()
    user.user_permissions.add(
        Permission.objects.get(codename="adjust_ledger"),
        Permission.objects.get(codename="view_ledgerentry"),
    )
    return user


def test_finance_writes_a_compensating_adjustment_with_a_reason(client, team, finance_staff):
    grant(team, 10)
    client.force_login(finance_staff)
    page = client.get("/admin/ledger/ledgerentry/adjust/")
    assert page.status_code == 200
    token = page.context["form"].initial["token"]
    form = {"team": team.slug, "kind": "adjustment", "amount": "-2.5", "reason": "", "token": token}
    assert client.post("/admin/ledger/ledgerentry/adjust/", form).status_code == 200  # no reason
    assert not LedgerEntry.objects.filter(kind="adjustment").exists()

    form["reason"] = "Double-billed request r-42"
    response = client.post("/admin/ledger/ledgerentry/adjust/", form)
    assert response.status_code == 302
    client.post("/admin/ledger/ledgerentry/adjust/", form)  # a double submit writes nothing more
    entry = LedgerEntry.objects.get(kind="adjustment")
    assert (entry.amount_nano, entry.author, entry.reason) == (
        -2_500_000_000,
        finance_staff,
        "Double-billed request r-42",
    )
    assert balance_nano(team) == entries_sum(team) == 7_500_000_000

    form.update(kind="refund", amount="1", token="other")
    client.post("/admin/ledger/ledgerentry/adjust/", form)
    assert balance_nano(team) == 8_500_000_000


def test_ledger_admin_is_read_only_and_adjusting_needs_the_permission(client, team):
    grant(team, 10)
    staff = make_user("staff@example.com")
    staff.is_staff = True
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    entry = LedgerEntry.objects.get(team=team)
    assert client.get("/admin/ledger/ledgerentry/").status_code == 200
    assert client.get(f"/admin/ledger/ledgerentry/{entry.pk}/change/").status_code == 200
    assert client.post(f"/admin/ledger/ledgerentry/{entry.pk}/delete/").status_code == 403
    assert client.get("/admin/ledger/ledgerentry/add/").status_code == 403

    plain = make_user("plain@example.com")
    plain.is_staff = True
    plain.save()
    client.force_login(plain)
    assert client.get("/admin/ledger/ledgerentry/adjust/").status_code == 403
    assert Team.objects.count() == 1
