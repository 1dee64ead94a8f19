"""What a person does in the browser: sign up, invite a member who accepts in another browser,
create an API key (its secret shown once), post usage through the real API and find it in the
chart and the table, set a budget and see its bar; and what a plain member cannot reach."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from accounts.models import Membership, Role, Team
from ledger.models import Budget
from ledger.services.budgets import budget_create
from pricing.money import NANO, format_credits_short

pytestmark = pytest.mark.e2e

PASSWORD = "a long enough passphrase 42"


def short(credits: str) -> str:
    """An API amount ("1.125000000") as the pages show it ("1.125")."""
    return format_credits_short(int(Decimal(credits) * NANO))


def test_signing_up_gives_a_free_team_with_its_monthly_credits(page, catalog):
    page.goto("/signup/")
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Team name").fill("Rocket")
    page.get_by_role("button", name="Create my account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Rocket")
    expect(page.get_by_role("status")).to_contain_text("is on the Free plan")
    expect(page.locator("#balance-total")).to_have_text("300.00")
    team = Team.objects.get(name="Rocket")
    assert team.subscription.plan.code == "free"
    assert team.memberships.get().role == Role.OWNER


def test_an_invited_member_accepts_in_a_second_browser(
    page, new_context, team, owner, log_in, mailoutbox
):
    log_in(page.context, owner.user)
    page.goto(f"/t/{team.slug}/members/")
    page.get_by_label(re.compile(r"^Email:?$")).fill("grace@example.com")
    page.get_by_label(re.compile(r"^Role:?$")).select_option(Role.MEMBER)
    page.get_by_role("button", name="Send invitation").click()
    expect(page.get_by_role("status")).to_contain_text("Invitation sent to grace@example.com")
    link = re.search(r"/invitations/[^/\s]+/", mailoutbox[-1].body).group(0)

    invitee = new_context().new_page()
    invitee.goto(link)
    expect(invitee.get_by_role("heading", level=1)).to_have_text(f"Join {team.name}")
    invitee.get_by_role("link", name="sign up", exact=True).click()
    invitee.get_by_label("Email").fill("grace@example.com")
    invitee.get_by_label("Password").fill(PASSWORD)
    invitee.get_by_role("button", name="Create my account").click()
    invitee.get_by_role("button", name=f"Accept and join {team.name}").click()
    expect(invitee.get_by_role("status")).to_contain_text(f"You joined {team.name} as Member")
    expect(invitee.get_by_role("heading", level=1)).to_have_text(team.name)
    assert Membership.objects.get(team=team, user__email="grace@example.com").role == Role.MEMBER

    page.reload()
    expect(page.get_by_role("main")).to_contain_text("grace@example.com")


def test_a_key_s_usage_shows_in_the_chart_the_table_and_a_budget_bar(
    page, team, owner, log_in, api_post
):
    log_in(page.context, owner.user)
    # an API key: the secret is shown once
    page.goto(f"/t/{team.slug}/keys/")
    page.get_by_role("link", name="Create an API key").click()
    page.get_by_label("Name").fill("e2e gateway")
    page.get_by_label("usage:read").check()
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#secret").input_value()
    assert len(secret) > 20
    page.get_by_role("link", name="back to the keys").click()
    page.reload()
    expect(page.get_by_role("main")).to_contain_text("e2e gateway")
    assert secret not in page.content()

    # usage through the real API, as a gateway posts it
    status, gpt = api_post("/api/v1/usage", secret, {"id": "e2e-1", "model": "gpt-5",
                           "usage": {"input_tokens": 12000, "output_tokens": 3000}})  # fmt: skip
    assert status == 201 and gpt["state"] == "billed"
    status, claude = api_post("/api/v1/usage", secret, {
        "id": "e2e-2", "model": "claude-sonnet-4-5-20250929", "usage_format": "anthropic",
        "usage": {"input_tokens": 500, "output_tokens": 800}})  # fmt: skip
    assert status == 201

    # the chart: drawn by Chart.js from the vendored file, stacked by model
    page.goto(f"/t/{team.slug}/usage/")
    canvas = page.locator("#usage-chart")
    expect(canvas).to_have_attribute("data-ready", "true")
    box = canvas.bounding_box()
    assert box["width"] > 300 and box["height"] > 100
    chart = "Chart.getChart(document.getElementById('usage-chart'))"
    datasets = page.evaluate(f"{chart}.data.datasets.map(d => [d.label, d.exact.at(-1)])")
    assert dict(datasets) == {
        "gpt-5": gpt["credits"],
        "claude-sonnet-4-5-20250929": claude["credits"],
    }
    # stack by project with the keyboard: the radio group is reachable and switches the chart
    page.get_by_label("Model", exact=True).focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_label("Project", exact=True)).to_be_checked()
    expect(canvas).to_have_attribute("data-stack", "project")
    assert page.evaluate(f"{chart}.data.datasets.map(d => d.label)") == ["(no project)"]

    # the table, and the same table by key (swapped in by htmx, URL kept shareable)
    gpt_row = page.locator("#usage-table tbody tr", has_text="gpt-5")
    expect(gpt_row).to_contain_text(short(gpt["credits"]))
    total = short(str(Decimal(gpt["credits"]) + Decimal(claude["credits"])))
    expect(page.locator("#usage-table tfoot")).to_contain_text(total)
    page.get_by_label("Group by").select_option("key")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#usage-table tbody")).to_contain_text("e2e gateway")
    expect(page).to_have_url(re.compile(r"group_by=key"))
    expect(page.locator("#usage-table tfoot")).to_contain_text(total)
    page.get_by_label(re.compile(r"^From:?$")).fill("2026-11-20")
    page.get_by_label(re.compile(r"^To:?$")).fill("2026-11-01")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_text("“To” must be on or after “From”.")).to_be_visible()
    expect(page.locator("#usage-table")).to_have_count(0)

    # a budget and its bar
    page.goto(f"/t/{team.slug}/budgets/")
    page.get_by_role("link", name="New budget").click()
    page.get_by_label("Name").fill("Monthly e2e")
    page.get_by_label("Applies to").select_option("team")
    page.get_by_label("Period").select_option("month")
    page.get_by_label("Limit (credits)").fill("0")
    page.get_by_role("button", name="Create budget").click()
    expect(page.get_by_text("The limit must be more than 0 credits.")).to_be_visible()
    page.get_by_label("Limit (credits)").fill("2")
    page.get_by_label("Alert at (%)").fill("50, 90")
    page.get_by_role("button", name="Create budget").click()
    expect(page.get_by_role("status")).to_contain_text("Budget Monthly e2e created.")
    bar = page.get_by_role("progressbar", name="Monthly e2e: spent of the limit")
    expect(bar).to_be_visible()
    budget = Budget.objects.get(team=team)
    assert budget.limit_nano == 2 * NANO and budget.thresholds == [50, 90]
    # usage recorded after the budget exists counts against it
    status, more = api_post("/api/v1/usage", secret, {"id": "e2e-3", "model": "gpt-5",
                            "usage": {"input_tokens": 1000, "output_tokens": 500}})  # fmt: skip
    assert status == 201
    page.reload()
    expect(bar).to_have_attribute(
        "aria-valuetext", re.compile(rf"^{re.escape(short(more['credits']))} of 2.00 credits")
    )
    fill = bar.locator(".fill").bounding_box()
    assert 0 < fill["width"] < bar.bounding_box()["width"]

    # and the dashboard's balance went down by what was billed
    page.goto(f"/t/{team.slug}/")
    spent = sum(Decimal(r["credits"]) for r in (gpt, claude, more))
    expect(page.locator("#balance-total")).to_have_text(short(str(Decimal(5000) - spent)))


def test_a_plain_member_gets_no_manager_buttons_and_no_manager_pages(
    page, team, owner, member, log_in
):
    budget = budget_create(team=team, actor=owner.user, name="Shared cap", scope="team",
                           period="month", limit_nano=100 * NANO)  # fmt: skip
    log_in(page.context, member.user)
    page.goto(f"/t/{team.slug}/budgets/")
    expect(page.get_by_role("heading", name="Shared cap")).to_be_visible()
    expect(page.get_by_role("link", name="New budget")).to_have_count(0)
    expect(page.get_by_role("link", name=re.compile("^Edit"))).to_have_count(0)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Ledger")).to_have_count(0)
    page.goto(f"/t/{team.slug}/keys/")
    expect(page.get_by_role("link", name="Create an API key")).to_have_count(0)
    for path in (f"/t/{team.slug}/budgets/new/", f"/t/{team.slug}/budgets/{budget.pk}/edit/",
                 f"/t/{team.slug}/keys/new/", f"/t/{team.slug}/ledger/"):  # fmt: skip
        response = page.goto(path)
        assert response.status == 403, path
        expect(page.get_by_role("main")).to_contain_text("Not allowed")
    assert Budget.objects.get(pk=budget.pk).limit_nano == 100 * NANO


def test_the_money_pages_fit_a_phone(new_context, team, owner, log_in):
    phone = new_context(viewport={"width": 375, "height": 740})
    log_in(phone, owner.user)
    page = phone.new_page()
    budget_create(team=team, actor=owner.user, name="A rather long budget name for a phone",
                  scope="team", period="day", limit_nano=NANO, thresholds=[50, 80])  # fmt: skip
    for path in ("", "usage/", "ledger/", "budgets/", "budgets/new/"):
        page.goto(f"/t/{team.slug}/{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, (path, width)
    page.goto(f"/t/{team.slug}/usage/")
    expect(page.locator("#usage-chart")).to_have_attribute("data-ready", "true")
    assert page.locator("#usage-chart").bounding_box()["width"] <= 375
