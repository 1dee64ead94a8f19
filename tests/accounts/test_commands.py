import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.models import ApiKey, Membership, Project, Role, Team

User = get_user_model()
pytestmark = pytest.mark.usefixtures("catalog")


def run(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


def _me(secret: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client.get("/api/v1/me")


def test_create_team_creates_the_owner_without_a_password():
    out = run("create_team", slug="acme", name="Acme", plan="pro", owner_email="Ada@Example.com")
    team = Team.objects.get(slug="acme")
    owner = User.objects.get(username="ada@example.com")
    assert team.subscription.plan.code == "pro"
    assert Membership.objects.get(team=team, user=owner).role == Role.OWNER
    assert not owner.has_usable_password()
    assert "manage.py changepassword ada@example.com" in out


def test_create_team_reuses_an_existing_owner(django_user_model):
    user = django_user_model.objects.create_user(username="bo@example.com", password="x")
    out = run("create_team", slug="b", name="B", plan="free", owner_email="bo@example.com")
    assert Team.objects.get(slug="b").memberships.get().user == user
    assert "changepassword" not in out
    user.refresh_from_db()
    assert user.check_password("x")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"slug": "x", "plan": "gold"}, "No plan with code 'gold'"),
        ({"slug": "Not A Slug", "plan": "free"}, "is not a slug"),
        ({"slug": "taken", "plan": "free"}, "A team with slug 'taken' exists"),
    ],
)
def test_create_team_errors_are_command_errors(options, message):
    run("create_team", slug="taken", name="T", plan="free", owner_email="t@example.com")
    with pytest.raises(CommandError, match=message):
        run("create_team", name="X", owner_email="x@example.com", **options)
    assert not User.objects.filter(username="x@example.com").exists()  # rolled back


def test_create_api_key_prints_a_secret_that_works():
    run("create_team", slug="acme", name="Acme", plan="pro", owner_email="ada@example.com")
    Project.objects.create(team=Team.objects.get(slug="acme"), slug="web", name="Web")
    out = run(
        "create_api_key", "--team", "acme", "--project", "web", "--scopes", "usage:read",
        "--name", "ci",
    )  # fmt: skip
    secret = out.strip().splitlines()[-1]
    response = _me(secret)
    assert response.status_code == 200
    assert response.json()["team"]["slug"] == "acme"
    assert response.json()["project"] == "web"
    assert response.json()["scopes"] == ["usage:read"]
    assert ApiKey.objects.get(team__slug="acme").name == "ci"


def test_create_api_key_defaults_to_all_scopes_and_checks_its_input():
    run("create_team", slug="acme", name="Acme", plan="pro", owner_email="ada@example.com")
    secret = run("create_api_key", team="acme").strip().splitlines()[-1]
    assert _me(secret).json()["scopes"] == ["authorize", "usage:read", "usage:write"]
    with pytest.raises(CommandError, match="No team with slug 'nope'"):
        run("create_api_key", team="nope")
    with pytest.raises(CommandError, match="has no project 'ghost'"):
        run("create_api_key", team="acme", project="ghost")
    with pytest.raises(CommandError):
        run("create_api_key", "--team", "acme", "--scopes", "admin")


def _demo(client) -> dict[str, str]:
    out = run("demo_setup")
    logins = dict(re.findall(r"(\S+@example\.com) / (\S+)", out))
    key = re.search(r"API key:\s+(\S+)", out).group(1)
    assert "http://127.0.0.1:8000/admin/" in out
    assert f'curl -H "Authorization: Bearer {key}" http://127.0.0.1:8000/api/v1/me' in out
    return {"key": key, **logins}


def test_demo_setup_is_idempotent(client):
    first = _demo(client)
    second = _demo(client)

    assert User.objects.filter(username="admin@example.com", is_superuser=True).count() == 1
    assert Team.objects.filter(slug="demo").count() == 1
    team = Team.objects.get(slug="demo")
    assert team.subscription.plan.code == "pro"
    assert Project.objects.filter(team=team, slug="default").count() == 1
    assert team.memberships.get(user__username="demo@example.com").role == Role.OWNER
    assert ApiKey.objects.filter(team=team, name="demo", revoked_at__isnull=True).count() == 1
    assert ApiKey.objects.filter(team=team, name="demo").count() == 2

    assert _me(first["key"]).status_code == 401
    me = _me(second["key"])
    assert me.status_code == 200
    assert me.json()["project"] == "default"
    assert me.json()["scopes"] == ["authorize", "usage:read", "usage:write"]

    assert client.login(username="admin@example.com", password=second["admin@example.com"])
    assert client.get("/admin/").status_code == 200
    assert not client.login(username="admin@example.com", password=first["admin@example.com"])
    assert client.login(username="demo@example.com", password=second["demo@example.com"])
    assert client.get("/t/demo/").status_code == 200
