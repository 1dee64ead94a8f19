"""Celery tasks of the accounts app: thin, idempotent, safe to run twice."""

from celery import shared_task

from accounts.services.webhooks import outbox_event_dispatch, outbox_pump, webhook_delivery_attempt


@shared_task(acks_late=True)
def webhook_event_dispatch(event_id: int) -> int:
    return len(outbox_event_dispatch(event_id=event_id))


@shared_task(acks_late=True)
def webhook_deliver(delivery_id: int) -> str | None:
    delivery = webhook_delivery_attempt(delivery_id=delivery_id)
    return delivery.state if delivery else None


@shared_task(acks_late=True)
def dispatch_outbox() -> int:
    """The beat job (every minute): the outbox's safety net and the retry scheduler."""
    result = outbox_pump()
    return result.dispatched + result.reclaimed + result.enqueued


@shared_task(acks_late=True)
def api_keys_last_used_flush() -> int:
    """The beat job (every minute): API keys' last use, recorded off the hot path."""
    from accounts.authentication import keys_last_used_flush

    return keys_last_used_flush()
