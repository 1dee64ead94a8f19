"""Usage and balance alerts, decided inside the ledger transaction that causes them.

The team's balance row is locked while a book is open, so each crossing is seen by exactly one
transaction: every alert fires once per crossing, under any concurrency, and never for a change
that rolls back (the webhook event goes to the outbox and the email is queued on commit).

- `usage.threshold_reached` at 50, 75 and 100 % of a cycle's monthly allotment (the plan lots of
  that cycle, upgrades included): consumption only grows within a cycle, so each fires once.
- `balance.low` when a debit takes the balance from at or above the team's threshold to below it;
  `balance.depleted` when it takes the balance from above zero to zero or below. They fire again
  after the balance has recovered and drops again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from accounts.models import Membership, Notification, Role
from accounts.services import webhook_event_emit
from ledger.models import TeamBalance
from pricing.money import format_credits

from .book import Book

USAGE_THRESHOLDS = (50, 75, 100)


def _recipients(team_id: int) -> list[str]:
    return list(
        Membership.objects.filter(team_id=team_id, role__in=[Role.OWNER, Role.FINANCE])
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )


def team_notify(
    team_id: int, *, kind: str, event: str | None, title: str, body: str, data: dict
) -> None:
    """An in-app notice, a webhook event (when `event`) and an email to owners and finance,
    all in the caller's transaction. The email is a Celery task queued on commit: no mail
    server sits on the path of the request (often a usage post) that crossed the threshold."""
    notice = Notification.objects.create(team_id=team_id, kind=kind, title=title, body=body)
    if event:
        webhook_event_emit(team_id=team_id, type=event, data=data)
    transaction.on_commit(lambda: notification_email_enqueue(notice.pk), robust=True)


def notification_email_enqueue(notification_id: int) -> None:
    from ledger.tasks import notification_email  # the tasks module imports the services

    notification_email.delay(notification_id)


def notification_email(*, notification_id: int, now: datetime | None = None) -> bool:
    """Email a notice to the team's owners and finance, once: the row is locked and stamped,
    so a task that runs twice sends once. Returns whether it sent."""
    with transaction.atomic():
        notice = (
            Notification.objects.select_for_update()
            .filter(pk=notification_id, emailed_at__isnull=True)
            .first()
        )
        if notice is None:
            return False
        recipients = _recipients(notice.team_id)
        if recipients:  # a failure rolls the stamp back: the sweep sends it later
            send_mail(notice.title, notice.body, settings.DEFAULT_FROM_EMAIL, recipients)
        notice.emailed_at = now or timezone.now()
        notice.save(update_fields=["emailed_at"])
    return bool(recipients)


def notification_emails_sweep(*, now: datetime | None = None) -> int:
    """Queue the emails of notices whose task never ran (the broker was down at commit) or
    failed: unsent, older than two minutes, younger than a day. Returns how many."""
    now = now or timezone.now()
    ids = list(
        Notification.objects.filter(
            emailed_at__isnull=True,
            created_at__lt=now - timedelta(minutes=2),
            created_at__gte=now - timedelta(days=1),
        ).values_list("pk", flat=True)[:1000]
    )
    for pk in ids:
        notification_email_enqueue(pk)
    return len(ids)


def alerts_after_debit(*, book: Book) -> int:
    """Fire the alerts the book's debits crossed (call before book.close()). Returns count."""
    fired = 0
    for cycle_end, allotment, before, after in book.plan_consumption():
        for percent in USAGE_THRESHOLDS:
            mark = allotment * percent  # compare consumed x 100 >= allotment x percent: exact
            if before * 100 < mark <= after * 100:
                team_notify(
                    book.team_id, kind=f"usage_{percent}", event="usage.threshold_reached",
                    title=f"{percent} % of this month's credits used",
                    body=f"Your team has used {format_credits(after)} of its "
                    f"{format_credits(allotment)} monthly credits ({percent} % reached). The "
                    f"cycle ends {cycle_end:%Y-%m-%d %H:%M} UTC.",
                    data={"percent": percent, "allotment": format_credits(allotment),
                          "consumed": format_credits(after), "cycle_end": cycle_end.isoformat()},
                )  # fmt: skip
                fired += 1
    before, after = book.opened_balance, book.balance
    low = book.low_threshold
    if low is not None and before >= low > after:
        team_notify(
            book.team_id, kind="balance_low", event="balance.low",
            title="Balance low",
            body=f"Your balance is {format_credits(after)} credits, below your alert threshold "
            f"of {format_credits(low)}.",
            data={"balance": format_credits(after), "threshold": format_credits(low)},
        )  # fmt: skip
        fired += 1
    if book.recharge_threshold is not None and before >= book.recharge_threshold > after:
        from .recharge import recharge_after_debit  # recharge imports this module

        recharge_after_debit(team_id=book.team_id, trigger=f"v{book.version + 1}")
    if before > 0 >= after:
        team_notify(
            book.team_id, kind="balance_depleted", event="balance.depleted",
            title="Credits used up",
            body=f"Your balance is {format_credits(after)} credits. Requests are refused until "
            "credits return: top up or wait for the next cycle.",
            data={"balance": format_credits(after)},
        )  # fmt: skip
        fired += 1
    return fired


@transaction.atomic
def balance_low_threshold_set(*, team_id: int, threshold_nano: int | None) -> None:
    """The team's `balance.low` threshold (None switches the alert off)."""
    book = Book.open(team_id)  # creates the balance row when missing, under the lock
    book.close()
    TeamBalance.objects.filter(team_id=team_id).update(low_threshold_nano=threshold_nano)
