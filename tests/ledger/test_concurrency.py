"""Races on the real database: threads posting at once through the API."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from ledger.models import LedgerEntry, UsageEvent
from ledger.selectors import reconciliation_drifts

from .conftest import balance_nano, entries_sum, grant

pytestmark = pytest.mark.django_db(transaction=True)

CREDITS_PER_EVENT = 1_129_500_000  # gpt-5: 1000 in, 500 out, 200 cached


def event(event_id: str) -> dict:
    return {
        "id": event_id,
        "model": "gpt-5",
        "usage": {"input_tokens": 1000, "output_tokens": 500, "cache_read_tokens": 200},
    }


def run_threads(n: int, work) -> list:
    barrier = threading.Barrier(n)
    out: list = [None] * n
    errors: list = []

    def target(i: int) -> None:
        try:
            barrier.wait()
            out[i] = work(i)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return out


def test_sixteen_threads_posting_the_same_ids_bill_each_once(team, key_factory):
    grant(team, 1000)
    _, secret = key_factory(team)
    ids = [f"same-{i}" for i in range(10)]

    def work(i: int) -> list[int]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        batch = client.post(
            "/api/v1/usage/batch", {"events": [event(x) for x in ids]}, format="json"
        )
        single = client.post("/api/v1/usage", event(ids[i % 10]), format="json")
        return [r["status"] for r in batch.json()["results"]] + [single.status_code]

    statuses = run_threads(16, work)
    flat = [s for row in statuses for s in row]
    assert flat.count(201) == 10  # each id created exactly once, whoever won
    assert set(flat) <= {200, 201}
    assert UsageEvent.objects.filter(team=team).count() == 10
    assert LedgerEntry.objects.filter(team=team, kind="usage").count() == 10
    assert balance_nano(team) == entries_sum(team) == 1000 * 10**9 - 10 * CREDITS_PER_EVENT
    assert reconciliation_drifts() == []


def test_many_threads_ingesting_for_one_team_keep_the_books_exact(team, key_factory):
    grant(team, 50)  # runs into overdraft half way: still exact
    _, secret = key_factory(team)
    threads, per_thread = 8, 12

    def work(i: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        for j in range(per_thread):
            if j % 3 == 0:
                body = {"events": [event(f"t{i}-{j}-{k}") for k in range(5)]}
                assert client.post("/api/v1/usage/batch", body, format="json").status_code == 200
            else:
                assert (
                    client.post("/api/v1/usage", event(f"t{i}-{j}"), format="json").status_code
                    == 201
                )

    run_threads(threads, work)
    count = threads * (per_thread // 3 * 5 + per_thread - per_thread // 3)
    assert UsageEvent.objects.filter(team=team).count() == count
    expected = 50 * 10**9 - count * CREDITS_PER_EVENT
    assert balance_nano(team) == entries_sum(team) == expected
    balances = list(
        LedgerEntry.objects.filter(team=team)
        .order_by("id")
        .values_list("amount_nano", "balance_after_nano")
    )
    running = 0
    for amount, after in balances:  # every balance_after is the running sum in commit order
        running += amount
        assert after == running
    assert reconciliation_drifts() == []


def test_a_book_waiting_for_the_lock_sees_the_lot_the_holder_added(team):
    """Book.open reads the lots after the team's lock is granted (on PostgreSQL inside
    ledger_book_open, a second statement with its own snapshot): a book that waited for a
    transaction adding a lot spends from that lot instead of running into the overdraft."""
    import time

    from django.db import transaction

    from ledger.models import EntryKind, LotSource
    from ledger.services.book import Book
    from pricing.money import NANO

    grant(team, 1)  # the balance row exists and one lot is live
    holding, opened = threading.Event(), {}

    def holder() -> None:
        try:
            with transaction.atomic():
                book = Book.open(team.id)
                holding.set()
                time.sleep(0.5)  # the other book is waiting for the lock meanwhile
                _, allocations = book.add_lot(source=LotSource.ADDON, amount=5 * NANO,
                                              reference=f"late-lot:{team.id}")  # fmt: skip
                book.post(EntryKind.TOPUP, 5 * NANO, allocations, f"late-lot:{team.id}")
                book.close()
        finally:
            connection.close()

    def waiter() -> None:
        try:
            holding.wait(5)
            with transaction.atomic():
                started = time.monotonic()
                book = Book.open(team.id)
                opened["waited"] = time.monotonic() - started
                opened["allocations"] = book.spend(2 * NANO)
                book.post(EntryKind.USAGE, -2 * NANO, opened["allocations"], f"w:{team.id}")
                book.close()
        finally:
            connection.close()

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert opened["waited"] > 0.3  # it did wait for the lock
    assert "overdraft" not in opened["allocations"][0]  # and spent the late lot
    assert balance_nano(team) == 4 * NANO == entries_sum(team)
