"""Celery tasks of the ledger: thin, idempotent, safe to run twice."""

import logging

from celery import shared_task

from ledger.services.cycles import cycles_renew_due
from ledger.services.reconcile import reconcile_run
from ledger.services.usage import usage_rerate

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def rerate_unrated(team_id: int | None = None) -> int:
    return usage_rerate(team_id=team_id)


@shared_task(acks_late=True)
def reconcile_nightly() -> int:
    report = reconcile_run()
    for drift in report.drifts:
        logger.error("ledger drift: %s", drift)
    return len(report.drifts)


@shared_task(acks_late=True)
def renew_cycles() -> int:
    return cycles_renew_due()
