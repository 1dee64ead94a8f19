"""Celery tasks of the ledger: thin, idempotent, safe to run twice."""

import logging

from celery import shared_task

from ledger.services import alerts
from ledger.services.chain import ledger_chain_extend
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


@shared_task(acks_late=True)
def chain_ledger() -> int:
    """Hash the ledger entries written since the last run (tamper evidence, off the hot path)."""
    return ledger_chain_extend().entries


@shared_task(acks_late=True)
def auto_recharge_run(team_id: int, trigger: str) -> str | None:
    from ledger.services.recharge import auto_recharge_run as run

    return run(team_id=team_id, trigger=trigger)


@shared_task(acks_late=True)
def auto_recharge_sweep() -> dict:
    from ledger.services.recharge import auto_recharge_sweep as sweep

    return sweep()


@shared_task(acks_late=True)
def stripe_events_retry() -> int:
    from ledger.services.stripe_events import stripe_events_retry as retry

    return retry()


@shared_task(acks_late=True)
def subscription_seats_sync(team_id: int) -> int | None:
    from ledger.services.subscriptions import subscription_seats_sync as sync

    return sync(team_id=team_id)


@shared_task(acks_late=True)
def payments_abandoned_cancel() -> int:
    from ledger.services.payments import payments_abandoned_cancel as cancel

    return cancel()


@shared_task(acks_late=True)
def notification_email(notification_id: int) -> bool:
    return alerts.notification_email(notification_id=notification_id)


@shared_task(acks_late=True)
def notification_emails_sweep() -> int:
    """The beat job (every 5 minutes): emails of notices whose task never ran."""
    return alerts.notification_emails_sweep()
