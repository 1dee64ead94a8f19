"""Plan subscriptions through Stripe (the real `stripe` library against the local
Stripe-compatible server, real signed events): upgrade through Checkout, `invoice.paid` opening
and renewing cycles exactly once, failed payments, grace and Free, seats on Pro, cancelling,
changing paid plans, and who may do it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import (
    AuditEntry,
    Membership,
    Notification,
    OutboxEvent,
    Role,
    Subscription,
    SubscriptionStatus,
)
from accounts.services import cycle_bounds, invitation_accept, invitation_create
from ledger.models import (
    EntryKind,
    Payment,
    PaymentCustomer,
    PaymentKind,
    PaymentStatus,
    StripeEvent,
    StripeEventStatus,
)
from ledger.services.cycles import cycles_renew_due, subscription_renew
from ledger.services.providers import PaymentProviderError, provider_get
from ledger.services.subscriptions import subscription_invoice_paid, subscription_updated
from pricing.money import NANO

from ..conftest import make_user
from .conftest import logged_in
from .plans import (
    balance,
    end_cycle,
    entries,
    invoice,
    invoice_failed,
    invoice_paid,
    proration_line,
    rewind,
    second,
    spend,
    subscription_object,
)
from .stripe_server import event

pytestmark = pytest.mark.django_db

FREE, PERSONAL, PRO = 300 * NANO, 1000 * NANO, 5000 * NANO


def sub_of(team) -> Subscription:
    return Subscription.objects.select_related("plan", "pending_plan").get(team=team)


def owner_of(team) -> Membership:
    return Membership.objects.get(team=team, role=Role.OWNER)


def choose(client: Client, team, plan: str):
    return client.post(reverse("accounts:plan_change", args=[team.slug]), {"plan": plan})


def deletes(stripe_api, sub: str) -> int:
    return len(stripe_api.calls_to("DELETE", f"/v1/subscriptions/{sub}"))


@pytest.fixture
def subscribed(stripe_api, team_factory, send):
    """A Free team moved to a paid plan through the plan page and a paid first invoice."""

    def make(plan: str = "personal", *, sub: str = "sub_test_A", start=None, quantity: int = 1):
        team = team_factory(plan="free")
        response = choose(logged_in(owner_of(team)), team, plan)
        assert response.status_code == 302, response.content
        amount = {"personal": 900, "pro": 2000 * quantity}[plan]
        # Stripe's period starts when the subscription is created, after the team was.
        start = start or second() + timedelta(seconds=1)
        paid = invoice_paid(team, sub=sub, plan=plan, start=start, amount=amount, quantity=quantity)
        assert send(paid).status_code == 200
        assert sub_of(team).plan.code == plan
        assert entries(team, EntryKind.PLAN_GRANT) == [
            FREE,
            {"personal": PERSONAL, "pro": PRO}[plan],
        ]
        return team

    return make


# ---- upgrading --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["new", "old"])
def test_upgrading_goes_through_checkout_and_the_paid_invoice_grants_the_plan_once(
    stripe_api, team_factory, send, shape
):
    team = team_factory(plan="free")
    client = logged_in(owner_of(team))
    response = choose(client, team, "personal")
    assert response.status_code == 302
    assert response["Location"].startswith("https://checkout.stripe.test/c/pay/cs_test_")
    (sent,) = stripe_api.calls_to("POST", "/v1/checkout/sessions")
    assert sent["mode"] == "subscription"
    assert sent["customer"] == PaymentCustomer.objects.get(team=team).customer_id
    (item,) = sent["line_items"]
    assert (item["price_data"]["unit_amount"], item["quantity"]) == ("900", "1")
    assert item["price_data"]["recurring"] == {"interval": "month"}
    metadata = sent["subscription_data"]["metadata"]
    assert (metadata["team_id"], metadata["plan"]) == (str(team.pk), "personal")
    # Nothing changes before the money arrives.
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.provider) == ("free", "")
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE]
    assert balance(team) == FREE
    # Checkout completes: the plan waits for the first invoice.
    session = stripe_api.objects[sent_session_id(stripe_api)]
    completed = event(
        "checkout.session.completed",
        {**session, "status": "complete", "payment_status": "paid", "subscription": "sub_test_A"},
    )
    assert send(completed).status_code == 200
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.status) == ("free", SubscriptionStatus.INCOMPLETE)
    page = client.get(reverse("accounts:plan", args=[team.slug])).content.decode()
    assert "Waiting for the first payment of the new plan." in page

    start = second() - timedelta(minutes=5)
    end = cycle_bounds(start)[1]
    paid = invoice_paid(
        team, sub="sub_test_A", plan="personal", start=start, invoice_id="in_first", shape=shape
    )
    assert send(paid).status_code == 200
    subscription = sub_of(team)
    assert subscription.plan.code == "personal"
    assert (subscription.current_cycle_start, subscription.current_cycle_end) == (start, end)
    assert (subscription.provider, subscription.provider_subscription_id) == (
        "stripe",
        "sub_test_A",
    )
    assert (subscription.status, subscription.quantity) == (SubscriptionStatus.ACTIVE, 1)
    assert entries(team, EntryKind.PLAN_EXPIRY) == [-FREE]  # what was left of Free ends now
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL]
    assert balance(team) == PERSONAL
    payment = Payment.objects.get(team=team, kind=PaymentKind.SUBSCRIPTION)
    assert (payment.invoice_id, payment.amount_cents, payment.status) == (
        "in_first",
        900,
        PaymentStatus.SUCCEEDED,
    )
    assert AuditEntry.objects.filter(team=team, action="plan.invoice_paid").count() == 1
    assert OutboxEvent.objects.filter(team=team, type="subscription.changed").count() == 1

    # Stripe's retry of the same event, and another event about the same invoice.
    assert send(paid).status_code == 200
    again = event("invoice.paid", paid["data"]["object"])
    assert send(again).status_code == 200
    assert StripeEvent.objects.get(event_id=again["id"]).status == StripeEventStatus.PROCESSED
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL]
    assert entries(team, EntryKind.PLAN_EXPIRY) == [-FREE]
    assert balance(team) == PERSONAL
    assert Payment.objects.filter(team=team).count() == 1
    assert OutboxEvent.objects.filter(team=team, type="subscription.changed").count() == 1


def sent_session_id(stripe_api) -> str:
    return next(k for k, v in stripe_api.objects.items() if v["object"] == "checkout.session")


def test_choosing_the_plan_already_paid_for_is_refused(stripe_api, subscribed):
    team = subscribed("personal")
    response = choose(logged_in(owner_of(team)), team, "personal")
    assert response.status_code == 400
    assert "already on Personal" in response.content.decode()
    assert len(stripe_api.calls_to("POST", "/v1/checkout/sessions")) == 1  # the first one only


# ---- renewing ---------------------------------------------------------------------------------


def test_the_next_invoice_renews_the_cycle_once_and_the_renew_job_waits_for_it(
    stripe_api, subscribed, send
):
    team = subscribed("personal")
    spend(team, 250 * NANO)
    old = end_cycle(team)  # the cycle ended an hour ago; Stripe bills the next one
    assert cycles_renew_due() == 0  # a Stripe-billed cycle is renewed by its invoice only
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.current_cycle_end) == (
        "personal",
        old.current_cycle_end,
    )
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL]

    start = old.current_cycle_end
    renewal = invoice_paid(
        team,
        sub="sub_test_A",
        plan="personal",
        start=start,
        invoice_id="in_renewal",
        billing_reason="subscription_cycle",
    )
    assert send(renewal).status_code == 200
    assert send(renewal).status_code == 200
    assert send(event("invoice.paid", renewal["data"]["object"])).status_code == 200
    subscription = sub_of(team)
    assert (subscription.current_cycle_start, subscription.current_cycle_end) == (
        start,
        cycle_bounds(start)[1],
    )
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL, PERSONAL]
    # the previous cycle's monthly lot: 1,000 - 250 spent expired at its end
    assert entries(team, EntryKind.PLAN_EXPIRY) == [-FREE, -750 * NANO]
    assert balance(team) == PERSONAL
    assert Payment.objects.filter(team=team, status=PaymentStatus.SUCCEEDED).count() == 2
    assert cycles_renew_due() == 0  # the new cycle has not ended
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL, PERSONAL]


def test_a_renewal_with_a_proration_line_first_renews_the_plan_period(stripe_api, subscribed, send):
    """A seat added mid-cycle is billed on the next invoice as a proration line for the rest of
    the old period, listed before the plan's line: the cycle is the plan line's period."""
    team = subscribed("pro")
    old = end_cycle(team)
    start = old.current_cycle_end
    proration = proration_line(
        sub="sub_test_A",
        start=start - timedelta(days=10),
        end=start,
        amount=667,
        quantity=1,
    )
    renewal = invoice_paid(
        team,
        sub="sub_test_A",
        plan="pro",
        start=start,
        amount=4000 + 667,
        quantity=2,
        billing_reason="subscription_cycle",
        extra_lines=[proration],
    )
    assert send(renewal).status_code == 200
    subscription = sub_of(team)
    assert (subscription.current_cycle_start, subscription.current_cycle_end) == (
        start,
        cycle_bounds(start)[1],
    )
    assert subscription.quantity == 2
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PRO, PRO]
    assert entries(team, EntryKind.PLAN_EXPIRY) == [-FREE, -PRO]
    assert balance(team) == PRO
    # An invoice of prorations only (a mid-cycle charge) is a payment, not a new cycle.
    mid_cycle = invoice(team, sub="sub_test_A", plan="pro", start=start, amount=500)
    mid_cycle.update(billing_reason="subscription_update")
    mid_cycle["lines"]["data"] = [
        proration_line(
            sub="sub_test_A", start=start + timedelta(days=3), end=start, amount=500, quantity=1
        )
    ]
    assert send(event("invoice.paid", mid_cycle)).status_code == 200
    assert sub_of(team).current_cycle_start == start
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PRO, PRO]
    assert Payment.objects.get(invoice_id=mid_cycle["id"]).status == PaymentStatus.SUCCEEDED


# ---- failed payments, grace, Free --------------------------------------------------------------


def test_a_failed_renewal_is_past_due_then_free_after_the_grace_period(
    stripe_api, subscribed, send, settings, django_capture_on_commit_callbacks
):
    settings.SUBSCRIPTION_GRACE_DAYS = 7
    team = subscribed("personal")
    old = end_cycle(team, ago=timedelta(hours=2))
    failed = invoice_failed(
        team,
        sub="sub_test_A",
        plan="personal",
        start=old.current_cycle_end,
        invoice_id="in_renewal",
        billing_reason="subscription_cycle",
    )
    assert send(failed).status_code == 200
    assert send(event("invoice.payment_failed", failed["data"]["object"])).status_code == 200
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.status) == (
        "personal",
        SubscriptionStatus.PAST_DUE,
    )
    assert subscription.past_due_since is not None
    (notice,) = Notification.objects.filter(team=team, kind="subscription_payment_failed")
    assert "$9.00" in notice.body and "Personal" in notice.body
    (outbox,) = OutboxEvent.objects.filter(team=team, type="subscription.payment_failed")
    assert outbox.payload["data"]["plan"] == "personal"
    assert outbox.payload["data"]["amount_usd"] == "9.00"
    assert Payment.objects.get(invoice_id="in_renewal").status == PaymentStatus.FAILED
    page = logged_in(owner_of(team)).get(reverse("accounts:plan", args=[team.slug]))
    assert "The last payment failed" in page.content.decode()

    # Within the grace period the team keeps its plan (and no credits move).
    assert cycles_renew_due() == 0
    rewind(team, timedelta(days=6))
    assert cycles_renew_due() == 0
    assert sub_of(team).plan.code == "personal"
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL]
    assert deletes(stripe_api, "sub_test_A") == 0

    rewind(team, timedelta(days=1, minutes=1))  # the grace period is over
    with django_capture_on_commit_callbacks(execute=True):
        assert cycles_renew_due() == 1
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.provider) == ("free", "")
    assert subscription.provider_subscription_id is None
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert subscription.current_cycle_end > timezone.now()
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL, FREE]
    assert entries(team, EntryKind.PLAN_EXPIRY) == [-FREE, -PERSONAL]
    assert balance(team) == FREE
    assert deletes(stripe_api, "sub_test_A") == 1  # Stripe stops billing
    assert Notification.objects.filter(team=team, kind="subscription_downgraded").count() == 1

    # A late success of the cancelled subscription's invoice changes nothing (finance refunds).
    late = invoice_paid(
        team,
        sub="sub_test_A",
        plan="personal",
        start=old.current_cycle_end,
        invoice_id="in_renewal",
        billing_reason="subscription_cycle",
    )
    assert send(late).status_code == 200
    assert sub_of(team).plan.code == "free"
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL, FREE]
    assert Payment.objects.get(invoice_id="in_renewal").status == PaymentStatus.SUCCEEDED


def test_the_grace_period_runs_from_the_failure_when_it_comes_after_the_cycle_end(
    stripe_api, subscribed, send, settings
):
    settings.SUBSCRIPTION_GRACE_DAYS = 7
    team = subscribed("personal")
    old = end_cycle(team, ago=timedelta(days=3))  # Stripe's retries failed for three days
    failed = invoice_failed(
        team, sub="sub_test_A", plan="personal", start=old.current_cycle_end, invoice_id="in_r"
    )
    send(failed)
    failed_at = sub_of(team).past_due_since
    assert failed_at > old.current_cycle_end + timedelta(days=2)
    notice = Notification.objects.get(team=team, kind="subscription_payment_failed")
    told = failed_at + timedelta(days=7)
    assert f"before {told:%Y-%m-%d}" in notice.body
    subscription = sub_of(team)
    # a week after the cycle end, but not a week after the failure: the team keeps its plan
    assert (
        subscription_renew(subscription_id=subscription.pk, now=told - timedelta(hours=1)) is None
    )
    assert sub_of(team).plan.code == "personal"
    renewal = subscription_renew(subscription_id=subscription.pk, now=told + timedelta(minutes=1))
    assert renewal is not None and renewal.plan_code == "free"


def test_a_retried_invoice_that_finally_pays_renews_the_cycle(stripe_api, subscribed, send):
    team = subscribed("personal")
    old = end_cycle(team)
    common = dict(sub="sub_test_A", plan="personal", start=old.current_cycle_end, invoice_id="in_r")
    send(invoice_failed(team, billing_reason="subscription_cycle", **common))
    assert sub_of(team).status == SubscriptionStatus.PAST_DUE
    send(invoice_paid(team, billing_reason="subscription_cycle", **common))
    subscription = sub_of(team)
    assert (subscription.status, subscription.past_due_since) == (SubscriptionStatus.ACTIVE, None)
    assert subscription.current_cycle_start == old.current_cycle_end
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL, PERSONAL]
    assert Payment.objects.get(invoice_id="in_r").status == PaymentStatus.SUCCEEDED


def test_a_failed_first_payment_of_a_new_plan_leaves_the_team_as_it_was(
    stripe_api, subscribed, send
):
    team = subscribed("personal")
    choose(logged_in(owner_of(team)), team, "pro")
    failed = invoice_failed(team, sub="sub_test_B", plan="pro", start=second(), amount=2000)
    assert send(failed).status_code == 200
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.status) == ("personal", SubscriptionStatus.ACTIVE)
    assert not Notification.objects.filter(team=team, kind="subscription_payment_failed").exists()


# ---- seats on Pro ------------------------------------------------------------------------------


def test_pro_bills_one_seat_per_member_and_follows_a_new_member(
    stripe_api, subscribed, django_capture_on_commit_callbacks
):
    team = subscribed("pro")
    (sent,) = stripe_api.calls_to("POST", "/v1/checkout/sessions")
    item = sent["line_items"][0]
    assert (item["price_data"]["unit_amount"], item["quantity"]) == ("2000", "1")
    assert sub_of(team).quantity == 1
    assert balance(team) == PRO
    owner = owner_of(team)
    _, token = invitation_create(
        team=team, email="second@example.com", role=Role.MEMBER, invited_by=owner.user
    )
    with django_capture_on_commit_callbacks(execute=True):
        invitation_accept(token=token, user=make_user("second@example.com"))
    (update,) = stripe_api.calls_to("POST", "/v1/subscriptions/sub_test_A")
    assert update["items"] == [{"id": "si_sub_test_A", "quantity": "2"}]
    assert update["proration_behavior"] == "create_prorations"
    assert sub_of(team).quantity == 2
    assert balance(team) == PRO  # seats change the bill, not the credits
    # Stripe's echo of the change agrees.
    echo = subscription_object(
        team,
        sub="sub_test_A",
        plan="pro",
        items={"data": [{"id": "si_sub_test_A", "quantity": 2}]},
    )
    subscription_updated(subscription=echo)
    assert sub_of(team).quantity == 2


def test_a_member_who_joins_between_checkout_and_payment_is_billed_too(
    stripe_api, subscribed, send, django_capture_on_commit_callbacks
):
    team = subscribed("personal")
    owner = owner_of(team)
    for email in ("two@example.com", "three@example.com"):
        _, token = invitation_create(
            team=team, email=email, role=Role.MEMBER, invited_by=owner.user
        )
        if email == "three@example.com":  # the owner is at checkout for Pro by now
            response = choose(logged_in(owner), team, "pro")
            assert response.status_code == 302
            sent = stripe_api.calls_to("POST", "/v1/checkout/sessions")[-1]
            assert sent["line_items"][0]["quantity"] == "2"
        with django_capture_on_commit_callbacks(execute=True):
            invitation_accept(token=token, user=make_user(email))
    assert stripe_api.calls_to("POST", "/v1/subscriptions/sub_test_A") == []  # Personal: flat
    paid = invoice_paid(
        team, sub="sub_test_B", plan="pro", start=second() + timedelta(seconds=1), quantity=2
    )
    with django_capture_on_commit_callbacks(execute=True):
        send(paid)
    (update,) = stripe_api.calls_to("POST", "/v1/subscriptions/sub_test_B")
    assert update["items"][0]["quantity"] == "3"
    assert sub_of(team).quantity == 3
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL, PRO]  # credits per team


@pytest.mark.django_db(transaction=True)
def test_accepting_an_invitation_through_the_page_updates_the_seats_after_commit(
    stripe_api, team_factory, send
):
    team = team_factory(plan="free")
    owner = owner_of(team)
    assert choose(logged_in(owner), team, "pro").status_code == 302
    start = second() + timedelta(seconds=1)
    send(invoice_paid(team, sub="sub_test_P", plan="pro", start=start, amount=2000))
    assert sub_of(team).plan.code == "pro"
    _, token = invitation_create(
        team=team, email="joiner@example.com", role=Role.MEMBER, invited_by=owner.user
    )
    joiner = Client()
    joiner.force_login(make_user("joiner@example.com"))
    response = joiner.post(reverse("accounts:invitation", args=[token]))
    assert response.status_code == 302
    assert Membership.objects.filter(team=team).count() == 2
    (update,) = stripe_api.calls_to("POST", "/v1/subscriptions/sub_test_P")
    assert update["items"][0]["quantity"] == "2"
    assert sub_of(team).quantity == 2


# ---- cancelling --------------------------------------------------------------------------------


def test_choosing_free_cancels_at_the_period_end_keep_undoes_it(
    stripe_api, subscribed, send, django_capture_on_commit_callbacks
):
    team = subscribed("personal")
    client = logged_in(owner_of(team))
    plan_url = reverse("accounts:plan", args=[team.slug])

    response = choose(client, team, "free")
    assert response.status_code == 302
    (cancel,) = stripe_api.calls_to("POST", "/v1/subscriptions/sub_test_A")
    assert cancel["cancel_at_period_end"] == "true"
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.pending_plan.code) == ("personal", "free")
    assert subscription.cancel_at_period_end
    page = client.get(plan_url).content.decode()
    assert "Moves to Free at the end of this cycle." in page
    assert "Keep Personal" in page

    assert client.post(reverse("accounts:plan_resume", args=[team.slug])).status_code == 302
    resume = stripe_api.calls_to("POST", "/v1/subscriptions/sub_test_A")[-1]
    assert resume["cancel_at_period_end"] == "false"
    subscription = sub_of(team)
    assert (subscription.pending_plan, subscription.cancel_at_period_end) == (None, False)

    # Choosing the current plan again while a cancellation is pending keeps it too.
    choose(client, team, "free")
    assert choose(client, team, "personal").status_code == 302
    assert sub_of(team).cancel_at_period_end is False
    updates = stripe_api.calls_to("POST", "/v1/subscriptions/sub_test_A")
    assert [u["cancel_at_period_end"] for u in updates] == ["true", "false", "true", "false"]
    assert len(stripe_api.calls_to("POST", "/v1/checkout/sessions")) == 1  # no new checkout

    choose(client, team, "free")
    assert cycles_renew_due() == 0  # the cycle runs on: the team keeps Personal
    assert sub_of(team).plan.code == "personal"
    end_cycle(team)
    with django_capture_on_commit_callbacks(execute=True):
        assert cycles_renew_due() == 1
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.provider, subscription.pending_plan) == (
        "free",
        "",
        None,
    )
    assert subscription.cancel_at_period_end is False
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL, FREE]
    assert balance(team) == FREE
    assert deletes(stripe_api, "sub_test_A") == 1  # made sure Stripe bills no more
    # Stripe ends the subscription at the period end; the event changes nothing more.
    deleted = event(
        "customer.subscription.deleted",
        subscription_object(team, sub="sub_test_A", plan="personal", status="canceled"),
    )
    assert send(deleted).status_code == 200
    assert sub_of(team).plan.code == "free"
    assert sub_of(team).status == SubscriptionStatus.ACTIVE


def test_a_subscription_deleted_at_stripe_moves_the_team_to_free_at_the_cycle_end(
    stripe_api, subscribed, send
):
    team = subscribed("personal")
    client = logged_in(owner_of(team))
    choose(client, team, "free")  # cancel at the period end...
    deleted = event(  # ...and Stripe ends it now (say, from its dashboard)
        "customer.subscription.deleted",
        subscription_object(team, sub="sub_test_A", plan="personal", status="canceled"),
    )
    assert send(deleted).status_code == 200
    subscription = sub_of(team)
    assert subscription.status == SubscriptionStatus.CANCELED
    assert (subscription.plan.code, subscription.pending_plan.code) == ("personal", "free")
    assert cycles_renew_due() == 0
    assert sub_of(team).plan.code == "personal"  # paid until the cycle end
    # "Keep" cannot revive a subscription Stripe has ended: a clear message, no Stripe call.
    response = client.post(reverse("accounts:plan_resume", args=[team.slug]), follow=True)
    assert "choose the plan again" in response.content.decode()
    assert len(stripe_api.calls_to("POST", "/v1/subscriptions/sub_test_A")) == 1  # the cancel
    # Choosing the plan again subscribes anew.
    assert choose(client, team, "personal").status_code == 302
    assert len(stripe_api.calls_to("POST", "/v1/checkout/sessions")) == 2
    end_cycle(team)
    assert cycles_renew_due() == 1
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.status) == ("free", SubscriptionStatus.ACTIVE)
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL, FREE]


def test_cancelling_and_resuming_at_stripe_is_mirrored(stripe_api, subscribed, send):
    team = subscribed("personal")
    updated = subscription_object(team, sub="sub_test_A", plan="personal")
    send(event("customer.subscription.updated", {**updated, "cancel_at_period_end": True}))
    subscription = sub_of(team)
    assert subscription.cancel_at_period_end and subscription.pending_plan.code == "free"
    send(event("customer.subscription.updated", {**updated, "cancel_at_period_end": False}))
    subscription = sub_of(team)
    assert (subscription.cancel_at_period_end, subscription.pending_plan) == (False, None)


# ---- changing paid plans -----------------------------------------------------------------------


def test_personal_to_pro_is_a_new_checkout_and_the_old_subscription_is_cancelled(
    stripe_api, subscribed, send, django_capture_on_commit_callbacks
):
    team = subscribed("personal", start=second() - timedelta(days=3))
    spend(team, 400 * NANO)
    client = logged_in(owner_of(team))
    response = choose(client, team, "pro")
    assert response.status_code == 302
    _first, second_session = stripe_api.calls_to("POST", "/v1/checkout/sessions")
    assert second_session["mode"] == "subscription"
    assert second_session["line_items"][0]["price_data"]["unit_amount"] == "2000"
    assert second_session["subscription_data"]["metadata"]["plan"] == "pro"
    assert sub_of(team).plan.code == "personal"  # until the new plan is paid

    start = second() + timedelta(seconds=2)
    paid = invoice_paid(team, sub="sub_test_B", plan="pro", start=start, amount=2000)
    with django_capture_on_commit_callbacks(execute=True):
        assert send(paid).status_code == 200
    assert deletes(stripe_api, "sub_test_A") == 1
    assert deletes(stripe_api, "sub_test_B") == 0
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.provider_subscription_id) == ("pro", "sub_test_B")
    assert subscription.current_cycle_start == start
    assert entries(team, EntryKind.PLAN_EXPIRY) == [-FREE, -600 * NANO]
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL, PRO]
    assert balance(team) == PRO

    # The old subscription's late events change nothing: not its deletion, not a failed or
    # even a paid renewal of it (which must not switch the team back nor cancel Pro).
    with django_capture_on_commit_callbacks(execute=True):
        old_sub = subscription_object(team, sub="sub_test_A", plan="personal", status="canceled")
        send(event("customer.subscription.deleted", old_sub))
        old = dict(
            sub="sub_test_A", plan="personal", start=start, billing_reason="subscription_cycle"
        )
        send(invoice_failed(team, invoice_id="in_old_1", **old))
        send(invoice_paid(team, invoice_id="in_old_2", **old))
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.provider_subscription_id) == ("pro", "sub_test_B")
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert subscription.pending_plan is None
    assert deletes(stripe_api, "sub_test_B") == 0
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL, PRO]
    assert not Notification.objects.filter(team=team, kind="subscription_payment_failed").exists()


def test_resubscribing_after_a_failed_payment_ignores_the_old_subscriptions_failures(
    stripe_api, subscribed, send, django_capture_on_commit_callbacks
):
    team = subscribed("personal")
    old = end_cycle(team)
    renewal = dict(
        plan="personal", start=old.current_cycle_end, billing_reason="subscription_cycle"
    )
    send(invoice_failed(team, sub="sub_test_A", invoice_id="in_a1", **renewal))
    assert sub_of(team).status == SubscriptionStatus.PAST_DUE
    # The owner pays the same plan again with another card: a new subscription.
    assert choose(logged_in(owner_of(team)), team, "personal").status_code == 302
    start = second()
    with django_capture_on_commit_callbacks(execute=True):
        send(invoice_paid(team, sub="sub_test_B", plan="personal", start=start))
    assert deletes(stripe_api, "sub_test_A") == 1
    subscription = sub_of(team)
    assert (subscription.status, subscription.provider_subscription_id) == (
        SubscriptionStatus.ACTIVE,
        "sub_test_B",
    )
    # A late failure of the old subscription's retries does not make the new one past due.
    send(invoice_failed(team, sub="sub_test_A", invoice_id="in_a2", **renewal))
    assert sub_of(team).status == SubscriptionStatus.ACTIVE
    assert Notification.objects.filter(team=team, kind="subscription_payment_failed").count() == 1


def test_a_plan_paid_in_the_second_its_free_cycle_began_still_grants_its_credits(
    stripe_api, team_factory, send
):
    team = team_factory(plan="free")
    start = sub_of(team).current_cycle_start  # the Free grant's cycle start, to the second
    choose(logged_in(owner_of(team)), team, "personal")
    send(invoice_paid(team, sub="sub_test_A", plan="personal", start=start))
    assert sub_of(team).plan.code == "personal"
    assert entries(team, EntryKind.PLAN_EXPIRY) == [-FREE]
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL]
    assert balance(team) == PERSONAL


def test_a_paid_plan_set_up_without_a_provider_is_cancelled_at_the_cycle_end(stripe_api, team):
    """Teams put on a paid plan before payments existed (or by support) have no provider
    subscription: choosing Free still moves them at the cycle end, and nothing stays pending."""
    client = logged_in(owner_of(team))
    assert choose(client, team, "free").status_code == 302
    assert sub_of(team).cancel_at_period_end
    end_cycle(team)
    assert cycles_renew_due() == 1
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.pending_plan) == ("free", None)
    assert subscription.cancel_at_period_end is False
    assert stripe_api.calls == []
    page = client.get(reverse("accounts:plan", args=[team.slug])).content.decode()
    assert "Moves to" not in page


def test_seats_are_not_synced_to_a_subscription_stripe_has_ended(
    stripe_api, subscribed, send, django_capture_on_commit_callbacks
):
    team = subscribed("pro")
    ended = subscription_object(team, sub="sub_test_A", plan="pro", status="canceled")
    send(event("customer.subscription.deleted", ended))
    _, token = invitation_create(
        team=team, email="late@example.com", role=Role.MEMBER, invited_by=owner_of(team).user
    )
    with django_capture_on_commit_callbacks(execute=True):
        invitation_accept(token=token, user=make_user("late@example.com"))
    assert stripe_api.calls_to("GET", "/v1/subscriptions/sub_test_A") == []
    assert stripe_api.calls_to("POST", "/v1/subscriptions/sub_test_A") == []


def test_cancelling_a_subscription_stripe_no_longer_has_is_not_an_error(stripe_api):
    stripe_api.server.clear_all_handlers()
    stripe_api.server.expect_request(
        "/v1/subscriptions/sub_gone", method="DELETE"
    ).respond_with_json(
        {
            "error": {
                "type": "invalid_request_error",
                "code": "resource_missing",
                "message": "No such subscription: 'sub_gone'",
            }
        },
        status=404,
    )
    stripe_api.server.expect_request(
        "/v1/subscriptions/sub_odd", method="DELETE"
    ).respond_with_json(
        {"error": {"type": "invalid_request_error", "message": "Something else"}}, status=400
    )
    provider = provider_get("stripe")
    provider.subscription_cancel_now(subscription_id="sub_gone")
    with pytest.raises(PaymentProviderError):
        provider.subscription_cancel_now(subscription_id="sub_odd")


def test_invoice_paid_called_directly_is_idempotent_too(stripe_api, team_factory):
    team = team_factory(plan="free")
    start = second() + timedelta(seconds=1)
    obj = invoice(team, sub="sub_test_D", plan="personal", start=start, invoice_id="in_d")
    assert subscription_invoice_paid(invoice=obj) is True
    assert subscription_invoice_paid(invoice=obj) is False
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL]


# ---- who may ------------------------------------------------------------------------------------


@pytest.mark.parametrize("persona", ["admin_member", "finance", "member"])
def test_only_owners_start_a_plan_checkout(request, stripe_api, team, persona):
    client = logged_in(request.getfixturevalue(persona).membership)
    for plan in ("personal", "free"):
        response = choose(client, team, plan)
        assert response.status_code == 403
        assert "Not allowed" in response.content.decode()
    assert client.post(reverse("accounts:plan_resume", args=[team.slug])).status_code == 403
    assert stripe_api.calls == []
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.pending_plan) == ("pro", None)
    page = client.get(reverse("accounts:plan", args=[team.slug])).content.decode()
    assert reverse("accounts:plan_change", args=[team.slug]) not in page


def test_outsiders_get_404_on_another_teams_plan_pages(stripe_api, team, outsider):
    client = logged_in(outsider.membership)
    assert client.get(reverse("accounts:plan", args=[team.slug])).status_code == 404
    assert choose(client, team, "personal").status_code == 404
    assert stripe_api.calls == []
