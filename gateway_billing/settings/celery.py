from celery.schedules import crontab

from .env import env

# Absent broker: tasks run eagerly in-process (the embedded default).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
if not CELERY_BROKER_URL:
    CELERY_BROKER_URL = "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Longer than any task runs, so a slow task is not redelivered while still running.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict = {
    "reconcile-nightly": {
        "task": "ledger.tasks.reconcile_nightly",
        "schedule": crontab(hour=3, minute=17),
    },
    "rerate-unrated": {"task": "ledger.tasks.rerate_unrated", "schedule": 300.0},
    # Billing cycles that ended: advance, apply pending downgrades, grant, expire.
    # Every minute: usage between a cycle's end and its renewal finds no monthly lot.
    "renew-cycles": {"task": "ledger.tasks.renew_cycles", "schedule": 60.0},
    # The outbox safety net and the webhook retry scheduler.
    "dispatch-outbox": {"task": "accounts.tasks.dispatch_outbox", "schedule": 60.0},
    # API keys' last use, recorded in Redis on the hot path.
    "api-keys-last-used": {"task": "accounts.tasks.api_keys_last_used_flush", "schedule": 60.0},
    # Alert emails whose task never ran (the broker was down when the alert committed).
    "notification-emails": {"task": "ledger.tasks.notification_emails_sweep", "schedule": 300.0},
    # Tamper evidence: hash the ledger entries written since the last run.
    "chain-ledger": {"task": "ledger.tasks.chain_ledger", "schedule": 60.0},
}
CELERY_BEAT_SCHEDULE.update(
    {
        # Auto recharges a crossing did not start, charges recorded but never sent.
        "auto-recharge-sweep": {"task": "ledger.tasks.auto_recharge_sweep", "schedule": 60.0},
        # Stripe events stored but not handled (a crash, a bug since fixed).
        "stripe-events-retry": {"task": "ledger.tasks.stripe_events_retry", "schedule": 60.0},
        "payments-abandoned": {
            "task": "ledger.tasks.payments_abandoned_cancel",
            "schedule": 3600.0,
        },
    }
)
