"""Extending each team's ledger hash chain, off the hot path (the chain_ledger beat job).

Idempotent and safe to run anywhere at any time: for each team whose balance version moved since
the chain last caught up, it continues from the team's last hashed entry, in id order, hashing
the entries after it in chunks (ledger/hashchain.py), then records the new head. Entries of one
team are written under the team's lock (the balance row), so they commit in id order: an entry
the job sees has no unseen predecessor. On PostgreSQL an advisory lock per team keeps two runs
from working on the same team; the database lets an UPDATE only fill chain_hash, once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone

from ledger.hashchain import GENESIS, HASHED_FIELDS, link
from ledger.models import LedgerChainHead, LedgerEntry, TeamBalance

logger = logging.getLogger(__name__)

CHUNK = 2000
_LOCK_NAMESPACE = 0x4C43  # pg_try_advisory_lock(namespace, team id)


@dataclass(frozen=True)
class ChainResult:
    teams: int  # teams whose chain was brought up to date
    entries: int  # entries hashed


def _teams_behind(team_ids: list[int] | None) -> list[tuple[int, int]]:
    """(team id, balance version) of the teams with ledger writes the chain may not cover."""
    head_version = LedgerChainHead.objects.filter(team_id=OuterRef("team_id")).values(
        "balance_version"
    )[:1]
    rows = TeamBalance.objects.annotate(head_version=Subquery(head_version)).filter(
        Q(head_version__isnull=True) | Q(version__gt=F("head_version"))
    )
    if team_ids is not None:
        rows = rows.filter(team_id__in=team_ids)
    return list(rows.order_by("team_id").values_list("team_id", "version"))


@contextmanager
def _team_lock(team_id: int) -> Iterator[bool]:
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_NAMESPACE, team_id])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_LOCK_NAMESPACE, team_id])


def _store(hashes: list[tuple[int, str]]) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "UPDATE ledger_ledgerentry AS e SET chain_hash = v.h "
                "FROM unnest(%s::bigint[], %s::text[]) AS v(id, h) "
                "WHERE e.id = v.id AND e.chain_hash IS NULL",
                [[pk for pk, _ in hashes], [h for _, h in hashes]],
            )
        else:
            cursor.executemany(
                "UPDATE ledger_ledgerentry SET chain_hash = %s WHERE id = %s "
                "AND chain_hash IS NULL",
                [(h, pk) for pk, h in hashes],
            )


def _extend_team(team_id: int, version: int, chunk: int) -> int | None:
    """Hash the team's entries after its last hashed one; None if another run holds the team."""
    with _team_lock(team_id) as acquired:
        if not acquired:
            return None
        entries = LedgerEntry.objects.filter(team_id=team_id)
        last = (
            entries.filter(chain_hash__isnull=False)
            .order_by("-id")
            .values_list("id", "chain_hash")
            .first()
        )
        head_id, head_hash = last or (0, GENESIS)
        hashed = 0
        while True:
            rows = list(
                entries.filter(id__gt=head_id).order_by("id").values(*HASHED_FIELDS)[:chunk]
            )
            if not rows:
                break
            hashes = []
            for row in rows:
                head_hash = link(head_hash, row)
                hashes.append((row["id"], head_hash))
            with transaction.atomic():
                _store(hashes)
            head_id, hashed = rows[-1]["id"], hashed + len(rows)
            if len(rows) < chunk:
                break
        LedgerChainHead.objects.update_or_create(
            team_id=team_id,
            defaults={
                "entry_id": head_id,
                "chain_hash": head_hash,
                "balance_version": version,
                "updated_at": timezone.now(),
            },
        )
    if hashed:
        # Shipped with the logs: a copy of each head outside the database.
        logger.info(
            "ledger chain extended",
            extra={"team_id": team_id, "entry_id": head_id, "chain_hash": head_hash,
                   "hashed": hashed},
        )  # fmt: skip
    return hashed


def ledger_chain_extend(*, team_ids: list[int] | None = None, chunk: int = CHUNK) -> ChainResult:
    teams = entries = 0
    for team_id, version in _teams_behind(team_ids):
        hashed = _extend_team(team_id, version, chunk)
        if hashed is not None:
            teams, entries = teams + 1, entries + hashed
    return ChainResult(teams=teams, entries=entries)
