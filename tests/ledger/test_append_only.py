"""The ledger is append-only at the database: UPDATE and DELETE fail on both backends."""

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import Team
from ledger.models import LedgerEntry

from .conftest import grant


@pytest.mark.django_db
def test_postgresql_refuses_update_and_delete_of_a_ledger_row(team):
    entry = grant(team, 10)
    row = LedgerEntry.objects.filter(reference=entry.reference)
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        row.update(amount_nano=1)
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        row.delete()
    with (
        pytest.raises(IntegrityError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,  # raw SQL meets the same trigger
    ):
        cursor.execute("UPDATE ledger_ledgerentry SET reason = 'x'")
    assert row.get().amount_nano == 10 * 10**9


@pytest.mark.django_db(databases=["default", "sqlite"])
def test_sqlite_refuses_update_and_delete_of_a_ledger_row():
    team = Team.objects.using("sqlite").create(name="Lite", slug="lite")
    LedgerEntry.objects.using("sqlite").create(
        team=team, kind="topup", amount_nano=5, balance_after_nano=5, reference="lite:1",
        created_at=timezone.now(),
    )  # fmt: skip
    rows = LedgerEntry.objects.using("sqlite").filter(reference="lite:1")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(using="sqlite"):
        rows.update(amount_nano=6)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(using="sqlite"):
        rows.delete()
    assert rows.get().amount_nano == 5
