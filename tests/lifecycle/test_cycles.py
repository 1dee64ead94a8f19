"""Billing cycles: renewal (grant, expiry, pending downgrades), idempotent however often it
runs and when workers race; plan changes (owners only, prorated upgrades, deferred downgrades)."""

from __future__ import annotations

import threading
from datetime import timedelta
from fractions import Fraction

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from accounts.models import AuditEntry, Plan, Subscription
from accounts.services import cycle_bounds
from gateway_billing.errors import ApplicationError
from ledger.models import CreditLot, EntryKind, LedgerEntry, LotSource, TeamBalance
from ledger.selectors import balance_get, reconciliation_drifts
from ledger.services.credits import plan_grant_reference
from ledger.services.cycles import (
    cycles_renew_due,
    plan_upgrade_reference,
    subscription_change_plan,
    subscription_renew,
    upgrade_proration_nano,
)
from ledger.tasks import renew_cycles
from pricing.money import NANO

from .conftest import add_on, rewind_cycle, spend

PRO, PERSONAL, FREE = 5000 * NANO, 1000 * NANO, 300 * NANO


def plan(code: str) -> Plan:
    return Plan.objects.get(code=code)


def kinds(team) -> list[str]:
    return list(LedgerEntry.objects.filter(team=team).order_by("id").values_list("kind", flat=True))


def balance(team) -> int:
    return TeamBalance.objects.get(team_id=team.id).balance_nano


def plan_lot(team) -> CreditLot:
    return CreditLot.objects.get(team_id=team.id, source=LotSource.PLAN, remaining_nano__gt=0)


# ---- renewal -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_renewal_expires_the_old_monthly_lot_and_grants_the_new_cycle(team):
    spend(team, 1000 * NANO)
    add_on(team, 500)
    old = rewind_cycle(team)
    old_lot = plan_lot(team)

    renewal = subscription_renew(subscription_id=old.pk)

    start, end = cycle_bounds(old.current_cycle_end)
    assert (renewal.cycle_start, renewal.cycle_end) == (old.current_cycle_end, end)
    assert start == old.current_cycle_end  # new start = old end, one calendar month long
    assert renewal.granted_nano == PRO and renewal.expired_lots == 1
    subscription = Subscription.objects.get(team=team)
    assert (subscription.current_cycle_start, subscription.current_cycle_end) == (start, end)
    expiry = LedgerEntry.objects.get(team=team, kind=EntryKind.PLAN_EXPIRY)
    assert expiry.amount_nano == -4000 * NANO and expiry.reference == f"expiry:lot:{old_lot.id}"
    grant = LedgerEntry.objects.get(reference=plan_grant_reference(team.id, start))
    assert grant.kind == EntryKind.PLAN_GRANT and grant.amount_nano == PRO
    new_lot = plan_lot(team)
    assert new_lot.expires_at == end and new_lot.remaining_nano == PRO
    split = balance_get(team_id=team.id)
    assert (split.monthly, split.addon, split.total) == (PRO, 500 * NANO, PRO + 500 * NANO)
    assert reconciliation_drifts() == []


@pytest.mark.django_db
def test_lot_order_across_the_boundary_new_monthly_first_add_on_untouched(team):
    addon_lot = add_on(team, 500)
    rewind_cycle(team)
    cycles_renew_due()
    new_lot = plan_lot(team)

    assert spend(team, 100 * NANO) == [{"lot": new_lot.id, "nano": -100 * NANO}]
    assert CreditLot.objects.get(pk=addon_lot).remaining_nano == 500 * NANO
    # Past the monthly credits, the add-on pays; nothing of the old cycle is left to spend.
    assert spend(team, 5000 * NANO) == [
        {"lot": new_lot.id, "nano": -4900 * NANO},
        {"lot": addon_lot, "nano": -100 * NANO},
    ]
    assert balance(team) == 400 * NANO
    assert reconciliation_drifts() == []


@pytest.mark.django_db
def test_renewing_twice_changes_nothing_the_second_time(team):
    old = rewind_cycle(team)
    assert renew_cycles() == 1  # the beat task, eager here
    after_first = (kinds(team), balance(team))
    assert renew_cycles() == 0
    assert subscription_renew(subscription_id=old.pk) is None
    assert (kinds(team), balance(team)) == after_first
    assert after_first[0] == ["plan_grant", "plan_expiry", "plan_grant"]


@pytest.mark.django_db
def test_a_job_down_for_months_catches_up_to_the_current_cycle_with_one_grant(team):
    rewind_cycle(team, days=100)
    renewal = cycles_renew_due()
    subscription = Subscription.objects.get(team=team)
    assert renewal == 1
    now = timezone.now()
    assert subscription.current_cycle_start <= now < subscription.current_cycle_end
    assert kinds(team) == ["plan_grant", "plan_expiry", "plan_grant"]


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_renew_each_team_exactly_once(team_factory):
    teams = [team_factory(plan="pro") for _ in range(3)]
    old_ends = {t.id: rewind_cycle(t).current_cycle_end for t in teams}
    barrier = threading.Barrier(2)
    errors: list[Exception] = []
    renewed: list[int] = []

    def work() -> None:
        try:
            barrier.wait()
            renewed.append(cycles_renew_due())
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors, errors
    assert sum(renewed) == 3  # each team renewed by exactly one of the two
    for t in teams:
        subscription = Subscription.objects.get(team=t)
        assert subscription.current_cycle_start == old_ends[t.id]
        assert kinds(t) == ["plan_grant", "plan_expiry", "plan_grant"]
        assert balance(t) == PRO
    assert reconciliation_drifts() == []


# ---- plan changes --------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["admin_member", "finance", "member"])
def test_only_owners_change_the_plan(request, team, persona):
    actor = request.getfixturevalue(persona).user
    with pytest.raises(ApplicationError) as caught:
        subscription_change_plan(team=team, plan=plan("free"), actor=actor)
    assert caught.value.status_code == 403
    subscription = Subscription.objects.get(team=team)
    assert subscription.plan.code == "pro" and subscription.pending_plan is None


@pytest.mark.django_db
def test_an_outsider_cannot_change_the_plan(team, outsider):
    with pytest.raises(ApplicationError) as caught:
        subscription_change_plan(team=team, plan=plan("free"), actor=outsider.user)
    assert caught.value.status_code == 403


@pytest.mark.django_db
def test_upgrade_applies_now_with_the_exact_prorated_difference(team_factory):
    team = team_factory(plan="personal")
    owner = team.memberships.get().user
    subscription = Subscription.objects.get(team=team)
    start, end = subscription.current_cycle_start, subscription.current_cycle_end
    now = start + timedelta(days=9, hours=7, seconds=13, microseconds=250_001)

    change = subscription_change_plan(team=team, plan=plan("pro"), actor=owner, now=now)

    remaining = Fraction((end - now) // timedelta(microseconds=1), 10**6)
    cycle = Fraction(int((end - start).total_seconds()))
    expected = int(Fraction(4000 * NANO) * remaining / cycle)  # floor: all positive
    assert change.effective == "now" and change.granted_nano == expected
    entry = LedgerEntry.objects.get(reference=plan_upgrade_reference(team.id, start, "pro"))
    assert entry.reference == f"plan_upgrade:{team.id}:{start.isoformat()}:pro"
    assert entry.kind == EntryKind.PLAN_GRANT and entry.amount_nano == expected
    lot = CreditLot.objects.get(reference=entry.reference)
    assert lot.source == LotSource.PLAN and lot.expires_at == end
    assert Subscription.objects.get(team=team).plan.code == "pro"
    assert balance(team) == PERSONAL + expected
    audit = AuditEntry.objects.get(team=team, action="plan.change")
    assert audit.before == {"plan": "personal", "pending_plan": None}
    assert audit.after["plan"] == "pro" and audit.after["effective"] == "now"
    # Choosing Pro again is a no-op: no second grant, no audit row.
    again = subscription_change_plan(team=team, plan=plan("pro"), actor=owner, now=now)
    assert again.effective == "unchanged" and again.granted_nano == 0
    assert LedgerEntry.objects.filter(reference__startswith="plan_upgrade:").count() == 1
    assert AuditEntry.objects.filter(team=team, action="plan.change").count() == 1


@settings(max_examples=200, deadline=None)
@given(
    old=st.integers(0, 10_000),
    extra=st.integers(0, 100_000),
    elapsed=st.integers(0, 31 * 86_400 * 10**6),
)
def test_proration_is_the_floor_of_the_exact_fraction(old, extra, elapsed):
    start = timezone.now().replace(microsecond=0)
    end = cycle_bounds(start)[1]
    now = start + timedelta(microseconds=elapsed)
    lower, higher = Plan(monthly_credits=old), Plan(monthly_credits=old + extra)
    got = upgrade_proration_nano(old=lower, new=higher, cycle_start=start, cycle_end=end, now=now)
    if now >= end:
        assert got == 0
        return
    exact = (
        Fraction(extra * NANO)
        * Fraction((end - now) // timedelta(microseconds=1))
        / Fraction((end - start) // timedelta(microseconds=1))
    )
    assert got == int(exact) and 0 <= exact - got < 1


@pytest.mark.django_db
def test_downgrade_waits_for_the_cycle_end_and_the_renewal_applies_it(team, owner):
    change = subscription_change_plan(team=team, plan=plan("personal"), actor=owner.user)
    assert change.effective == "cycle_end" and change.granted_nano == 0
    subscription = Subscription.objects.get(team=team)
    assert subscription.plan.code == "pro" and subscription.pending_plan.code == "personal"
    assert kinds(team) == ["plan_grant"]  # nothing moves until the cycle ends

    rewind_cycle(team)
    renewal = cycles_renew_due()

    subscription.refresh_from_db()
    assert renewal == 1
    assert subscription.plan.code == "personal" and subscription.pending_plan is None
    assert balance(team) == PERSONAL
    applied = AuditEntry.objects.get(team=team, action="plan.downgrade_applied")
    assert applied.actor is None and applied.before == {"plan": "pro"}
    assert applied.after["plan"] == "personal"


@pytest.mark.django_db
def test_choosing_the_current_plan_again_cancels_a_pending_downgrade(team, owner):
    subscription_change_plan(team=team, plan=plan("personal"), actor=owner.user)
    change = subscription_change_plan(team=team, plan=plan("pro"), actor=owner.user)
    assert change.effective == "cancelled"
    assert Subscription.objects.get(team=team).pending_plan is None
    rewind_cycle(team)
    cycles_renew_due()
    assert Subscription.objects.get(team=team).plan.code == "pro"
    assert balance(team) == PRO


@pytest.mark.django_db
def test_down_to_free_the_add_on_credits_are_kept(team, owner):
    addon_lot = add_on(team, 500)
    subscription_change_plan(team=team, plan=plan("free"), actor=owner.user)
    rewind_cycle(team)
    cycles_renew_due()
    assert Subscription.objects.get(team=team).plan.code == "free"
    assert CreditLot.objects.get(pk=addon_lot).remaining_nano == 500 * NANO
    split = balance_get(team_id=team.id)
    assert (split.monthly, split.addon) == (FREE, 500 * NANO)
    assert reconciliation_drifts() == []


@pytest.mark.django_db
def test_a_downgrade_below_the_member_count_is_refused(team, owner, member):
    with pytest.raises(ApplicationError) as caught:
        subscription_change_plan(team=team, plan=plan("free"), actor=owner.user)
    assert caught.value.code == "member_limit"
    assert Subscription.objects.get(team=team).pending_plan is None


@pytest.mark.django_db
def test_a_change_after_the_cycle_ended_renews_first(team_factory):
    team = team_factory(plan="personal")
    owner = team.memberships.get().user
    old = rewind_cycle(team)
    change = subscription_change_plan(team=team, plan=plan("pro"), actor=owner)
    subscription = change.subscription
    assert subscription.current_cycle_start == old.current_cycle_end
    start = subscription.current_cycle_start
    assert LedgerEntry.objects.filter(reference=plan_grant_reference(team.id, start)).exists()
    assert LedgerEntry.objects.filter(
        reference=plan_upgrade_reference(team.id, start, "pro")
    ).exists()


# ---- the plan page -------------------------------------------------------------------------


@pytest.fixture
def test_mode(settings) -> None:
    """Paid plans go through the fake payment provider's checkout (no Stripe key)."""
    settings.STRIPE_SECRET_KEY = ""
    settings.FAKE_PAYMENTS_ENABLED = True


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["owner", "admin_member", "finance", "member"])
def test_every_member_sees_the_plan_only_owners_get_the_form(
    request, login_as, team, persona, test_mode
):
    client = login_as(request.getfixturevalue(persona))
    page = client.get(reverse("accounts:plan", args=[team.slug]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Test mode" in text and "Pro" in text
    form_action = f'action="{reverse("accounts:plan_change", args=[team.slug])}"'
    assert (form_action in text) == (persona == "owner")


@pytest.mark.django_db
def test_outsiders_get_404_and_non_owners_403_on_the_plan_pages(login_as, team, outsider, member):
    outsider_client = login_as(outsider)
    assert outsider_client.get(reverse("accounts:plan", args=[team.slug])).status_code == 404
    change = reverse("accounts:plan_change", args=[team.slug])
    assert outsider_client.post(change, {"plan": "free"}).status_code == 404
    assert login_as(member).post(change, {"plan": "personal"}).status_code == 403
    assert Subscription.objects.get(team=team).pending_plan is None


@pytest.mark.django_db
def test_the_owner_upgrades_through_checkout_and_downgrades_at_the_cycle_end(
    login_as, team_factory, test_mode
):
    """The page's paid plans go through checkout (here the test-mode one; Stripe's is in
    tests/payments/test_subscriptions.py): nothing changes until it is paid."""
    team = team_factory(plan="free")
    owner = team.memberships.get().user
    client = login_as(owner, REMOTE_ADDR="203.0.113.9")
    change = reverse("accounts:plan_change", args=[team.slug])
    response = client.post(change, {"plan": "pro"})
    assert response.status_code == 302
    assert response["Location"].startswith("/billing/test-checkout/fake_cs_sub_")
    assert Subscription.objects.get(team=team).plan.code == "free"
    paid = client.post(response["Location"], {"card": "fake_pm_visa", "pay": "1"}, follow=True)
    assert "You are on the Pro plan now (test mode)." in paid.content.decode()
    assert Subscription.objects.get(team=team).plan.code == "pro"
    assert balance(team) == PRO
    assert AuditEntry.objects.filter(team=team, action="plan.invoice_paid").count() == 1

    down = client.post(change, {"plan": "free"}, follow=True)
    assert "You move to the Free plan at the end of the cycle" in down.content.decode()
    subscription = Subscription.objects.get(team=team)
    assert (subscription.plan.code, subscription.pending_plan.code) == ("pro", "free")
    assert AuditEntry.objects.get(team=team, action="plan.cancel").ip == "203.0.113.9"
    bad = client.post(change, {"plan": "nope"})
    assert bad.status_code == 400
    assert "Select a valid choice" in bad.content.decode()


@pytest.mark.django_db
def test_a_paid_plan_without_a_payment_provider_is_a_clear_error(login_as, team_factory, settings):
    settings.STRIPE_SECRET_KEY = ""
    settings.FAKE_PAYMENTS_ENABLED = False
    team = team_factory(plan="free")
    client = login_as(team.memberships.get().user)
    response = client.post(reverse("accounts:plan_change", args=[team.slug]), {"plan": "pro"})
    assert response.status_code == 400
    assert "Payments are not configured on this server" in response.content.decode()
    assert Subscription.objects.get(team=team).plan.code == "free"
