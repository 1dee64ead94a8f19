"""Reconciliation: prove balance == sum of entries for every team, and keep the result."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.cache import cache
from django.utils import timezone

from ledger.models import LedgerEntry, TeamBalance
from ledger.selectors import Drift, reconciliation_drifts

LAST_RUN_KEY = "ledger:reconcile:last"


@dataclass(frozen=True)
class ReconcileReport:
    teams: int
    entries: int
    drifts: list[Drift]


def reconcile_run() -> ReconcileReport:
    drifts = reconciliation_drifts()
    report = ReconcileReport(
        teams=TeamBalance.objects.count(), entries=LedgerEntry.objects.count(), drifts=drifts
    )
    cache.set(
        LAST_RUN_KEY,
        {"at": timezone.now().isoformat(), "teams": report.teams, "drifts": len(drifts)},
        timeout=None,
    )
    return report
