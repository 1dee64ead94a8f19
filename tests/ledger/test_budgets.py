"""Budgets: the API, live spend per period (in the team's time zone), soft thresholds once per
period, and the hard cap enforced by the authorize endpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from accounts.models import AuditEntry, Notification, OutboxEvent
from accounts.services import project_create
from ledger.models import BudgetSpend
from ledger.services.budgets import budget_create, period_start
from pricing.money import NANO

from .conftest import grant

pytestmark = pytest.mark.django_db

EVENT = {"model": "gpt-5", "usage": {"input_tokens": 1000, "output_tokens": 500}}  # 1.125 credits
ASK = {"model": "gpt-5", "estimated_input_tokens": 1000, "max_output_tokens": 500}


@pytest.fixture
def session(team, admin_member):
    client = APIClient()
    client.force_login(admin_member.user)
    return client


def test_owners_and_admins_manage_budgets_members_and_keys_only_read(
    team, session, member, key_client, outsider
):
    body = {"name": "Team monthly", "scope": "team", "period": "month", "limit": "250",
            "thresholds": [50, 80], "hard_cap": True}  # fmt: skip
    created = session.post(f"/api/v1/budgets?team={team.slug}", body, format="json")
    assert created.status_code == 201, created.content
    budget = created.json()
    assert (budget["limit"], budget["spent"], budget["thresholds"]) == (
        "250.000000000",
        "0.000000000",
        [50, 80],
    )
    assert AuditEntry.objects.filter(action="budget.create", team=team).count() == 1

    reader = key_client(team, scopes=["usage:read"])
    assert reader.get("/api/v1/budgets").json()["budgets"][0]["id"] == budget["id"]
    assert reader.post("/api/v1/budgets", body, format="json").status_code == 403  # keys only read
    plain = APIClient()
    plain.force_login(member.user)
    assert plain.post(f"/api/v1/budgets?team={team.slug}", body, format="json").status_code == 403

    patched = session.patch(
        f"/api/v1/budgets/{budget['id']}?team={team.slug}", {"limit": "300"}, format="json"
    )
    assert patched.status_code == 200 and patched.json()["limit"] == "300.000000000"

    stranger = APIClient()
    stranger.force_login(outsider.user)
    assert (
        stranger.get(f"/api/v1/budgets/{budget['id']}?team={outsider.team.slug}").status_code == 404
    )
    assert (
        stranger.delete(f"/api/v1/budgets/{budget['id']}?team={outsider.team.slug}").status_code
        == 404
    )
    assert key_client(outsider.team).get(f"/api/v1/budgets/{budget['id']}").status_code == 404
    assert session.delete(f"/api/v1/budgets/{budget['id']}?team={team.slug}").status_code == 204
    assert reader.get("/api/v1/budgets").json()["budgets"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scope": "team", "period": "month", "limit": "10"}, "name"),
        ({"name": "x", "scope": "galaxy", "period": "month", "limit": "10"}, "scope"),
        ({"name": "x", "scope": "team", "period": "year", "limit": "10"}, "period"),
        ({"name": "x", "scope": "team", "period": "day", "limit": "-1"}, "limit"),
        ({"name": "x", "scope": "team", "period": "day", "limit": 1.5}, "limit"),
        ({"name": "x", "scope": "team", "period": "day", "limit": "5", "thresholds": [0]}, "thresholds"),
        ({"name": "x", "scope": "project", "period": "day", "limit": "5"}, "project"),
        ({"name": "x", "scope": "project", "period": "day", "limit": "5", "project": "nope"}, "project"),
    ],
)  # fmt: skip
def test_bad_budgets_are_refused_with_the_field(team, session, body, field):
    response = session.post(f"/api/v1/budgets?team={team.slug}", body, format="json")
    assert 400 <= response.status_code < 500
    assert field in response.json()["error"]["fields"]


def test_spend_is_live_per_scope_and_fires_thresholds_once(
    team, owner, key_client, django_capture_on_commit_callbacks
):
    grant(team, 100)
    web = project_create(team=team, slug="web")
    budget_create(team=team, actor=owner.user, name="Web daily", scope="project", project=web,
                  period="day", limit_nano=3 * NANO, thresholds=[50, 75], hard_cap=False)  # fmt: skip
    web_key, other_key = key_client(team, project=web), key_client(team)
    with django_capture_on_commit_callbacks(execute=True):
        for i in range(4):  # 4 x 1.125 = 4.5 credits against 3: 50 %, 75 %, exceeded
            assert (
                web_key.post("/api/v1/usage", {"id": f"w{i}", **EVENT}, format="json").status_code
                == 201
            )
        other_key.post("/api/v1/usage", {"id": "elsewhere", **EVENT}, format="json")  # not web
    spend = BudgetSpend.objects.get()
    assert spend.spent_nano == 4_500_000_000
    kinds = sorted(Notification.objects.filter(team=team).values_list("kind", flat=True))
    assert kinds == sorted(
        [
            f"budget_{spend.budget_id}_50",
            f"budget_{spend.budget_id}_75",
            f"budget_{spend.budget_id}_exceeded",
        ]
    )
    types = sorted(OutboxEvent.objects.filter(team=team).values_list("type", flat=True))
    assert types == ["budget.exceeded", "budget.threshold_reached", "budget.threshold_reached"]
    listed = key_client(team, scopes=["usage:read"]).get("/api/v1/budgets").json()["budgets"][0]
    assert (listed["spent"], listed["remaining"]) == ("4.500000000", "-1.500000000")


def test_a_hard_cap_refuses_authorize_naming_the_budget(
    team, owner, key_client, django_capture_on_commit_callbacks
):
    grant(team, 100)
    budget_create(team=team, actor=owner.user, name="Team cap", scope="team", period="month",
                  limit_nano=2 * NANO, hard_cap=True)  # fmt: skip
    client = key_client(team)
    first = client.post("/api/v1/authorize", ASK, format="json")
    assert first.status_code == 200
    assert first.json()["budgets"][0]["name"] == "Team cap"
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/api/v1/usage", {"id": "u1", **EVENT}, format="json")  # 1.125 spent
    refused = client.post("/api/v1/authorize", ASK, format="json")  # 1.125 + 1.125 > 2
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "Team cap" in error["message"] and error["budget"]["scope"] == "team"


def test_budget_periods_roll_over_in_the_teams_time_zone(team):
    team.time_zone = "America/New_York"
    late = datetime(2026, 3, 10, 3, 30, tzinfo=UTC)  # 23:30 on the 9th in New York (EDT)
    early = datetime(2026, 3, 10, 4, 30, tzinfo=UTC)  # 00:30 on the 10th in New York
    day = lambda at: period_start(period="day", at=at, time_zone=team.time_zone, cycle_start=None)  # noqa: E731
    assert day(late) != day(early)
    assert day(early).isoformat() == "2026-03-10T00:00:00-04:00"
    month = period_start(period="month", at=datetime(2026, 4, 1, 3, tzinfo=UTC),
                         time_zone="America/New_York", cycle_start=None)  # fmt: skip
    assert month.isoformat() == "2026-03-01T00:00:00-05:00"  # still March in New York
    start = datetime(2026, 1, 31, 12, tzinfo=UTC)
    cycle = period_start(
        period="cycle", at=start - timedelta(days=1), time_zone="UTC", cycle_start=start
    )
    assert cycle == datetime(2025, 12, 31, 12, tzinfo=UTC)  # a late event of the previous cycle


def test_listing_budgets_takes_a_bounded_number_of_queries(
    team, owner, key_client, django_assert_max_num_queries
):
    reader = key_client(team, scopes=["usage:read"])
    reader.get("/api/v1/budgets")  # warm the key lookup
    for i in range(5):
        project = project_create(team=team, slug=f"p{i}")
        budget_create(team=team, actor=owner.user, name=f"B{i}", scope="project",
                      project=project, period="month", limit_nano=NANO)  # fmt: skip
    with django_assert_max_num_queries(4):
        assert len(reader.get("/api/v1/budgets").json()["budgets"]) == 5
