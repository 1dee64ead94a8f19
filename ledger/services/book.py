"""A team's book: its balance row (the team's lock), its live lots, and the entries one
transaction writes. Every movement of credits goes through a Book, so the rules live once:

- spending takes from live lots by earliest expiry, then priority, then age; a lot never goes
  below zero; what no lot covers becomes overdraft;
- a new lot pays the overdraft off first;
- a lot past its expiry is expired (an entry) as soon as the book is opened;
- balance == sum of lot remainders - overdraft == sum of the team's entries, checked at close.

Use inside ``transaction.atomic()``: ``Book.open`` locks the team's balance row until commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from django.db import connection, transaction
from django.utils import timezone

from ledger.bulk import BulkInsert
from ledger.models import BUCKET_OF_SOURCE, CreditLot, EntryKind, LedgerEntry, LotSource

DEFAULT_PRIORITY = {
    LotSource.PLAN: 10,
    LotSource.PROMO: 20,
    LotSource.ADDON: 50,
    LotSource.AUTO_RECHARGE: 50,
    LotSource.ADJUSTMENT: 50,
}
EXPIRY_KIND = {LotSource.PLAN: EntryKind.PLAN_EXPIRY}
BUCKETS = ("monthly", "addon", "promotional")

# Called after a book's transaction commits with (team_id, balance_nano, version): the gate
# mirrors balances this way (registered by ratelimits at start-up).
after_book_commit: list[Callable[[int, int, int], None]] = []


_SELECT_BALANCE = (
    "SELECT balance_nano, overdraft_nano, version, low_threshold_nano, has_budgets, "
    "recharge_threshold_nano FROM ledger_teambalance WHERE team_id = %s"
)
_BALANCE_UPDATE = (
    "UPDATE ledger_teambalance SET balance_nano = %s, overdraft_nano = %s, updated_at = %s, "
    "version = %s WHERE team_id = %s"
)


def _pg_lots_update(dirty: list[tuple[int, int]]) -> tuple[str, list[Any]]:
    """The UPDATE of the dirty lots ((remaining, id) pairs) and its parameters. The statements
    are prepared (DB_PREPARE_THRESHOLD), and PostgreSQL keeps a prepared statement's generic
    plan only when it costs no more than a fresh one: over arrays of unknown length it assumes
    10 rows, so the unnest() form was planned afresh on every call (half of the statement's
    time for one event). A VALUES list of the lots is estimated exactly and its plan is kept; a
    book touches a few lots, so a few texts are prepared. Past 64 lots (a rare book) the arrays
    again, planned each time."""
    update = (
        "UPDATE ledger_creditlot AS l SET remaining_nano = v.remaining "
        "FROM {} AS v(id, remaining) WHERE l.id = v.id"
    )
    if len(dirty) > 64:
        return update.format("unnest(%b::bigint[], %b::bigint[])"), [
            [lot_id for _, lot_id in dirty],
            [remaining for remaining, _ in dirty],
        ]
    rows = ", ".join(["(%s::bigint, %s::bigint)"] * len(dirty))
    return update.format(f"(VALUES {rows})"), [
        v for remaining, lot_id in dirty for v in (lot_id, remaining)
    ]


def _aware(value: datetime | str | None) -> datetime | None:
    """Raw SQL on SQLite returns naive UTC text; PostgreSQL returns aware datetimes."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and timezone.is_naive(value):
        value = value.replace(tzinfo=UTC)
    return value


_SELECT_LOTS = (
    "SELECT id, source, amount_nano, remaining_nano, priority, expires_at, created_at "
    "FROM ledger_creditlot WHERE team_id = %s AND remaining_nano > 0"
)


def _lock_and_read(cursor: Any, team_id: int, now: datetime) -> tuple[Any, list[Any]]:
    """Book.open's two statements, one round trip each: lock the balance row (creating it on
    the team's first movement), then read the live lots."""
    select = _SELECT_BALANCE + (" FOR UPDATE" if connection.features.has_select_for_update else "")
    cursor.execute(select, [team_id])
    row = cursor.fetchone()
    if row is None:
        cursor.execute(
            "INSERT INTO ledger_teambalance (team_id, balance_nano, overdraft_nano, "
            "version, has_budgets, updated_at) VALUES (%s, 0, 0, 0, FALSE, %s) "
            "ON CONFLICT (team_id) DO NOTHING",
            [team_id, connection.ops.adapt_datetimefield_value(now)],
        )
        cursor.execute(select, [team_id])
        row = cursor.fetchone()
    cursor.execute(_SELECT_LOTS, [team_id])
    return row, cursor.fetchall()


class LedgerInvariantError(RuntimeError):
    """The book does not add up: the transaction is rolled back and nothing is written."""


@dataclass(slots=True)
class LiveLot:
    id: int
    source: str
    amount: int
    remaining: int
    priority: int
    expires_at: datetime | None
    created_at: datetime
    dirty: bool = False

    def spend_key(self) -> tuple:
        # Earliest expiry first (no expiry last), then priority, then age.
        return (
            self.expires_at is None,
            self.expires_at or self.created_at,
            self.priority,
            self.created_at,
            self.id,
        )


@dataclass(slots=True)
class EntryDraft:
    kind: str
    amount: int
    balance_after: int
    buckets_after: dict[str, int]
    allocations: list[dict[str, int]]
    reference: str
    usage_event_id: int | None = None
    price_id: int | None = None
    credits_per_usd: Decimal | None = None
    author_id: int | None = None
    reason: str = ""
    created_at: datetime = field(default_factory=timezone.now)


_insert_entries = BulkInsert(
    LedgerEntry,
    [
        "team_id",
        "kind",
        "amount_nano",
        "balance_after_nano",
        "buckets_after",
        "allocations",
        "reference",
        "usage_event_id",
        "price_id",
        "credits_per_usd",
        "author_id",
        "reason",
        "created_at",
    ],
)


class Book:
    def __init__(
        self, team_id: int, balance: int, overdraft: int, lots: list[LiveLot], now: datetime
    ) -> None:
        self.team_id = team_id
        self.balance = balance
        self.overdraft = overdraft
        self.lots = sorted(lots, key=LiveLot.spend_key)
        self.now = now
        self.entries: list[EntryDraft] = []
        self.version = 0
        self.low_threshold: int | None = None
        self.recharge_threshold: int | None = None  # auto recharge on: its threshold
        self.has_budgets = False
        self.opened_balance = balance
        self.opened_remaining: dict[int, int] = {}
        self.retired: list[LiveLot] = []  # expired lots: off the spend list, still to be written

    # ---- opening: lock, load, expire -------------------------------------------------------

    @classmethod
    def open(cls, team_id: int, *, now: datetime | None = None) -> Book:
        now = now or timezone.now()
        # Two statements: the lots must be read with a snapshot taken after the lock is granted,
        # which a second statement is (READ COMMITTED) and a join in the locking one is not. On
        # PostgreSQL a function runs both in one round trip (migration 0007 explains it).
        # (psycopg's pipeline mode does not save one: leaving the pipeline costs a Sync.)
        with connection.cursor() as cursor:
            row, lot_rows = None, []
            if connection.vendor == "postgresql":
                cursor.execute("SELECT * FROM ledger_book_open(%s)", [team_id])
                found = cursor.fetchall()
                if found:  # one row per live lot, each with the balance row's columns
                    row, lot_rows = found[0][:6], [r[6:] for r in found if r[6] is not None]
            if row is None:  # SQLite, or the team's first movement
                row, lot_rows = _lock_and_read(cursor, team_id, now)
        lots = [LiveLot(*r[:5], _aware(r[5]), _aware(r[6])) for r in lot_rows]
        book = cls(team_id, row[0], row[1], lots, now)
        book.version, book.low_threshold, book.has_budgets = row[2], row[3], bool(row[4])
        book.recharge_threshold = row[5]
        book.expire_due()
        book.opened_balance = book.balance
        book.opened_remaining = {lot.id: lot.remaining for lot in book.lots}
        return book

    def expire_due(self) -> None:
        for lot in [lot for lot in self.lots if lot.expires_at and lot.expires_at <= self.now]:
            self.expire_lot(lot)

    def expire_lot(self, lot: LiveLot) -> None:
        amount = lot.remaining
        lot.remaining, lot.dirty = 0, True
        self.lots.remove(lot)
        self.retired.append(lot)
        self.balance -= amount
        kind = EXPIRY_KIND.get(lot.source, EntryKind.PROMO_EXPIRY)
        self.post(
            kind,
            -amount,
            [{"lot": lot.id, "nano": -amount}],
            f"expiry:lot:{lot.id}",
            reason="expired",
        )

    # ---- movements ---------------------------------------------------------------------------

    def spend(self, amount: int, *, prefer_lot: int | None = None) -> list[dict[str, int]]:
        """Take `amount` nano-credits out; returns the allocations. Never leaves a lot < 0."""
        allocations: list[dict[str, int]] = []
        left = amount
        lots = self.lots
        if prefer_lot is not None:
            lots = sorted(lots, key=lambda lot: lot.id != prefer_lot)
        for lot in lots:
            if left == 0:
                break
            if lot.remaining == 0:
                continue
            take = min(lot.remaining, left)
            lot.remaining -= take
            lot.dirty = True
            left -= take
            allocations.append({"lot": lot.id, "nano": -take})
        if left:
            self.overdraft += left
            allocations.append({"overdraft": left})
        self.balance -= amount
        return allocations

    def add_lot(
        self,
        *,
        source: str,
        amount: int,
        reference: str,
        expires_at: datetime | None = None,
        priority: int | None = None,
    ) -> tuple[LiveLot, list[dict[str, int]]]:
        """Credits in: a new lot, paying the overdraft off first. Returns (lot, allocations)."""
        if amount <= 0:
            raise ValueError("a lot holds a positive amount")
        payoff = min(amount, self.overdraft)
        row = CreditLot.objects.create(
            team_id=self.team_id,
            source=source,
            amount_nano=amount,
            remaining_nano=amount - payoff,
            priority=DEFAULT_PRIORITY[source] if priority is None else priority,
            expires_at=expires_at,
            created_at=self.now,
            reference=reference,
        )
        lot = LiveLot(row.id, source, amount, amount - payoff, row.priority, expires_at, self.now)
        self.overdraft -= payoff
        self.balance += amount
        if lot.remaining:
            self.lots.append(lot)
            self.lots.sort(key=LiveLot.spend_key)
        allocations = [{"lot": lot.id, "nano": amount - payoff}]
        if payoff:
            allocations.append({"overdraft": -payoff})
        return lot, allocations

    def plan_consumption(self) -> list[tuple[datetime, int, int, int]]:
        """Per cycle (plan lots sharing an expiry) touched since the book opened:
        (cycle end, allotment, consumed when opened, consumed now), in nano-credits."""
        cycles: dict[datetime, list[int]] = {}
        for lot in self.lots:
            if lot.source != LotSource.PLAN or lot.expires_at is None:
                continue
            opened = self.opened_remaining.get(lot.id, lot.amount)
            row = cycles.setdefault(lot.expires_at, [0, 0, 0])
            row[0] += lot.amount
            row[1] += lot.amount - opened
            row[2] += lot.amount - lot.remaining
        return [
            (end, a, before, after) for end, (a, before, after) in cycles.items() if after > before
        ]

    def buckets(self) -> dict[str, int]:
        split = dict.fromkeys(BUCKETS, 0)
        for lot in self.lots:
            split[BUCKET_OF_SOURCE[lot.source]] += lot.remaining
        split["overdraft"] = self.overdraft
        return split

    def post(
        self,
        kind: str,
        amount: int,
        allocations: list[dict[str, int]],
        reference: str,
        **extra: Any,
    ) -> EntryDraft:
        entry = EntryDraft(
            kind,
            amount,
            self.balance,
            self.buckets(),
            allocations,
            reference,
            created_at=self.now,
            **extra,
        )
        self.entries.append(entry)
        return entry

    # ---- closing -------------------------------------------------------------------------------

    def close(self, *, notify: bool = True) -> list[EntryDraft]:
        """Write the lots, the balance and the entries. Refuses a book that does not add up.
        With `notify` the after_book_commit hooks get the new balance after commit (without,
        the caller passes `self.balance` and `self.version` on itself)."""
        if sum(lot.remaining for lot in self.lots) - self.overdraft != self.balance:
            raise LedgerInvariantError(f"team {self.team_id}: lots and balance disagree")
        dirty = [(lot.remaining, lot.id) for lot in self.lots + self.retired if lot.dirty]
        entries = [
            (
                self.team_id, e.kind, e.amount, e.balance_after,
                orjson.dumps(e.buckets_after).decode(), orjson.dumps(e.allocations).decode(),
                e.reference, e.usage_event_id, e.price_id, e.credits_per_usd, e.author_id,
                e.reason, e.created_at,
            )
            for e in self.entries
        ]  # fmt: skip
        self.version += 1
        balance = [self.balance, self.overdraft, self.now, self.version, self.team_id]
        if connection.vendor == "postgresql":
            # One round trip while the team's lock is held: lots, balance and entries together.
            insert, columns = _insert_entries.pg_statement(entries)
            lots, lot_params = "", []
            if dirty:
                update, lot_params = _pg_lots_update(dirty)
                lots = f"lots AS ({update}), "
            with connection.cursor() as cursor:
                cursor.execute(
                    f"WITH {lots}bal AS ({_BALANCE_UPDATE}) {insert}",
                    [*lot_params, *balance, *columns],
                )
        else:
            with connection.cursor() as cursor:
                if dirty:
                    cursor.executemany(
                        "UPDATE ledger_creditlot SET remaining_nano = %s WHERE id = %s", dirty
                    )
                balance[2] = connection.ops.adapt_datetimefield_value(self.now)
                cursor.execute(_BALANCE_UPDATE, balance)
            _insert_entries(entries)
        for lot in self.lots:
            lot.dirty = False
        if notify and after_book_commit:
            team_id, balance_nano, version = self.team_id, self.balance, self.version
            transaction.on_commit(
                lambda: [hook(team_id, balance_nano, version) for hook in after_book_commit]
            )
        written, self.entries, self.retired = self.entries, [], []
        return written
