"""The posting engine: lot order, expiry, overdraft pay-off, balance == sum of entries."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from ledger.models import CreditLot, EntryKind, LedgerEntry, LotSource
from ledger.selectors import balance_get, reconciliation_drifts
from ledger.services.book import Book
from ledger.services.credits import lots_expire_due
from pricing.money import NANO

from .conftest import balance_nano, entries_sum, grant

pytestmark = pytest.mark.django_db


def spend(team, credits: int) -> None:
    from django.db import transaction

    with transaction.atomic():
        book = Book.open(team.id)
        allocations = book.spend(credits * NANO)
        book.post(
            EntryKind.USAGE,
            -credits * NANO,
            allocations,
            f"spend:{team.id}:{credits}:{LedgerEntry.objects.count()}",
        )
        book.close()


def remaining(lot_entry) -> int:
    lot_id = lot_entry.allocations[0]["lot"]
    return CreditLot.objects.get(pk=lot_id).remaining_nano // NANO


def test_spends_earliest_expiry_then_priority_then_age(team):
    now = timezone.now()
    addon_old = grant(team, 100)  # no expiry, priority 50
    addon_new = grant(team, 100)
    promo_late = grant(
        team,
        100,
        source=LotSource.PROMO,
        kind=EntryKind.PROMO_GRANT,
        expires_at=now + timedelta(days=40),
    )
    plan = grant(
        team,
        100,
        source=LotSource.PLAN,
        kind=EntryKind.PLAN_GRANT,
        expires_at=now + timedelta(days=30),
    )
    promo_same_expiry_lower_priority = grant(
        team, 100, source=LotSource.ADDON, expires_at=now + timedelta(days=30), priority=90
    )

    spend(team, 150)  # plan (expires first, priority 10) then the same-expiry addon (priority 90)
    assert remaining(plan) == 0
    assert remaining(promo_same_expiry_lower_priority) == 50
    assert remaining(promo_late) == 100

    spend(team, 100)  # the rest of the day-30 lot, then the day-40 promo
    assert remaining(promo_same_expiry_lower_priority) == 0
    assert remaining(promo_late) == 50

    spend(team, 100)  # promo, then the OLDER no-expiry addon
    assert remaining(promo_late) == 0
    assert remaining(addon_old) == 50
    assert remaining(addon_new) == 100
    assert balance_nano(team) == entries_sum(team) == 150 * NANO


def test_overdraft_and_payoff_by_the_next_credit(team):
    grant(team, 10)
    spend(team, 25)
    balance = balance_get(team_id=team.id)
    assert balance.total == -15 * NANO
    assert balance.overdraft == 15 * NANO
    assert all(lot.remaining_nano >= 0 for lot in CreditLot.objects.filter(team=team))

    entry = grant(team, 40)
    lot = CreditLot.objects.get(pk=entry.allocations[0]["lot"])
    assert lot.amount_nano == 40 * NANO
    assert lot.remaining_nano == 25 * NANO  # 15 paid the overdraft off first
    assert entry.allocations[1] == {"overdraft": -15 * NANO}
    balance = balance_get(team_id=team.id)
    assert (balance.total, balance.overdraft, balance.addon) == (25 * NANO, 0, 25 * NANO)
    assert balance_nano(team) == entries_sum(team)
    assert reconciliation_drifts() == []


def test_small_credit_pays_part_of_the_overdraft(team):
    spend(team, 30)
    grant(team, 10)
    balance = balance_get(team_id=team.id)
    assert (balance.total, balance.overdraft, balance.addon) == (-20 * NANO, 20 * NANO, 0)
    assert reconciliation_drifts() == []


def test_expired_lot_is_written_off_when_the_book_opens(team):
    past = timezone.now() - timedelta(seconds=1)
    plan = grant(
        team,
        300,
        source=LotSource.PLAN,
        kind=EntryKind.PLAN_GRANT,
        expires_at=timezone.now() + timedelta(days=1),
    )
    grant(team, 50)
    spend(team, 100)
    CreditLot.objects.filter(pk=plan.allocations[0]["lot"]).update(expires_at=past)  # time passes

    assert lots_expire_due(team_id=team.id) == 1
    expiry = LedgerEntry.objects.get(kind=EntryKind.PLAN_EXPIRY)
    assert expiry.amount_nano == -200 * NANO
    assert expiry.reference == f"expiry:lot:{plan.allocations[0]['lot']}"
    assert balance_nano(team) == entries_sum(team) == 50 * NANO
    assert lots_expire_due(team_id=team.id) == 0  # idempotent

    spend(team, 10)  # spent from the add-on, never from the expired lot
    assert balance_get(team_id=team.id).addon == 40 * NANO
    assert reconciliation_drifts() == []


def test_grant_is_idempotent_on_its_reference(team):
    from ledger.services.credits import credits_grant

    kwargs = dict(
        team_id=team.id,
        kind=EntryKind.TOPUP,
        source=LotSource.ADDON,
        amount_nano=5 * NANO,
        reference="stripe:cs_1",
    )
    first = credits_grant(**kwargs)
    second = credits_grant(**kwargs)
    assert second.reference == first.reference
    assert LedgerEntry.objects.filter(reference="stripe:cs_1").count() == 1
    assert balance_nano(team) == 5 * NANO


def test_buckets_after_each_entry(team):
    grant(
        team,
        100,
        source=LotSource.PLAN,
        kind=EntryKind.PLAN_GRANT,
        expires_at=timezone.now() + timedelta(days=3),
    )
    grant(
        team,
        20,
        source=LotSource.PROMO,
        kind=EntryKind.PROMO_GRANT,
        expires_at=timezone.now() + timedelta(days=9),
    )
    grant(team, 30)
    spend(team, 110)
    last = LedgerEntry.objects.order_by("-id").first()
    assert last.buckets_after == {
        "monthly": 0,
        "addon": 30 * NANO,
        "promotional": 10 * NANO,
        "overdraft": 0,
    }
    assert last.balance_after_nano == 40 * NANO


def test_a_new_team_gets_its_first_cycle_of_plan_credits(team_factory):
    team = team_factory(plan="pro")
    entry = LedgerEntry.objects.get(team=team)
    assert (entry.kind, entry.amount_nano) == (EntryKind.PLAN_GRANT, 5000 * NANO)
    lot = CreditLot.objects.get(team=team)
    assert lot.source == LotSource.PLAN
    assert lot.expires_at == team.subscription.current_cycle_end
    balance = balance_get(team_id=team.id)
    assert (balance.total, balance.monthly, balance.addon) == (5000 * NANO, 5000 * NANO, 0)


def test_a_spend_across_more_lots_than_the_listed_update_takes(team):
    """Past 64 touched lots the book writes them through arrays instead of a VALUES list:
    every lot still ends where the spend order puts it."""
    for _ in range(70):
        grant(team, 1)
    spend(team, 68)
    left = sorted(
        CreditLot.objects.filter(team_id=team.id).values_list("remaining_nano", flat=True)
    )
    assert left == [0] * 68 + [NANO, NANO]
    assert balance_nano(team) == entries_sum(team) == 2 * NANO
    assert reconciliation_drifts() == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's plan cache")
def test_the_books_closing_statement_keeps_its_cached_plan(team, outsider_team):
    """The closing statement is prepared (DB_PREPARE_THRESHOLD) and PostgreSQL keeps its
    generic plan instead of planning it afresh on every call (the unnest() form it replaced
    was re-planned each time once the table had statistics: half of its time)."""
    for _ in range(150):
        grant(outsider_team, 1)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ledger_creditlot")
    grant(team, 1000)
    for _ in range(20):
        spend(team, 1)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE 'WITH lots AS%%'"
        )
        plans = cursor.fetchall()
    assert plans, "the closing statement is not prepared"
    generic, custom = map(sum, zip(*plans, strict=True))
    assert generic >= 10
    assert custom <= 5  # PostgreSQL's first five executions of it try custom plans
