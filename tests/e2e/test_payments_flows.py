"""Money in the browser: an owner upgrades from Free to Personal and tops up through Stripe
Checkout (a Stripe-compatible local server hosts the payment page and posts the signed events to
/webhooks/stripe), switches auto recharge on; finance staff see the revenue and export the
ledger; a plain member is kept out of billing; test mode pays through the fake provider."""

from __future__ import annotations

import csv
import re
from collections.abc import Generator
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from playwright.sync_api import Locator, Page, expect
from pytest_httpserver import HTTPServer

from accounts.models import Subscription
from ledger.models import AutoRecharge, EntryKind, LedgerEntry, Payment, PaymentStatus
from ledger.services.providers import _stripe
from pricing.money import NANO
from tests.payments.stripe_server import FakeStripe

pytestmark = pytest.mark.e2e

PASSWORD = "a long enough passphrase 42"
WEBHOOK_SECRET = "whsec_e2e_secret"


@pytest.fixture
def stripe_checkout(settings, live_server) -> Generator[FakeStripe, None, None]:
    """The app on Stripe, played by a local server whose hosted Checkout page pays and posts
    Stripe's signed events to this live server. Threaded: the app calls the API back (the
    card's details) while the browser's "Pay" request waits for the events to be handled."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    fake = FakeStripe(server)
    fake.webhook_url = live_server.url + reverse("ledger:stripe_webhook")
    fake.webhook_secret = WEBHOOK_SECRET
    settings.STRIPE_SECRET_KEY = "sk_test_gateway"
    settings.STRIPE_API_BASE = fake.base
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    _stripe.cache_clear()
    yield fake
    _stripe.cache_clear()
    server.clear()
    server.stop()


@pytest.fixture
def fake_payments(settings) -> None:
    """Test mode: no Stripe key, the fake provider."""
    settings.STRIPE_SECRET_KEY = ""
    settings.FAKE_PAYMENTS_ENABLED = True


def billing_balance(page: Page) -> Locator:
    """The balance on the Billing page (the first fact)."""
    return page.locator("dl.facts > dd").first.locator("strong")


def credits_of(locator: Locator) -> Decimal:
    return Decimal(locator.inner_text())


def test_an_owner_upgrades_and_tops_up_through_stripe_and_finance_sees_the_revenue(
    page, new_context, team_factory, log_in, stripe_checkout
):
    team = team_factory(plan="free", owner_email="ada@example.com", name="Rocket")
    owner = team.memberships.get()
    log_in(page.context, owner.user)
    nav = page.get_by_role("navigation", name="Main")

    # 1. Free → Personal: the Plan page sends the owner to Stripe Checkout
    page.goto(f"/t/{team.slug}/")
    expect(page.locator("#balance-total")).to_have_text("300.00")
    expect(nav.get_by_role("link", name="Billing", exact=True)).to_be_visible()
    nav.get_by_role("link", name="Plan", exact=True).click()
    page.get_by_label("Personal: 1,000 credits a month").check()
    page.get_by_role("button", name="Change plan").click()
    expect(page).to_have_url(re.compile(rf"^{re.escape(stripe_checkout.base)}/checkout/cs_test_"))
    expect(page.locator("#amount")).to_have_text("$9.00")
    expect(page.get_by_role("main")).to_contain_text("gateway_billing Personal")
    page.get_by_role("button", name="Pay", exact=True).click()
    # Stripe posted its events, then sent the browser back to the success URL
    expect(page).to_have_url(re.compile(rf"/t/{team.slug}/plan/\?subscribed=1$"))
    expect(page.get_by_text("Personal (1000 credits a month)")).to_be_visible()
    expect(page.get_by_role("rowheader", name="Personal (current)")).to_be_visible()
    assert stripe_checkout.deliveries == [
        ("checkout.session.completed", 200),
        ("invoice.paid", 200),
    ]
    nav.get_by_role("link", name="Rocket", exact=True).click()
    expect(page.locator("#balance-total")).to_have_text("1000.00")  # Free's 300 ended

    # 2. A top-up: the 500-credit pack through Checkout
    nav.get_by_role("link", name="Billing", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Billing")
    expect(page.get_by_role("note")).to_have_count(0)  # Stripe: no test-mode banner
    before = credits_of(billing_balance(page))
    page.get_by_label(re.compile(r"Personal add-on pack: \$5\.00 for 500\.0+ credits$")).check()
    page.get_by_role("button", name="Continue to payment").click()
    expect(page.locator("#amount")).to_have_text("$5.00")
    page.get_by_role("button", name="Pay", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/t/{team.slug}/billing/\?paid=1$"))
    expect(billing_balance(page)).to_have_text("1500.00")
    assert credits_of(billing_balance(page)) - before == 500
    assert stripe_checkout.deliveries[2:] == [
        ("checkout.session.completed", 200),
        ("payment_intent.succeeded", 200),
    ]
    topup_row = page.locator("table tbody tr", has_text="Personal add-on pack")
    expect(topup_row.locator("td")).to_have_text(
        [re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d"), re.compile("^Personal add-on pack"), "5.00",
         "500.00", "Paid", ""]
    )  # fmt: skip
    plan_row = page.locator("table tbody tr", has_text="Personal plan")
    expect(plan_row.locator("td").nth(2)).to_have_text("9.00")
    expect(plan_row.locator("td").nth(4)).to_have_text("Paid")
    expect(page.locator("dl.facts")).to_contain_text("Visa ending 4242")
    nav.get_by_role("link", name="Rocket", exact=True).click()
    expect(page.locator("#balance-total")).to_have_text("1500.00")
    expect(page.locator("#balance-split dt:text-is('Add-on') + dd")).to_contain_text("500.00")

    # auto recharge: on through the form, charging the card the top-up saved
    nav.get_by_role("link", name="Billing", exact=True).click()
    recharge_status = page.get_by_role("region", name="Auto recharge").locator("p").first
    expect(recharge_status).to_have_text("Status: off")
    page.get_by_label("Recharge automatically").check()
    expect(page.get_by_label("When the balance falls below (credits)")).to_have_value("100")
    page.get_by_role("button", name="Save auto recharge").click()
    expect(page.get_by_role("status")).to_contain_text("Auto recharge is on.")
    expect(recharge_status).to_have_text(
        "Status: on: below 100.00 credits we charge your saved card $5.00 for 200.00 credits."
    )
    page.reload()
    expect(page.get_by_label("Recharge automatically")).to_be_checked()

    recharge = AutoRecharge.objects.get(team=team)
    assert recharge.enabled and recharge.threshold_nano == 100 * NANO
    payments = Payment.objects.filter(team=team).order_by("pk")
    assert [(p.kind, p.status, p.amount_cents) for p in payments] == [
        ("subscription", PaymentStatus.SUCCEEDED, 900),
        ("topup", PaymentStatus.SUCCEEDED, 500),
    ]  # and no auto recharge: the balance is far above the threshold
    assert Subscription.objects.get(team=team).plan.code == "personal"

    # 3. Finance staff: the revenue of both payments, and the ledger as CSV
    staff = get_user_model().objects.create_user(
        username="fin@example.com", email="fin@example.com", password=PASSWORD, is_staff=True
    )
    staff.user_permissions.add(
        Permission.objects.get(content_type__app_label="ledger", codename="view_ledgerentry")
    )
    finance = new_context().new_page()
    finance.goto("/finance/")
    finance.get_by_label("Email").fill("fin@example.com")
    finance.get_by_label("Password").fill(PASSWORD)
    finance.get_by_role("button", name="Log in").click()
    expect(finance.get_by_role("heading", level=1)).to_have_text("Finance")
    expect(finance.get_by_test_id("total-subscriptions")).to_have_text("9.00")
    expect(finance.get_by_test_id("total-topups")).to_have_text("5.00")
    expect(finance.get_by_test_id("total-auto")).to_have_text("0.00")
    expect(finance.get_by_test_id("total-refunds")).to_have_text("0.00")
    expect(finance.get_by_test_id("total-net")).to_have_text("14.00")
    expect(finance.get_by_test_id("net-revenue")).to_have_text("$14.00 (2 payments)")
    with finance.expect_download() as download:
        finance.get_by_role("link", name="Export the ledger of this period (CSV)").click()
    assert re.fullmatch(r"ledger-\d{8}-\d{8}\.csv", download.value.suggested_filename)
    with open(download.value.path(), newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [(r["team"], r["credits"]) for r in rows if r["kind"] == EntryKind.TOPUP] == [
        (team.slug, "500.000000000")
    ]
    assert [(r["kind"], r["credits"]) for r in rows if r["team"] == team.slug] == [
        (EntryKind.PLAN_GRANT, "300.000000000"),
        (EntryKind.PLAN_EXPIRY, "-300.000000000"),
        (EntryKind.PLAN_GRANT, "1000.000000000"),
        (EntryKind.TOPUP, "500.000000000"),
    ]
    assert rows[-1]["balance_after"] == "1500.000000000"


def test_a_plain_member_cannot_reach_billing(page, team, member, log_in):
    log_in(page.context, member.user)
    page.goto(f"/t/{team.slug}/")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Plan", exact=True)).to_be_visible()
    expect(nav.get_by_role("link", name="Billing", exact=True)).to_have_count(0)
    response = page.goto(f"/t/{team.slug}/billing/")
    assert response.status == 403
    expect(page.get_by_role("main")).to_contain_text("Not allowed")
    expect(page.get_by_role("button", name="Continue to payment")).to_have_count(0)


def test_in_test_mode_the_owner_tops_up_through_the_fake_checkout(
    page, team, owner, log_in, fake_payments
):
    log_in(page.context, owner.user)
    page.goto(f"/t/{team.slug}/billing/")
    expect(page.get_by_role("note")).to_contain_text("Test mode")
    expect(billing_balance(page)).to_have_text("5000.00")
    page.get_by_label(re.compile(r"Pro add-on pack: \$10\.00 for 1500\.0+ credits$")).check()
    page.get_by_role("button", name="Continue to payment").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Checkout test mode")
    expect(page.get_by_role("note")).to_contain_text("Test mode")
    expect(page.get_by_label("Visa 4242: pays")).to_be_checked()
    page.get_by_role("button", name="Pay $10.00").click()
    expect(page).to_have_url(re.compile(rf"/t/{team.slug}/billing/$"))
    expect(page.get_by_role("status")).to_contain_text("Paid (test mode): 1500.00 credits added.")
    expect(billing_balance(page)).to_have_text("6500.00")
    row = page.locator("table tbody tr", has_text="Pro add-on pack")
    expect(row).to_contain_text("test mode")
    expect(row.locator("td").nth(4)).to_have_text("Paid")
    expect(page.locator("dl.facts")).to_contain_text("Visa ending 4242")
    (entry,) = LedgerEntry.objects.filter(team=team, kind=EntryKind.TOPUP)
    assert entry.amount_nano == 1500 * NANO
