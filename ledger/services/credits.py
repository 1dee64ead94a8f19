"""Credits in and out that are not usage: plan grants, promotional grants, adjustments,
refunds and reversals, and lot expiry. Each is idempotent on its reference."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from accounts.models import Plan, Team
from gateway_billing.errors import ApplicationError
from ledger.models import EntryKind, LedgerEntry, LotSource
from pricing.money import NANO, format_credits

from .book import Book

MANUAL_KINDS = (EntryKind.ADJUSTMENT, EntryKind.REFUND, EntryKind.REVERSAL)


def _already(reference: str) -> LedgerEntry | None:
    return LedgerEntry.objects.filter(reference=reference).first()


@transaction.atomic
def credits_grant(
    *,
    team_id: int,
    kind: str,
    source: str,
    amount_nano: int,
    reference: str,
    expires_at: datetime | None = None,
    priority: int | None = None,
    author_id: int | None = None,
    reason: str = "",
) -> LedgerEntry:
    """Credits in as a new lot. A second call with the same reference changes nothing."""
    book = Book.open(team_id)  # the lock first: a racing duplicate waits here, then sees ours
    existing = _already(reference)
    if existing is not None:
        book.close()  # expiries found while open still land
        return existing
    _lot, allocations = book.add_lot(
        source=source,
        amount=amount_nano,
        reference=reference,
        expires_at=expires_at,
        priority=priority,
    )
    book.post(kind, amount_nano, allocations, reference, author_id=author_id, reason=reason)
    book.close()
    return LedgerEntry.objects.get(reference=reference)


def plan_grant_reference(team_id: int, cycle_start: datetime) -> str:
    return f"plan_grant:{team_id}:{cycle_start.isoformat()}"


def plan_cycle_grant(
    *,
    team: Team,
    plan: Plan,
    cycle_start: datetime,
    cycle_end: datetime,
    reference: str | None = None,
) -> LedgerEntry | None:
    """The plan's monthly credits for one cycle, expiring at its end; once per (team, cycle),
    or once per `reference` when the caller names one."""
    if not plan.monthly_credits:
        return None
    return credits_grant(
        team_id=team.id,
        kind=EntryKind.PLAN_GRANT,
        source=LotSource.PLAN,
        amount_nano=plan.monthly_credits * NANO,
        reference=reference or plan_grant_reference(team.id, cycle_start),
        expires_at=cycle_end,
        reason=f"{plan.name} plan credits for the cycle from {cycle_start:%Y-%m-%d}",
    )


def promo_grant(
    *,
    team: Team,
    amount_nano: int,
    expires_at: datetime | None,
    reason: str,
    author: AbstractBaseUser,
    reference: str,
) -> LedgerEntry:
    if amount_nano <= 0:
        raise ApplicationError(
            "invalid_amount",
            "A promotional grant must be positive.",
            fields={"amount": ["Must be positive."]},
        )
    return credits_grant(
        team_id=team.id,
        kind=EntryKind.PROMO_GRANT,
        source=LotSource.PROMO,
        amount_nano=amount_nano,
        reference=reference,
        expires_at=expires_at,
        author_id=author.pk,
        reason=reason,
    )


@transaction.atomic
def ledger_adjust(
    *,
    team: Team,
    amount_nano: int,
    reason: str,
    author: AbstractBaseUser,
    reference: str,
    kind: str = EntryKind.ADJUSTMENT,
    prefer_lot: int | None = None,
) -> LedgerEntry:
    """A compensating entry written by finance: positive adds a lot, negative spends."""
    if kind not in MANUAL_KINDS:
        raise ApplicationError("invalid_kind", f"Manual entries are one of {list(MANUAL_KINDS)}.")
    if not reason.strip():
        raise ApplicationError(
            "reason_required", "Say why: a reason is required.", fields={"reason": ["Required."]}
        )
    if amount_nano == 0:
        raise ApplicationError(
            "invalid_amount",
            "The amount must not be zero.",
            fields={"amount": ["Must not be zero."]},
        )
    # accounts.services imports this module: import the audit log when it is needed.
    from accounts.services.audit import audit_record

    book = Book.open(team.id)  # the lock first: a double submit waits here, then sees ours
    existing = _already(reference)
    if existing is not None:
        book.close()
        return existing
    if amount_nano > 0:
        book.close()  # expiries found while open land first; the grant reopens under our lock
        entry = credits_grant(
            team_id=team.id,
            kind=kind,
            source=LotSource.ADJUSTMENT,
            amount_nano=amount_nano,
            reference=reference,
            author_id=author.pk,
            reason=reason,
        )
    else:
        allocations = book.spend(-amount_nano, prefer_lot=prefer_lot)
        book.post(kind, amount_nano, allocations, reference, author_id=author.pk, reason=reason)
        book.close()
        entry = LedgerEntry.objects.get(reference=reference)
    audit_record(
        actor=author,
        team=team,
        action=f"ledger.{kind}",
        target=f"ledger_entry:{entry.pk} {reference}",
        after={"amount": format_credits(amount_nano), "kind": kind, "reason": reason},
    )
    return entry


@transaction.atomic
def lots_expire_due(*, team_id: int) -> int:
    """Write the expiry of every lot past its end (opening the book does it). Returns count."""
    book = Book.open(team_id)
    return len(book.close())
