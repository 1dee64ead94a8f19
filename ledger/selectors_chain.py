"""Recomputing the ledger's hash chains (manage.py verify_ledger)."""

from __future__ import annotations

from dataclasses import dataclass, field

from accounts.models import Team
from ledger.hashchain import GENESIS, HASHED_FIELDS, link
from ledger.models import LedgerChainHead, LedgerEntry


@dataclass(frozen=True)
class BrokenLink:
    team_id: int
    team_slug: str
    entry_id: int | None
    expected: str | None
    stored: str | None
    problem: str


@dataclass
class ChainReport:
    teams: int = 0
    hashed: int = 0  # entries whose hash recomputed
    unhashed: int = 0  # entries after each chain's end, not hashed yet (the next job run)
    broken: list[BrokenLink] = field(default_factory=list)


def _verify_team(team: Team, report: ChainReport) -> BrokenLink | None:
    head = LedgerChainHead.objects.filter(team_id=team.id).first()
    previous, head_seen = GENESIS, None
    first_unhashed: dict | None = None
    rows = (
        LedgerEntry.objects.filter(team_id=team.id)
        .order_by("id")
        .values(*HASHED_FIELDS, "chain_hash")
        .iterator(chunk_size=5000)
    )

    def broken(entry_id, expected, stored, problem) -> BrokenLink:
        return BrokenLink(team.id, team.slug, entry_id, expected, stored, problem)

    for row in rows:
        stored = row["chain_hash"]
        if stored is None:
            first_unhashed = first_unhashed or row
            report.unhashed += 1
            continue
        if first_unhashed is not None:
            return broken(first_unhashed["id"], link(previous, first_unhashed), None,
                          "an entry inside the chain has no hash")  # fmt: skip
        expected = link(previous, row)
        if expected != stored:
            return broken(row["id"], expected, stored,
                          "the entry, or the chain before it, was changed, added or removed")  # fmt: skip
        if head is not None and row["id"] == head.entry_id:
            head_seen = stored
        previous = stored
        report.hashed += 1
    if head is not None and head.entry_id and head_seen != head.chain_hash:
        return broken(head.entry_id, head.chain_hash, head_seen,
                      "the chain's recorded head is missing or differs: entries were removed "
                      "from its end or the head was changed")  # fmt: skip
    return None


def ledger_chain_verify(*, team: Team | None = None) -> ChainReport:
    """Recompute every entry's chain hash, team by team; the first broken link of each team."""
    report = ChainReport()
    teams = [team] if team is not None else Team.objects.order_by("id")
    for each in teams:
        report.teams += 1
        if (link_ := _verify_team(each, report)) is not None:
            report.broken.append(link_)
    return report
