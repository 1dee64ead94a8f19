"""POST /api/v1/authorize and release through the real API, with holds settled by usage."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Plan
from gateway_billing.permissions import TeamContext
from ledger.models import TeamBalance
from ratelimits import selectors, services
from ratelimits.models import TeamTpmOverride
from tests.ledger.conftest import grant

pytestmark = pytest.mark.django_db

# gpt-5: 1.25 input / 10.00 output per 1M; 1,000 in + 500 out = 0.00625 USD = 1.125 credits
ASK = {"model": "gpt-5", "estimated_input_tokens": 1000, "max_output_tokens": 500}


@pytest.fixture
def zero_plan(catalog):
    return Plan.objects.get_or_create(
        code="test-zero", defaults={"name": "Zero", "monthly_credits": 0}
    )[0]


@pytest.fixture
def funded(team_factory, zero_plan):
    """A team with exactly 10 worst-case gpt-5 requests of credits (11.25)."""
    team = team_factory(plan="test-zero")
    grant(team, "11.25")
    return team


def authorize(client, **extra):
    return client.post("/api/v1/authorize", {**ASK, **extra}, format="json")


def test_authorize_places_a_hold_that_usage_settles(
    funded, key_client, django_capture_on_commit_callbacks
):
    client = key_client(funded)
    response = authorize(client, request_id="r-1")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["allowed"] is True and body["request_id"] == "r-1"
    assert body["hold"]["credits"] == "1.125000000"
    assert body["balance"] == {
        "total": "11.250000000",
        "held": "1.125000000",
        "spendable": "10.125000000",
    }
    assert body["tpm"] == {"limit": None, "used": 1500, "remaining": None}  # test plan: no limit

    usage = {
        "id": "e-1",
        "model": "gpt-5",
        "request_id": "r-1",
        "usage": {"input_tokens": 800, "output_tokens": 100},
    }
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/api/v1/usage", usage, format="json").status_code == 201
    after = authorize(client, request_id="r-2").json()
    # 800 x 1.25 + 100 x 10 per 1M = 0.002 USD = 0.36 credits billed; the r-1 hold is gone
    assert after["balance"] == {
        "total": "10.890000000",
        "held": "1.125000000",
        "spendable": "9.765000000",
    }
    assert after["tpm"]["used"] == 900 + 1500  # the actual tokens replaced r-1's estimate


def test_a_retried_usage_event_settles_the_hold_its_first_attempt_left(
    funded, key_client, django_capture_on_commit_callbacks
):
    """The first attempt commits, then its process dies before the after-commit settle (here:
    the test transaction never commits, so the hooks never run); the client never got the
    answer and retries: the replay settles the hold, once."""
    client = key_client(funded)
    assert authorize(client, request_id="r-1").status_code == 200
    usage = {
        "id": "e-1",
        "model": "gpt-5",
        "request_id": "r-1",
        "usage": {"input_tokens": 800, "output_tokens": 100},
    }
    assert client.post("/api/v1/usage", usage, format="json").status_code == 201
    assert authorize(client, request_id="r-2").json()["balance"]["held"] == "2.250000000"

    for _ in range(2):  # the retry settles r-1; a second replay changes nothing
        replay = client.post("/api/v1/usage", usage, format="json")
        assert replay.status_code == 200 and replay.json()["replayed"] is True
    after = authorize(client, request_id="r-3").json()
    assert after["balance"]["held"] == "2.250000000"  # r-2 and r-3 only
    assert after["tpm"]["used"] == 900 + 1500 + 1500  # r-1 at its actual tokens, once


def test_plan_limits_come_from_the_seed_table(team_factory, key_client):
    for plan, limit in [("free", 18_000), ("personal", 90_000), ("pro", 180_000)]:
        client = key_client(team_factory(plan=plan))
        assert authorize(client).json()["tpm"]["limit"] == limit
    free = key_client(team_factory(plan="free"))
    haiku = {
        "model": "claude-3-5-haiku-20241022",
        "estimated_input_tokens": 100,
        "max_output_tokens": 100,
    }
    assert authorize(free, **haiku).json()["tpm"]["limit"] == 1_200


def test_team_override_wins_over_the_plan(team_factory, key_client):
    team = team_factory(plan="free")
    from pricing.models import Model

    TeamTpmOverride.objects.create(
        team=team, model=Model.objects.get(name="gpt-5"), tokens_per_minute=5
    )
    selectors.limits_forget()
    response = authorize(key_client(team))
    assert response.status_code == 429
    assert "larger than the team's limit of 5" in response.json()["error"]["message"]


def test_rate_limited_is_429_with_retry_after(team_factory, key_client):
    client = key_client(team_factory(plan="free"))  # gpt-5: 18,000 TPM on Free
    big = {"estimated_input_tokens": 8000, "max_output_tokens": 1000}
    assert authorize(client, **big).status_code == 200
    assert authorize(client, **big).status_code == 200
    refused = authorize(client, **big)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused.json()["error"]["tpm"] == {"limit": 18000, "used": 18000}


def test_anthropic_cache_reads_do_not_count_but_openai_ones_do(
    team_factory, key_client, django_capture_on_commit_callbacks
):
    team = team_factory(plan="pro")
    client = key_client(team)
    claude = {"id": "c1", "model": "claude-sonnet-4-5-20250929", "usage_format": "anthropic",
              "usage": {"input_tokens": 100, "output_tokens": 50, "cache_read_input_tokens": 5000,
                        "cache_creation_input_tokens": 20}}  # fmt: skip
    openai = {"id": "o1", "model": "gpt-5", "usage": {"input_tokens": 100, "output_tokens": 50,
              "cache_read_tokens": 5000}}  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/api/v1/usage", claude, format="json").status_code == 201
        assert client.post("/api/v1/usage", openai, format="json").status_code == 201
    ask_claude = authorize(
        client, model="claude-sonnet-4-5-20250929", estimated_input_tokens=0, max_output_tokens=0
    )
    assert ask_claude.json()["tpm"]["used"] == 170  # 100 + 50 + 20 written; 5,000 read excluded
    assert (
        authorize(client, estimated_input_tokens=0, max_output_tokens=0).json()["tpm"]["used"]
        == 5150
    )


def test_insufficient_credits_and_a_free_team_stops_at_zero(team_factory, key_client, zero_plan):
    broke = team_factory(plan="test-zero")
    response = authorize(key_client(broke))
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "insufficient_credits"
    assert "1.125000000" in error["message"]

    free = team_factory(plan="free")  # 300 credits: 266 worst-case requests at most
    client = key_client(free)
    too_much = authorize(
        client, estimated_input_tokens=0, max_output_tokens=3_000_000
    )  # 5,400 credits
    assert too_much.status_code in (402, 429)


def test_release_frees_the_hold_and_other_teams_cannot(funded, team_factory, key_client):
    client = key_client(funded)
    authorize(client, request_id="keep")
    other = key_client(team_factory(plan="pro"))
    assert other.post("/api/v1/authorize/keep/release").status_code == 404  # not theirs
    assert client.post("/api/v1/authorize/keep/release").status_code == 204
    assert client.post("/api/v1/authorize/keep/release").status_code == 404  # already gone
    assert authorize(client).json()["balance"]["held"] == "1.125000000"  # only the new hold


def test_an_unsettled_hold_expires_after_ten_minutes(funded):
    ctx = TeamContext(team_id=funded.id)
    plan_id = funded.subscription.plan_id
    now = timezone.now()
    ask = services.AuthorizeRequest(model="gpt-5", estimated_input_tokens=0, max_output_tokens=5000)
    services.authorize(ctx=ctx, plan_id=plan_id, request=ask, now=now)  # holds 9 of 11.25
    with pytest.raises(Exception, match=r"can spend 2\.250000000"):
        services.authorize(ctx=ctx, plan_id=plan_id, request=ask, now=now + timedelta(minutes=9))
    later = services.authorize(
        ctx=ctx, plan_id=plan_id, request=ask, now=now + timedelta(minutes=10)
    )
    assert later.held_micro == 9_000_000


def test_unknown_model_unpriced_model_bad_input_and_scope(funded, key_client):
    client = key_client(funded)
    unknown = authorize(client, model="gpt5")
    assert unknown.status_code == 422 and "gpt-5" in unknown.json()["error"]["suggestions"]
    assert authorize(client, model="gpt-5.1").json()["error"]["code"] == "model_unpriced"
    for bad in [{"estimated_input_tokens": -1}, {"max_output_tokens": 1.5}, {"colour": "red"},
                {"model": 3}, {"estimated_input_tokens": None}]:  # fmt: skip
        response = authorize(client, **bad)
        assert response.status_code == 400, bad
        assert response.json()["error"]["fields"]
    writer = key_client(funded, scopes=["usage:write"])
    assert authorize(writer).status_code == 403


def test_a_cold_gate_rebuilds_the_balance_from_the_database(funded, key_client):
    from django.core.cache import cache

    client = key_client(funded)
    assert authorize(client).status_code == 200
    cache.clear()  # Redis emptied (a restart): balances and holds are gone
    assert authorize(client).json()["balance"]["total"] == "11.250000000"


def race(secret: str, clients: int, **ask) -> list[tuple[int, str | None]]:
    """`clients` threads authorize at once; each one allowed makes its call and posts usage of
    the worst case. Returns (status, error code) per client."""
    barrier = threading.Barrier(clients)
    answers: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        try:
            barrier.wait()
            response = authorize(client, request_id=f"race-{i}", **ask)
            if response.status_code == 200:  # the model call happens and costs the worst case
                usage = {"id": f"u-{i}", "model": "gpt-5", "request_id": f"race-{i}",
                         "usage": {"input_tokens": 1000, "output_tokens": 500},
                         **({"project": ask["project"]} if "project" in ask else {})}  # fmt: skip
                assert client.post("/api/v1/usage", usage, format="json").status_code == 201
            code = response.json().get("error", {}).get("code")
            with lock:
                answers.append((response.status_code, code))
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == clients
    return answers


@pytest.mark.django_db(transaction=True)
def test_a_hundred_racing_requests_never_overspend(team_factory, key_factory, catalog):
    Plan.objects.get_or_create(code="test-zero", defaults={"name": "Zero", "monthly_credits": 0})
    team = team_factory(plan="test-zero")
    grant(team, "11.25")  # exactly 10 worst-case requests
    _, secret = key_factory(team)
    answers = race(secret, 100)
    assert answers.count((200, None)) == 10
    assert answers.count((402, "insufficient_credits")) == 90
    balance = TeamBalance.objects.get(team=team)
    assert balance.balance_nano == 0 and balance.overdraft_nano == 0  # never below zero


def test_an_admin_edit_of_a_limit_reaches_the_gate(team_factory, key_client, client):
    from tests.conftest import make_user

    team = team_factory(plan="free")
    api = key_client(team)
    assert authorize(api).json()["tpm"]["limit"] == 18_000
    staff = make_user("ops@example.com")
    staff.is_staff = staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    from ratelimits.models import TpmLimit

    limit = TpmLimit.objects.get(plan__code="free", model__name="gpt-5")
    form = {"plan": limit.plan_id, "model": limit.model_id, "tokens_per_minute": 1234}
    assert client.post(f"/admin/ratelimits/tpmlimit/{limit.pk}/change/", form).status_code == 302
    refused = authorize(api, estimated_input_tokens=1, max_output_tokens=1)
    assert refused.status_code == 429  # the 1,500 tokens held earlier exceed the new limit
    assert refused.json()["error"]["tpm"] == {"limit": 1234, "used": 1500}


def test_an_upgrade_raises_the_limit_at_once(
    team_factory, key_client, django_capture_on_commit_callbacks
):
    from ledger.services.cycles import subscription_change_plan

    team = team_factory(plan="free")
    api = key_client(team)
    assert authorize(api).json()["tpm"]["limit"] == 18_000  # the key's principal is now cached
    owner = team.memberships.get(role="owner").user
    with django_capture_on_commit_callbacks(execute=True):
        subscription_change_plan(team=team, plan=Plan.objects.get(code="pro"), actor=owner)
    assert authorize(api).json()["tpm"]["limit"] == 180_000


@pytest.mark.django_db(transaction=True)
def test_racing_requests_never_overspend_a_hard_capped_budget(team_factory, key_factory, catalog):
    """Plenty of credits, a project budget with room for exactly 10 worst-case requests: holds
    reserve the budget as they reserve the balance, so 40 racing callers get 10 answers yes."""
    from accounts.services import project_create
    from ledger.models import BudgetSpend
    from ledger.services.budgets import budget_create

    team = team_factory(plan="pro")
    grant(team, 1000)
    web = project_create(team=team, slug="web")
    budget = budget_create(team=team, actor=None, name="Web cap", scope="project",
                           project=web, period="month", limit_nano=11_250_000_000,
                           hard_cap=True)  # fmt: skip
    _, secret = key_factory(team)
    answers = race(secret, 40, project="web")
    assert answers.count((200, None)) == 10
    assert answers.count((402, "budget_exceeded")) == 30
    spent = BudgetSpend.objects.get(budget=budget).spent_nano
    assert spent == 11_250_000_000  # exactly the cap, never past it
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert authorize(client, project="web").json()["error"]["budget"]["held"] == "0.000000000"


def test_a_budget_hold_is_freed_by_release(team, owner, key_client):
    from ledger.services.budgets import budget_create

    grant(team, 100)
    budget_create(team=team, actor=owner.user, name="Cap", scope="team", period="day",
                  limit_nano=2 * 10**9, hard_cap=True)  # fmt: skip
    client = key_client(team)
    first = authorize(client, request_id="one")
    assert first.json()["budgets"][0] | {"id": None} == {
        "id": None, "name": "Cap", "scope": "team", "period": "day", "limit": "2.000000000",
        "spent": "0.000000000", "held": "1.125000000", "remaining": "0.875000000",
    }  # fmt: skip
    refused = authorize(client, request_id="two")  # 1.125 held + 1.125 > 2
    assert refused.status_code == 402 and "hold 1.125000000" in refused.json()["error"]["message"]
    assert client.post("/api/v1/authorize/one/release").status_code == 204
    assert authorize(client, request_id="two").status_code == 200


def test_key_changes_reach_authorize_on_the_next_request(
    team, owner, key_factory, django_capture_on_commit_callbacks
):
    """Keys are remembered per process; a change bumps the team's epoch, which the gate checks
    in the same round trip: a new hard cap applies and a revoked key is refused at once."""
    from django.test import Client

    from accounts.services import api_key_revoke
    from ledger.services.budgets import budget_create

    grant(team, 100)
    key, secret = key_factory(team)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")  # plain Django: the fast path

    def ask():
        return client.post("/api/v1/authorize", ASK, content_type="application/json")

    assert ask().json()["budgets"] == []
    with django_capture_on_commit_callbacks(execute=True):
        budget_create(team=team, actor=owner.user, name="Tiny", scope="team", period="month",
                      limit_nano=10**9, hard_cap=True)  # fmt: skip
    refused = ask()
    assert (refused.status_code, refused.json()["error"]["code"]) == (402, "budget_exceeded")
    with django_capture_on_commit_callbacks(execute=True):
        api_key_revoke(key=key, actor=owner.user)
    gone = ask()
    assert gone.status_code == 401 and gone.json()["error"]["code"] == "unauthenticated"
