"""The fake payment provider (test mode: no Stripe key, FAKE_PAYMENTS_ENABLED): top-ups and plans
through our own checkout page, credited through the same services as Stripe's payments; the
renew job renewing its subscriptions by itself; auto recharge; and the refusal when it is off."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import (
    Membership,
    Notification,
    OutboxEvent,
    Role,
    Subscription,
    SubscriptionStatus,
)
from ledger.models import (
    AutoRecharge,
    EntryKind,
    LedgerEntry,
    Payment,
    PaymentCustomer,
    PaymentKind,
    PaymentStatus,
)
from ledger.services.cycles import cycles_renew_due
from ledger.services.payments import payment_credit
from ledger.services.recharge import (
    auto_recharge_configure,
    auto_recharge_sweep,
    recharge_allowance,
)
from pricing.money import NANO

from .conftest import logged_in
from .plans import balance, end_cycle, entries

pytestmark = pytest.mark.django_db

FREE, PERSONAL, PRO = 300 * NANO, 1000 * NANO, 5000 * NANO
CHECKOUT = re.compile(r"^/billing/test-checkout/(fake_cs_[a-z]+_[0-9A-Za-z_]+)/$")


def owner_of(team) -> Membership:
    return Membership.objects.get(team=team, role=Role.OWNER)


def sub_of(team) -> Subscription:
    return Subscription.objects.select_related("plan", "pending_plan").get(team=team)


def topup(client, team, **data):
    return client.post(reverse("ledger:topup", args=[team.slug]), {"option": "pack", **data})


def pay(client, url: str, card: str = "fake_pm_visa"):
    return client.post(url, {"card": card, "pay": "1"}, follow=True)


def upgrade(client, team, plan: str = "personal", card: str = "fake_pm_visa"):
    """The owner picks a paid plan and pays on the fake checkout page."""
    response = client.post(reverse("accounts:plan_change", args=[team.slug]), {"plan": plan})
    assert response.status_code == 302
    assert CHECKOUT.match(response["Location"]), response["Location"]
    return response["Location"], pay(client, response["Location"], card)


# ---- top-ups -------------------------------------------------------------------------------------


def test_a_top_up_through_the_fake_checkout_is_credited_once_and_saves_the_card(
    fake_payments, owner, key_client
):
    team = owner.team
    client = logged_in(owner.membership)
    billing = client.get(reverse("ledger:billing", args=[team.slug])).content.decode()
    assert "Test mode" in billing
    before = balance(team)
    response = topup(client, team)
    assert response.status_code == 302
    url = response["Location"]
    payment = Payment.objects.get(team=team)
    assert url == reverse("ledger:fake_checkout", args=[f"fake_cs_pay_{payment.pk}"])
    assert (payment.provider, payment.status) == ("fake", PaymentStatus.PENDING)
    page = client.get(url)
    assert page.status_code == 200
    text = page.content.decode()
    assert "Test mode" in text and "$10.00" in text and "Pro add-on pack" in text

    paid = pay(client, url)
    assert paid.redirect_chain[-1][0] == reverse("ledger:billing", args=[team.slug])
    text = paid.content.decode()
    assert "Paid (test mode): 1500.00 credits added." in text
    assert "Test mode" in text  # the billing page it returns to
    (entry,) = LedgerEntry.objects.filter(team=team, kind=EntryKind.TOPUP)
    assert entry.amount_nano == 1500 * NANO
    assert entry.reference == f"payment:{payment.pk}"  # payment_credit's entry
    assert balance(team) == before + 1500 * NANO
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.payment_intent_id == f"fake_pi_{payment.pk}"
    customer = PaymentCustomer.objects.get(team=team)
    assert (customer.provider, customer.customer_id) == ("fake", f"fake_cus_{team.pk}")
    assert (customer.payment_method_id, customer.card_last4) == ("fake_pm_visa", "4242")
    assert OutboxEvent.objects.filter(team=team, type="topup.succeeded").count() == 1
    (listed,) = key_client(team, ["usage:read"]).get("/api/v1/payments").json()["results"]
    assert (listed["id"], listed["provider"], listed["test_mode"]) == (payment.pk, "fake", True)

    # A second submit (back button, double click) credits nothing more and says so.
    again = pay(client, url)
    assert "This checkout is closed." in again.content.decode()
    assert "credits added" not in again.content.decode()
    assert pay(client, url, "fake_pm_declined").status_code == 200
    assert LedgerEntry.objects.filter(team=team, kind=EntryKind.TOPUP).count() == 1
    assert balance(team) == before + 1500 * NANO
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment_credit(payment_id=payment.pk) is False


def test_a_declined_test_card_fails_the_payment_and_credits_nothing(fake_payments, owner):
    team = owner.team
    client = logged_in(owner.membership)
    before = balance(team)
    url = topup(client, team, option="custom", amount="25")["Location"]
    response = pay(client, url, "fake_pm_declined")
    assert "The test card was declined: nothing was charged." in response.content.decode()
    payment = Payment.objects.get(team=team)
    assert (payment.status, payment.failure_code) == (PaymentStatus.FAILED, "card_declined")
    assert not LedgerEntry.objects.filter(team=team, kind=EntryKind.TOPUP).exists()
    assert balance(team) == before
    assert Notification.objects.filter(team=team, kind="payment_failed").count() == 1
    assert not PaymentCustomer.objects.filter(team=team).exclude(payment_method_id="").exists()


def test_cancelling_the_fake_checkout_cancels_the_payment(fake_payments, owner):
    team = owner.team
    client = logged_in(owner.membership)
    url = topup(client, team)["Location"]
    response = client.post(url, {"cancel": "1"}, follow=True)
    assert "Checkout cancelled: nothing was charged." in response.content.decode()
    assert Payment.objects.get(team=team).status == PaymentStatus.CANCELED
    assert pay(client, url).status_code == 200  # closed now
    assert Payment.objects.get(team=team).status == PaymentStatus.CANCELED
    assert not LedgerEntry.objects.filter(team=team, kind=EntryKind.TOPUP).exists()


def test_another_teams_owner_and_plain_members_get_404_on_the_checkout(
    fake_payments, owner, outsider, member
):
    url = topup(logged_in(owner.membership), owner.team)["Location"]
    before = balance(owner.team)
    for persona in (outsider, member):
        client = logged_in(persona.membership)
        assert client.get(url).status_code == 404
        assert client.post(url, {"card": "fake_pm_visa", "pay": "1"}).status_code == 404
        assert client.post(url, {"cancel": "1"}).status_code == 404
    assert Payment.objects.get(team=owner.team).status == PaymentStatus.PENDING
    assert balance(owner.team) == before
    anonymous = logged_in(owner.membership)
    anonymous.logout()
    assert anonymous.get(url).status_code == 302  # to the login page
    for bogus in ("fake_cs_pay_999999", "fake_cs_nope_1", "cs_test_1"):
        response = logged_in(owner.membership).get(reverse("ledger:fake_checkout", args=[bogus]))
        assert response.status_code == 404


def test_the_fake_provider_is_refused_when_it_is_off_and_stripe_is_not_set(settings, owner):
    settings.STRIPE_SECRET_KEY = ""
    settings.FAKE_PAYMENTS_ENABLED = False
    team = owner.team
    client = logged_in(owner.membership)
    billing = client.get(reverse("ledger:billing", args=[team.slug])).content.decode()
    assert "Test mode" not in billing
    response = topup(client, team)
    assert response.status_code == 400
    assert "Payments are not configured on this server" in response.content.decode()
    assert not Payment.objects.exists()
    assert not PaymentCustomer.objects.exists()
    plan = client.post(reverse("accounts:plan_change", args=[team.slug]), {"plan": "personal"})
    assert plan.status_code == 400
    assert "Payments are not configured on this server" in plan.content.decode()
    assert "Test mode" not in plan.content.decode()
    assert sub_of(team).plan.code == "pro"
    fake = reverse("ledger:fake_checkout", args=[f"fake_cs_sub_{team.pk}_personal_abc"])
    assert client.get(fake).status_code == 404
    assert client.post(fake, {"card": "fake_pm_visa", "pay": "1"}).status_code == 404
    assert sub_of(team).plan.code == "pro"


# ---- plans -----------------------------------------------------------------------------------------


def test_a_plan_upgrade_through_the_fake_checkout(fake_payments, team_factory):
    team = team_factory(plan="free")
    client = logged_in(owner_of(team))
    plan_page = client.get(reverse("accounts:plan", args=[team.slug])).content.decode()
    assert "Test mode" in plan_page
    response = client.post(reverse("accounts:plan_change", args=[team.slug]), {"plan": "personal"})
    url = response["Location"]
    assert CHECKOUT.match(url).group(1).startswith(f"fake_cs_sub_{team.pk}_personal_")
    assert sub_of(team).plan.code == "free"  # nothing before the payment
    page = client.get(url).content.decode()
    assert "Test mode" in page and "The Personal plan, monthly" in page and "$9.00" in page

    paid = pay(client, url)
    assert paid.redirect_chain[-1][0] == reverse("accounts:plan", args=[team.slug])
    text = paid.content.decode()
    assert "You are on the Personal plan now (test mode)." in text
    assert "Test mode" in text
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.provider) == ("personal", "fake")
    assert subscription.provider_subscription_id.startswith("fake_sub_fake_cs_sub_")
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL]
    assert entries(team, EntryKind.PLAN_EXPIRY) == [-FREE]
    assert balance(team) == PERSONAL
    invoice = Payment.objects.get(team=team, kind=PaymentKind.SUBSCRIPTION)
    assert (invoice.provider, invoice.amount_cents, invoice.status) == (
        "fake",
        900,
        PaymentStatus.SUCCEEDED,
    )
    # The same checkout submitted again grants nothing more.
    pay(client, url)
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL]
    assert Payment.objects.filter(team=team, kind=PaymentKind.SUBSCRIPTION).count() == 1
    billing = client.get(reverse("ledger:billing", args=[team.slug])).content.decode()
    assert "Test mode" in billing and "test mode</span>" in billing  # the payment's badge


def test_a_declined_card_on_the_plan_checkout_leaves_the_plan(fake_payments, team_factory):
    team = team_factory(plan="free")
    client = logged_in(owner_of(team))
    _, paid = upgrade(client, team, card="fake_pm_declined")
    assert "The test card was declined: the plan did not change." in paid.content.decode()
    assert sub_of(team).plan.code == "free"
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE]


def test_only_owners_of_the_team_reach_a_plan_checkout(fake_payments, team, admin_member, outsider):
    url = reverse("ledger:fake_checkout", args=[f"fake_cs_sub_{team.pk}_personal_abc123"])
    for persona in (admin_member, outsider):
        client = logged_in(persona.membership)
        assert client.get(url).status_code == 404
        assert client.post(url, {"card": "fake_pm_visa", "pay": "1"}).status_code == 404
    assert sub_of(team).plan.code == "pro"


def test_the_renew_job_renews_a_fake_subscription_by_itself_once(fake_payments, team_factory):
    team = team_factory(plan="free")
    upgrade(logged_in(owner_of(team)), team)
    old = end_cycle(team)
    assert cycles_renew_due() == 0  # renewed by its (fake) paid invoice, not by the job's grant
    assert cycles_renew_due() == 0
    subscription = sub_of(team)
    assert subscription.plan.code == "personal"
    assert subscription.current_cycle_start == old.current_cycle_end
    assert subscription.current_cycle_end > timezone.now()
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL, PERSONAL]
    assert entries(team, EntryKind.PLAN_EXPIRY) == [-FREE, -PERSONAL]
    assert balance(team) == PERSONAL
    renewal = Payment.objects.filter(team=team, kind=PaymentKind.SUBSCRIPTION).latest("pk")
    assert (renewal.status, renewal.amount_cents) == (PaymentStatus.SUCCEEDED, 900)
    assert Payment.objects.filter(team=team, kind=PaymentKind.SUBSCRIPTION).count() == 2


def test_a_declined_renewal_is_past_due_then_free_after_grace(
    fake_payments, team_factory, settings
):
    settings.SUBSCRIPTION_GRACE_DAYS = 7
    team = team_factory(plan="free")
    upgrade(logged_in(owner_of(team)), team)
    PaymentCustomer.objects.filter(team=team).update(payment_method_id="fake_pm_declined")
    end_cycle(team)
    assert cycles_renew_due() == 0
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.status) == (
        "personal",
        SubscriptionStatus.PAST_DUE,
    )
    failed_at = subscription.past_due_since
    assert Notification.objects.filter(team=team, kind="subscription_payment_failed").count() == 1
    assert OutboxEvent.objects.filter(team=team, type="subscription.payment_failed").count() == 1
    failed = Payment.objects.filter(team=team, kind=PaymentKind.SUBSCRIPTION).latest("pk")
    assert failed.status == PaymentStatus.FAILED
    page = logged_in(owner_of(team)).get(reverse("accounts:plan", args=[team.slug]))
    assert "The last payment failed" in page.content.decode()
    assert "Test mode" in page.content.decode()

    # Days later (the job's clock), within the grace period: the retry fails again, told once.
    assert cycles_renew_due(now=failed_at + timedelta(days=3)) == 0
    assert cycles_renew_due(now=failed_at + timedelta(days=7) - timedelta(minutes=1)) == 0
    assert Notification.objects.filter(team=team, kind="subscription_payment_failed").count() == 1
    assert Payment.objects.filter(team=team, status=PaymentStatus.FAILED).count() == 1
    assert sub_of(team).plan.code == "personal"
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL]

    assert cycles_renew_due(now=failed_at + timedelta(days=7, minutes=1)) == 1
    subscription = sub_of(team)
    assert (subscription.plan.code, subscription.provider, subscription.status) == (
        "free",
        "",
        SubscriptionStatus.ACTIVE,
    )
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL, FREE]
    assert entries(team, EntryKind.PLAN_EXPIRY) == [-FREE, -PERSONAL]
    assert balance(team) == FREE
    assert Notification.objects.filter(team=team, kind="subscription_downgraded").count() == 1


def test_a_card_fixed_during_the_grace_period_pays_the_next_retry(fake_payments, team_factory):
    team = team_factory(plan="free")
    upgrade(logged_in(owner_of(team)), team)
    PaymentCustomer.objects.filter(team=team).update(payment_method_id="fake_pm_declined")
    old = end_cycle(team)
    cycles_renew_due()
    assert sub_of(team).status == SubscriptionStatus.PAST_DUE
    PaymentCustomer.objects.filter(team=team).update(payment_method_id="fake_pm_visa")
    cycles_renew_due()
    subscription = sub_of(team)
    assert (subscription.status, subscription.past_due_since) == (SubscriptionStatus.ACTIVE, None)
    assert subscription.current_cycle_start == old.current_cycle_end
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL, PERSONAL]
    # the failed invoice is the one that was paid
    (renewal,) = Payment.objects.filter(team=team, kind=PaymentKind.SUBSCRIPTION).exclude(
        invoice_id__startswith="fake_in_fake_cs_"
    )
    assert renewal.status == PaymentStatus.SUCCEEDED


def test_cancelling_a_fake_plan_takes_effect_at_the_cycle_end(fake_payments, team_factory):
    team = team_factory(plan="free")
    client = logged_in(owner_of(team))
    upgrade(client, team)
    client.post(reverse("accounts:plan_change", args=[team.slug]), {"plan": "free"})
    assert sub_of(team).pending_plan.code == "free"
    assert cycles_renew_due() == 0
    end_cycle(team)
    assert cycles_renew_due() == 1
    assert sub_of(team).plan.code == "free"
    assert entries(team, EntryKind.PLAN_GRANT) == [FREE, PERSONAL, FREE]
    assert Payment.objects.filter(team=team, kind=PaymentKind.SUBSCRIPTION).count() == 1


# ---- auto recharge ----------------------------------------------------------------------------------


def usage(event_id: str) -> dict:
    # 1000 x 1.25 + 500 x 10 + 200 x 0.125 per 1M tokens = 0.006275 USD = 1.1295 credits
    return {
        "id": event_id,
        "model": "gpt-5",
        "usage": {"input_tokens": 1000, "output_tokens": 500, "cache_read_tokens": 200},
    }


COST = 1_129_500_000


def test_auto_recharge_with_the_fake_card_credits_one_refill(
    fake_payments, owner, key_client, django_capture_on_commit_callbacks
):
    team = owner.team
    client = logged_in(owner.membership)
    pay(client, topup(client, team)["Location"])  # saves fake_pm_visa
    after_topup = balance(team)
    assert after_topup == PRO + 1500 * NANO
    auto_recharge_configure(
        membership=owner.membership,
        enabled=True,
        threshold_nano=after_topup - 2 * NANO,  # the second request crosses it
        amount=None,  # Pro's pack: 1,000 credits for $20
        monthly_cap=10,
    )
    api = key_client(team)
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/api/v1/usage", usage("u1"), format="json").status_code == 201
    assert not Payment.objects.filter(kind=PaymentKind.AUTO_RECHARGE).exists()  # not crossed
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/api/v1/usage", usage("u2"), format="json").status_code == 201
    (recharge,) = Payment.objects.filter(team=team, kind=PaymentKind.AUTO_RECHARGE)
    assert (recharge.provider, recharge.status) == ("fake", PaymentStatus.SUCCEEDED)
    assert (recharge.amount_cents, recharge.credits_nano) == (2000, 1000 * NANO)
    assert entries(team, EntryKind.AUTO_RECHARGE) == [1000 * NANO]
    assert balance(team) == after_topup - 2 * COST + 1000 * NANO
    # above the threshold again: more usage does not recharge; crediting again does nothing
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/api/v1/usage", usage("u3"), format="json").status_code == 201
    assert payment_credit(payment_id=recharge.pk) is False
    assert Payment.objects.filter(team=team, kind=PaymentKind.AUTO_RECHARGE).count() == 1
    assert entries(team, EntryKind.AUTO_RECHARGE) == [1000 * NANO]
    assert balance(team) == after_topup - 3 * COST + 1000 * NANO


def test_a_team_moved_to_free_is_never_recharged(fake_payments, team_factory):
    team = team_factory(plan="free")
    owner = owner_of(team)
    client = logged_in(owner)
    upgrade(client, team)  # Personal, the fake visa card saved
    auto_recharge_configure(
        membership=owner, enabled=True, threshold_nano=900 * NANO, amount="10", monthly_cap=10
    )
    client.post(reverse("accounts:plan_change", args=[team.slug]), {"plan": "free"})
    end_cycle(team)
    assert cycles_renew_due() == 1
    assert sub_of(team).plan.code == "free"
    assert balance(team) == FREE  # below the threshold, and auto recharge still says on
    assert AutoRecharge.objects.get(team=team).enabled
    assert auto_recharge_sweep()["started"] == 0
    assert recharge_allowance(team_id=team.pk) is None  # the gate counts no refill either
    assert not Payment.objects.filter(team=team, kind=PaymentKind.AUTO_RECHARGE).exists()
