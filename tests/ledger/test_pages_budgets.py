"""The budgets page: every member sees each budget's spend as a bar; owners and admins create,
change and delete budgets through the budget services, with clear form errors; nobody else can
change anything, whatever they post.

| page / action                   | owner | admin | finance | member | outsider |
|---------------------------------|-------|-------|---------|--------|----------|
| budgets list (GET)              |  yes  |  yes  |   yes   |  yes   |   404    |
| new / edit form (GET)           |  yes  |  yes  |   403   |  403   |   404    |
| create, edit, delete (POST)     |  yes  |  yes  |   403   |  403   |   404    |
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import AuditEntry
from accounts.services import api_key_revoke, project_create
from ledger.models import Budget
from ledger.services.budgets import budget_create
from pricing.money import NANO

from .pages import PERSONA_FIXTURE, ROLES, credits_of, event, login, post_usage

pytestmark = pytest.mark.django_db
MANAGERS = {"owner", "admin"}

FORM = {"name": "Team daily", "scope": "team", "period": "day", "limit": "10",
        "thresholds": "50, 80", "hard_cap": "on"}  # fmt: skip


@pytest.fixture
def budget(team, owner):
    return budget_create(team=team, actor=owner.user, name="Monthly cap", scope="team",
                         period="month", limit_nano=4 * NANO, thresholds=[50])  # fmt: skip


def test_the_list_shows_spend_against_the_limit_as_a_bar(team, budget, member, key_client):
    results = post_usage(key_client(team), [event("b1"), event("b2")])  # 2 x 1.125 credits
    assert credits_of(results) == Decimal("2.25")
    html = login(member.user).get(reverse("ledger:budgets", args=[team.slug])).content.decode()
    assert "Monthly cap" in html
    assert 'role="progressbar"' in html and 'aria-valuenow="56.2"' in html  # 2.25 / 4, rounded down
    assert 'style="width: 56.2%"' in html and 'style="left: 50%"' in html  # the 50 % threshold mark
    assert "<strong>2.25</strong> of 4.00 credits (56.2 %)" in html
    assert "1.75 left" in html and "passed 50 %" in html and "budget-warn" in html


def test_a_spent_budget_shows_as_over_with_a_full_bar(team, owner, key_client):
    budget_create(team=team, actor=owner.user, name="Tiny", scope="team", period="day",
                  limit_nano=NANO)  # fmt: skip
    post_usage(key_client(team), [event("t1")])  # 1.125 credits
    html = login(owner.user).get(reverse("ledger:budgets", args=[team.slug])).content.decode()
    assert "budget-over" in html and 'style="width: 100.0%"' in html
    assert "0.125 over" in html and "limit reached" in html


def test_a_manager_creates_a_budget_through_the_form(team, admin_member):
    client = login(admin_member.user)
    response = client.post(reverse("ledger:budget_create", args=[team.slug]), FORM)
    assert response.status_code == 302
    assert response["Location"] == reverse("ledger:budgets", args=[team.slug])
    budget = Budget.objects.get(team=team)
    assert (budget.name, budget.scope, budget.period, budget.limit_nano, budget.thresholds,
            budget.hard_cap) == ("Team daily", "team", "day", 10 * NANO, [50, 80], True)  # fmt: skip
    assert AuditEntry.objects.filter(team=team, action="budget.create").count() == 1
    assert "Budget Team daily created." in client.get(response["Location"]).content.decode()


def test_a_project_budget_names_its_project(team, owner):
    web = project_create(team=team, slug="web", name="Web")
    client = login(owner.user)
    url = reverse("ledger:budget_create", args=[team.slug])
    missing = client.post(url, {**FORM, "scope": "project"})
    assert missing.status_code == 400
    assert "Choose the project this budget applies to." in missing.content.decode()
    assert client.post(url, {**FORM, "scope": "project", "project": web.pk}).status_code == 302
    assert Budget.objects.get(team=team).project == web


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"limit": "abc"}, "limit", "Enter the limit in credits, e.g. 250 or 12.5"),
        ({"limit": "0"}, "limit", "The limit must be more than 0 credits."),
        ({"limit": "-5"}, "limit", "The limit must be more than 0 credits."),
        ({"limit": "1.0000000001"}, "limit", "at most 9 decimal places"),
        ({"thresholds": "50, 120"}, "thresholds", "whole percentages from 1 to 100"),
        ({"thresholds": "fifty"}, "thresholds", "whole percentages from 1 to 100"),
        ({"name": ""}, "name", "This field is required."),
        ({"scope": "galaxy"}, "scope", "Select a valid choice."),
        ({"period": "year"}, "period", "Select a valid choice."),
        ({"scope": "member"}, "member", "Choose the member this budget applies to."),
        ({"scope": "key", "api_key": "999999"}, "api_key", "Select a valid choice."),
    ],
)
def test_bad_input_is_refused_with_a_message_next_to_its_field(team, owner, change, field, message):
    response = login(owner.user).post(
        reverse("ledger:budget_create", args=[team.slug]), {**FORM, **change}
    )
    assert response.status_code == 400
    assert message in " ".join(response.context["form"].errors[field])
    assert message.replace("'", "&#x27;") in response.content.decode()
    assert 'aria-invalid="true"' in response.content.decode()
    assert not Budget.objects.filter(team=team).exists()


def test_another_team_s_project_or_key_cannot_be_named(team, owner, outsider, key_factory):
    their_project = project_create(team=outsider.team, slug="theirs")
    their_key, _ = key_factory(outsider.team)
    client = login(owner.user)
    url = reverse("ledger:budget_create", args=[team.slug])
    for change in ({"scope": "project", "project": their_project.pk},
                   {"scope": "key", "api_key": their_key.pk}):  # fmt: skip
        assert client.post(url, {**FORM, **change}).status_code == 400
    assert not Budget.objects.exists()


def test_a_manager_edits_and_deletes_a_budget(team, owner, budget):
    client = login(owner.user)
    edit = reverse("ledger:budget_edit", args=[team.slug, budget.pk])
    form = client.get(edit).content.decode()
    assert 'value="Monthly cap"' in form and 'value="4.00"' in form and 'value="50"' in form
    response = client.post(edit, {**FORM, "name": "Bigger", "limit": "12.5", "period": "month"})
    assert response.status_code == 302
    budget.refresh_from_db()
    assert (budget.name, budget.limit_nano, budget.thresholds) == (
        "Bigger",
        12_500_000_000,
        [50, 80],
    )
    bad = client.post(edit, {**FORM, "limit": "lots"})
    assert bad.status_code == 400
    budget.refresh_from_db()
    assert budget.limit_nano == 12_500_000_000
    deleted = client.post(reverse("ledger:budget_delete", args=[team.slug, budget.pk]))
    assert deleted.status_code == 302
    assert not Budget.objects.filter(pk=budget.pk).exists()
    assert AuditEntry.objects.filter(team=team, action="budget.delete").count() == 1


# ---- roles and tenancy -----------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_every_member_sees_the_budgets_but_only_managers_get_the_buttons(
    request, team, budget, role
):
    persona = request.getfixturevalue(PERSONA_FIXTURE[role])
    client = login(persona.user)
    html = client.get(reverse("ledger:budgets", args=[team.slug])).content.decode()
    assert "Monthly cap" in html
    new_url = reverse("ledger:budget_create", args=[team.slug])
    edit_url = reverse("ledger:budget_edit", args=[team.slug, budget.pk])
    assert (new_url in html, edit_url in html) == (role in MANAGERS, role in MANAGERS)
    for url in (new_url, edit_url):
        assert client.get(url).status_code == (200 if role in MANAGERS else 403)


@pytest.mark.parametrize("role", sorted(set(ROLES) - MANAGERS))
def test_finance_and_members_change_nothing_whatever_they_post(request, team, budget, role):
    client = login(request.getfixturevalue(PERSONA_FIXTURE[role]).user)
    before = list(Budget.objects.values())
    posts = [
        (reverse("ledger:budget_create", args=[team.slug]), FORM),
        (reverse("ledger:budget_edit", args=[team.slug, budget.pk]), {**FORM, "limit": "999"}),
        (reverse("ledger:budget_delete", args=[team.slug, budget.pk]), {}),
    ]
    for url, data in posts:
        response = client.post(url, data)
        assert response.status_code == 403 and b"Not allowed" in response.content
    assert list(Budget.objects.values()) == before


def test_outsiders_get_404_for_every_budget_page_and_change_nothing(team, budget, outsider):
    client = login(outsider.user)
    before = list(Budget.objects.values())
    gets = ["ledger:budgets", "ledger:budget_create"]
    for name in gets:
        assert client.get(reverse(name, args=[team.slug])).status_code == 404
    edit = reverse("ledger:budget_edit", args=[team.slug, budget.pk])
    delete = reverse("ledger:budget_delete", args=[team.slug, budget.pk])
    assert client.get(edit).status_code == 404
    assert client.post(edit, {**FORM, "limit": "999"}).status_code == 404
    assert client.post(delete).status_code == 404
    # through their own team's pages: another team's budget id is not found either
    own_edit = reverse("ledger:budget_edit", args=[outsider.team.slug, budget.pk])
    own_delete = reverse("ledger:budget_delete", args=[outsider.team.slug, budget.pk])
    assert client.get(own_edit).status_code == 404
    assert client.post(own_edit, {**FORM, "limit": "999"}).status_code == 404
    assert client.post(own_delete).status_code == 404
    assert list(Budget.objects.values()) == before


def test_posts_without_a_csrf_token_are_refused(team, owner, budget):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner.user)
    before = list(Budget.objects.values())
    for url, data in [
        (reverse("ledger:budget_create", args=[team.slug]), FORM),
        (reverse("ledger:budget_edit", args=[team.slug, budget.pk]), {**FORM, "limit": "999"}),
        (reverse("ledger:budget_delete", args=[team.slug, budget.pk]), {}),
    ]:
        assert client.post(url, data).status_code == 403
    assert list(Budget.objects.values()) == before
    form = client.get(reverse("ledger:budget_create", args=[team.slug])).content.decode()
    assert 'name="csrfmiddlewaretoken"' in form


# ---- queries ---------------------------------------------------------------------------------


def test_the_list_and_the_form_take_the_same_few_queries_for_1_or_12_budgets(
    team, owner, admin_member, key_factory, django_assert_max_num_queries
):
    client = login(owner.user)
    list_url = reverse("ledger:budgets", args=[team.slug])
    new_url = reverse("ledger:budget_create", args=[team.slug])
    counts = []
    for n in (1, 12):
        for i in range(n):
            project = project_create(team=team, slug=f"n{n}-p{i}")
            key, _ = key_factory(team, name=f"n{n}-k{i}", project=project)
            scope = ["team", "project", "member", "key"][i % 4]
            budget_create(team=team, actor=owner.user, name=f"n{n}-b{i}", scope=scope,
                          project=project, member=admin_member.membership, api_key=key,
                          period=["day", "month", "cycle"][i % 3], limit_nano=NANO)  # fmt: skip
        with django_assert_max_num_queries(6) as listed:
            assert client.get(list_url).status_code == 200
        with django_assert_max_num_queries(6) as form:
            assert client.get(new_url).status_code == 200
        counts.append((len(listed), len(form)))
    assert counts[0] == counts[1], counts


def test_a_budget_on_a_key_revoked_since_can_still_be_edited(team, owner, key_factory):
    key, _ = key_factory(team, name="old")
    budget = budget_create(team=team, actor=owner.user, name="Key cap", scope="key",
                           api_key=key, period="day", limit_nano=NANO)  # fmt: skip
    api_key_revoke(key=key, actor=owner.user)
    client = login(owner.user)
    edit = reverse("ledger:budget_edit", args=[team.slug, budget.pk])
    data = {**FORM, "name": "Key cap", "scope": "key", "api_key": key.pk, "limit": "3"}
    assert client.post(edit, data).status_code == 302
    budget.refresh_from_db()
    assert budget.limit_nano == 3 * NANO and budget.api_key == key
    new = client.get(reverse("ledger:budget_create", args=[team.slug])).content.decode()
    assert f'<option value="{key.pk}"' not in new  # a new budget cannot pick a revoked key
