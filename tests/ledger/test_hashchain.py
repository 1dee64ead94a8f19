"""Tamper evidence: every ledger entry is chained to the previous entry of its team by a hash
that the chain_ledger job fills in after the fact; the database lets that column be set once
and nothing else change; verify_ledger recomputes the chains and names the first broken link."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, IntegrityError, connection, connections, transaction
from django.utils import timezone

from accounts.models import Team
from ledger.hashchain import GENESIS, HASHED_FIELDS, NOT_HASHED, canonical, link
from ledger.models import EntryKind, LedgerChainHead, LedgerEntry
from ledger.services.book import Book
from ledger.services.chain import ledger_chain_extend
from ledger.tasks import chain_ledger

from .conftest import grant

# ---- the database allows filling the hash once, and nothing else --------------------------

HASH_A, HASH_B = "a" * 64, "b" * 64


def _changed_value(column: str):
    """An UPDATE ... SET column = <this> that changes the column of any test row."""
    return {
        "kind": "'refund'", "reference": "reference || 'x'", "reason": "reason || 'x'",
        "allocations": "'[]'", "buckets_after": "'{\"x\": 1}'",
        "created_at": "created_at + interval '1 second'",
    }.get(column, f"COALESCE({column}, 0) + 1")  # fmt: skip


def _columns() -> list[str]:
    return [f.column for f in LedgerEntry._meta.concrete_fields if f.column not in NOT_HASHED]


def _spend(team, credits: int, reference: str) -> None:
    with transaction.atomic():
        book = Book.open(team.id)
        nano = credits * 10**9
        book.post(EntryKind.USAGE, -nano, book.spend(nano), reference)
        book.close()


@pytest.mark.django_db
def test_postgresql_lets_the_hash_be_filled_once_and_nothing_else(team):
    entry = grant(team, 10)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE ledger_ledgerentry SET chain_hash = %s WHERE id = %s",
                       [HASH_A, entry.id])  # fmt: skip
    assert LedgerEntry.objects.get(pk=entry.id).chain_hash == HASH_A
    refused = [
        ("chain_hash = %s", [HASH_B]),  # a second fill
        ("chain_hash = NULL", []),
        *[(f"{c} = {_changed_value(c)}", []) for c in _columns()],
    ]
    fresh = grant(team, 5)  # unhashed: filling its hash together with another column fails too
    refused_fresh = [(f"chain_hash = %s, {c} = {_changed_value(c)}", [HASH_A]) for c in _columns()]
    for target, cases in ((entry, refused), (fresh, refused_fresh)):
        for assignment, params in cases:
            with (
                pytest.raises(IntegrityError, match="append-only"),
                transaction.atomic(),
                connection.cursor() as cursor,
            ):
                cursor.execute(
                    f"UPDATE ledger_ledgerentry SET {assignment} WHERE id = %s",
                    [*params, target.id],
                )
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.id).delete()
    assert LedgerEntry.objects.get(pk=entry.id).amount_nano == 10 * 10**9
    assert LedgerEntry.objects.get(pk=fresh.id).chain_hash is None


@pytest.mark.django_db(databases=["default", "sqlite"])
def test_sqlite_lets_the_hash_be_filled_once_and_nothing_else():
    team = Team.objects.using("sqlite").create(name="Lite", slug="lite")
    now = timezone.now()
    entries = [
        LedgerEntry.objects.using("sqlite").create(
            team=team, kind="topup", amount_nano=5, balance_after_nano=5, reference=f"lite:{n}",
            created_at=now, allocations=[{"lot": 1, "nano": 5}], buckets_after={"addon": 5},
        )
        for n in range(2)
    ]  # fmt: skip
    sqlite = connections["sqlite"]
    first, fresh = entries
    with sqlite.cursor() as cursor:
        cursor.execute("UPDATE ledger_ledgerentry SET chain_hash = %s WHERE id = %s",
                       [HASH_A, first.id])  # fmt: skip
    values = {"created_at": "'2000-01-01 00:00:00'", "buckets_after": "'{}'"}
    changed = {c: values.get(c, _changed_value(c).replace("interval '1 second'", "1")) for c in _columns()}  # fmt: skip
    cases = [
        (first, "chain_hash = %s", [HASH_B]),
        (first, "chain_hash = NULL", []),
        *[(first, f"{c} = {v}", []) for c, v in changed.items()],
        *[(fresh, f"chain_hash = %s, {c} = {v}", [HASH_A]) for c, v in changed.items()],
    ]
    for target, assignment, params in cases:
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(using="sqlite"),
            sqlite.cursor() as cursor,
        ):
            cursor.execute(
                f"UPDATE ledger_ledgerentry SET {assignment} WHERE id = %s",
                [*params, target.id],
            )
    rows = LedgerEntry.objects.using("sqlite")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(using="sqlite"):
        rows.filter(pk=first.id).delete()
    assert rows.get(pk=first.id).chain_hash == HASH_A
    assert rows.get(pk=fresh.id).chain_hash is None


# ---- the chain -------------------------------------------------------------------------------


def test_every_column_of_an_entry_is_hashed_or_excluded_on_purpose():
    columns = {f.attname for f in LedgerEntry._meta.concrete_fields}
    assert columns == set(HASHED_FIELDS) | set(NOT_HASHED)


def test_the_serialization_is_pinned():
    """Changing it silently would make every stored chain look tampered with."""
    row = {
        "id": 7, "team_id": 3, "kind": "usage", "amount_nano": -1129500000,
        "balance_after_nano": 4998870500000, "allocations": [{"nano": -1129500000, "lot": 2}],
        "buckets_after": {"monthly": 4998870500000, "addon": 0}, "reference": "usage:42",
        "usage_event_id": 42, "price_id": 9, "credits_per_usd": Decimal("180"),
        "author_id": None, "reason": "", "created_at": datetime(2026, 11, 23, 10, 26, 52, 266000,
                                                  tzinfo=dt_timezone(timedelta(hours=1))),
    }  # fmt: skip
    assert canonical(row) == (
        b'{"allocations":[{"lot":2,"nano":-1129500000}],"amount_nano":-1129500000,'
        b'"author_id":null,"balance_after_nano":4998870500000,'
        b'"buckets_after":{"addon":0,"monthly":4998870500000},'
        b'"created_at":"2026-11-23T09:26:52.266000+00:00","credits_per_usd":"180.0000",'
        b'"id":7,"kind":"usage","price_id":9,"reason":"","reference":"usage:42","team_id":3,'
        b'"usage_event_id":42,"v":1}'
    )
    assert link(GENESIS, row) == link(GENESIS, dict(row))
    assert link(GENESIS, row) != link(HASH_A, row)


def _recomputed(team) -> list[tuple[int, str | None, str]]:
    previous, out = GENESIS, []
    for row in LedgerEntry.objects.filter(team=team).order_by("id").values(*HASHED_FIELDS,
                                                                         "chain_hash"):  # fmt: skip
        previous = link(previous, row)
        out.append((row["id"], row["chain_hash"], previous))
    return out


@pytest.mark.django_db
def test_the_job_chains_each_teams_entries_in_id_order_and_runs_twice_safely(team, outsider_team):
    for n in range(3):
        grant(team, 10 + n)
        grant(outsider_team, 1)
    _spend(team, 4, "spend-1")
    result = ledger_chain_extend()
    assert (result.teams, result.entries) == (2, 7)
    for each in (team, outsider_team):
        chain = _recomputed(each)
        assert all(stored == expected for _, stored, expected in chain), each
        head = LedgerChainHead.objects.get(team=each)
        assert (head.entry_id, head.chain_hash) == chain[-1][::2]
    before = list(LedgerEntry.objects.order_by("id").values_list("chain_hash", flat=True))
    assert ledger_chain_extend().entries == 0  # no balance moved: nothing to do
    assert list(LedgerEntry.objects.order_by("id").values_list("chain_hash", flat=True)) == before


@pytest.mark.django_db
def test_the_chain_continues_from_the_last_hashed_entry(team):
    for n in range(5):
        grant(team, n + 1)
    ledger_chain_extend(chunk=2)  # in chunks
    first = [stored for _, stored, _ in _recomputed(team)]
    LedgerChainHead.objects.all().delete()  # derived state: the ledger itself says where it ends
    _spend(team, 1, "spend-after")
    grant(team, 2)
    assert ledger_chain_extend(chunk=2).entries == 2
    chain = _recomputed(team)
    assert [stored for _, stored, _ in chain[:5]] == first
    assert all(stored == expected for _, stored, expected in chain)


@pytest.mark.django_db
def test_ingest_leaves_the_hash_to_the_beat_job(team, key_client, settings):
    from gateway_billing.settings.celery import CELERY_BEAT_SCHEDULE

    assert CELERY_BEAT_SCHEDULE["chain-ledger"]["task"] == "ledger.tasks.chain_ledger"
    grant(team, 100)
    body = {"id": "e-1", "model": "gpt-5", "usage": {"input_tokens": 1000}}
    assert key_client(team).post("/api/v1/usage", body, format="json").status_code == 201
    entry = LedgerEntry.objects.get(reference__startswith="usage:")
    assert entry.chain_hash is None  # the hot path wrote no hash
    assert chain_ledger.delay().get() == 2
    entry.refresh_from_db()
    assert entry.chain_hash == _recomputed(team)[-1][2]


# ---- verify_ledger -----------------------------------------------------------------------------


def _verify(*args) -> str:
    out = io.StringIO()
    call_command("verify_ledger", *args, stdout=out)
    return out.getvalue()


def _verify_fails(*args) -> str:
    out = io.StringIO()
    with pytest.raises(CommandError, match="broken chain"):
        call_command("verify_ledger", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def behind_the_triggers_back():
    """Run SQL on the ledger with its append-only trigger off, as someone with the table
    owner's rights could (the test role owns the tables; the test's transaction is rolled back,
    trigger state included)."""

    def run(sql: str, params: list | None = None) -> None:
        with connection.cursor() as cursor:
            # ALTER TABLE refuses while deferred foreign-key checks are pending: run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(
                "ALTER TABLE ledger_ledgerentry DISABLE TRIGGER ledger_ledgerentry_append_only_trg"
            )
            cursor.execute(sql, params or [])
            cursor.execute(
                "ALTER TABLE ledger_ledgerentry ENABLE TRIGGER ledger_ledgerentry_append_only_trg"
            )
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")

    return run


@pytest.fixture
def chained(team, outsider_team):
    entries = [grant(team, 10), grant(team, 20), grant(outsider_team, 5), grant(team, 30)]
    _spend(team, 7, "spend-1")
    ledger_chain_extend()
    grant(team, 1)  # written after the run: not hashed yet, and that is fine
    return [e.id for e in entries] + [
        LedgerEntry.objects.get(reference="spend-1").id,
        LedgerEntry.objects.filter(team=team).latest("id").id,
    ]


@pytest.mark.django_db
def test_verify_passes_on_intact_chains(chained):
    out = _verify()
    assert "5 entries hashed and intact, 1 not hashed yet, 0 broken chain(s)" in out


@pytest.mark.django_db
def test_verify_names_an_entry_edited_behind_the_triggers_back(
    chained, team, outsider_team, behind_the_triggers_back
):
    second = chained[1]
    stored = LedgerEntry.objects.get(pk=second).chain_hash
    behind_the_triggers_back(
        "UPDATE ledger_ledgerentry SET amount_nano = amount_nano + 1 WHERE id = %s", [second]
    )
    out = _verify_fails()
    expected = link(LedgerEntry.objects.get(pk=chained[0]).chain_hash,
                    LedgerEntry.objects.filter(pk=second).values(*HASHED_FIELDS).get())  # fmt: skip
    assert f"BROKEN team={team.slug} (id {team.id}) entry={second}:" in out
    assert f"expected {expected}" in out and f"stored   {stored}" in out
    assert "1 broken chain(s)" in out
    _verify("--team", outsider_team.slug)  # the other team's chain is intact: exit 0


@pytest.mark.django_db
def test_verify_notices_a_removed_entry(chained, team, behind_the_triggers_back):
    behind_the_triggers_back("DELETE FROM ledger_ledgerentry WHERE id = %s", [chained[1]])
    assert f"entry={chained[3]}:" in _verify_fails("--team", team.slug)  # the next one breaks


@pytest.mark.django_db
def test_verify_notices_entries_removed_from_the_end(chained, team, behind_the_triggers_back):
    spend = chained[4]
    behind_the_triggers_back("DELETE FROM ledger_ledgerentry WHERE id >= %s AND team_id = %s",
                             [spend, team.id])  # fmt: skip
    out = _verify_fails("--team", team.slug)
    assert f"entry={spend}: the chain's recorded head is missing" in out


@pytest.mark.django_db
def test_verify_notices_a_hash_wiped_inside_the_chain(chained, team, behind_the_triggers_back):
    behind_the_triggers_back(
        "UPDATE ledger_ledgerentry SET chain_hash = NULL WHERE id = %s", [chained[0]]
    )
    assert f"entry={chained[0]}: an entry inside the chain has no hash" in _verify_fails()


@pytest.mark.django_db
def test_verify_of_an_unknown_team_is_an_error(chained):
    with pytest.raises(CommandError, match="No team"):
        call_command("verify_ledger", "--team", "nope", stdout=io.StringIO())
