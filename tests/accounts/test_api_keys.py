import hashlib

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from accounts import services
from accounts.authentication import keys_last_used_flush
from accounts.models import ApiKey, Project

ME = "/api/v1/me"


def _bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def _create_via_page(client, team, **data) -> tuple[ApiKey, str, str]:
    payload = {"name": "prod gateway", "scopes": ["usage:write", "authorize"]} | data
    response = client.post(reverse("accounts:key_create", args=[team.slug]), payload)
    assert response.status_code == 201, response.content.decode()[:800]
    key = ApiKey.objects.get(team=team, name=payload["name"])
    page = response.content.decode()
    start = page.index(f'value="{key.prefix}_') + len('value="')
    secret = page[start : page.index('"', start)]
    return key, secret, page


def test_create_via_page_shows_the_secret_once_and_stores_only_its_hash(client, owner):
    client.force_login(owner.user)
    project = services.project_create(team=owner.team, slug="web")
    key, secret, page = _create_via_page(client, owner.team, project="web")

    assert "shown only once" in page
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert key.project == project and key.member == owner.membership
    assert key.created_by == owner.user and key.scopes == ["authorize", "usage:write"]
    stored = ApiKey.objects.filter(pk=key.pk).values().get()
    assert not any(secret in str(value) for value in stored.values())
    assert not any(secret in str(value) for value in client.session.values())

    listing = client.get(reverse("accounts:keys", args=[owner.team.slug])).content.decode()
    assert key.prefix in listing and "prod gateway" in listing and "web" in listing
    assert secret not in listing


def test_the_secret_response_is_not_cached(client, owner):
    client.force_login(owner.user)
    response = client.post(
        reverse("accounts:key_create", args=[owner.team.slug]),
        {"name": "k", "scopes": ["usage:read"]},
    )
    assert "no-store" in response["Cache-Control"]


def test_key_form_errors_show_next_to_the_fields(client, owner):
    client.force_login(owner.user)
    response = client.post(reverse("accounts:key_create", args=[owner.team.slug]), {"name": "x"})
    assert response.status_code == 400
    assert b"This field is required" in response.content
    assert not ApiKey.objects.filter(team=owner.team).exists()


def test_the_secret_authenticates_me(client, owner):
    client.force_login(owner.user)
    project = services.project_create(team=owner.team, slug="web")
    key, secret, _ = _create_via_page(client, owner.team, project=project.slug)
    response = _bearer(secret).get(ME)
    assert response.status_code == 200
    assert response.json() == {
        "team": {"slug": owner.team.slug, "name": owner.team.name},
        "project": "web",
        "scopes": ["authorize", "usage:write"],
        "key_prefix": key.prefix,
    }
    assert keys_last_used_flush() == 1  # recorded in Redis, written by the beat job
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_the_last_use_flush_writes_every_key_in_one_statement_and_never_moves_back(
    team, django_assert_num_queries
):
    from datetime import UTC, datetime

    from accounts.authentication import _gate

    fresh = services.api_key_create(team=team, scopes=["usage:read"]).key
    ahead = services.api_key_create(team=team, scopes=["usage:read"]).key
    later = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    ApiKey.objects.filter(pk=ahead.pk).update(last_used_at=later)
    used_ms = int(datetime(2026, 5, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)
    _gate().key_used(key_id=fresh.pk, at_ms=used_ms)
    _gate().key_used(key_id=ahead.pk, at_ms=used_ms)
    with django_assert_num_queries(1):
        assert keys_last_used_flush() == 2
    fresh.refresh_from_db()
    ahead.refresh_from_db()
    assert fresh.last_used_at == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert ahead.last_used_at == later  # an older recorded use does not move it back


def test_me_without_a_project_is_null(key_client, team):
    body = key_client(team, ["usage:read"]).get(ME).json()
    assert body["project"] is None and body["scopes"] == ["usage:read"]


def test_unknown_key_is_401_in_the_error_shape(api_client, team):
    response = _bearer("gbk_00000000_nope").get(ME)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize(
    "header", ["Bearer", "Bearer a b", "Token gbk_123", "Basic dXNlcjpwYXNz", "bearer x"]
)
def test_malformed_authorization_header_is_401(api_client, header):
    response = api_client.get(ME, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


def test_no_credentials_is_401(api_client, db):
    response = api_client.get(ME)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


def test_a_revoked_key_is_refused_on_its_next_request_though_its_lookup_was_cached(client, owner):
    client.force_login(owner.user)
    key, secret, _ = _create_via_page(client, owner.team)
    api = _bearer(secret)
    assert api.get(ME).status_code == 200  # warms the cached lookup
    assert api.get(ME).status_code == 200

    response = client.post(reverse("accounts:key_revoke", args=[owner.team.slug, key.pk]))
    assert response.status_code == 302

    refused = api.get(ME)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"
    listing = client.get(reverse("accounts:keys", args=[owner.team.slug])).content.decode()
    assert "Revoked" in listing


def test_a_session_user_gets_403_from_me(client, owner):
    client.force_login(owner.user)
    response = client.get(ME)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_another_teams_key_sees_only_its_own_team(key_client, team, outsider_team):
    mine = key_client(team, ["usage:read"]).get(ME).json()
    theirs = key_client(outsider_team, ["usage:read"]).get(ME).json()
    assert mine["team"]["slug"] == team.slug
    assert theirs["team"]["slug"] == outsider_team.slug


@pytest.mark.urls("tests.accounts.scope_urls")
def test_a_key_without_the_scope_gets_403_naming_it(key_client, team):
    response = key_client(team, ["usage:read", "authorize"]).get("/probe/write")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    assert "usage:write" in error["message"]
    allowed = key_client(team, ["usage:write"]).get("/probe/write")
    assert allowed.status_code == 200
    assert allowed.json() == {"team_id": team.id}


@pytest.mark.urls("tests.accounts.scope_urls")
def test_a_session_user_reads_their_team_by_slug_and_404s_for_others(client, member, outsider_team):
    client.force_login(member.user)
    mine = client.get(f"/probe/read?team={member.team.slug}")
    assert mine.status_code == 200
    assert mine.json() == {"team_id": member.team.id}
    other = client.get(f"/probe/read?team={outsider_team.slug}")
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "not_found"
    assert client.get("/probe/read?team=no-such-team").status_code == 404
    # A session may only read: write scopes need an API key.
    assert client.get(f"/probe/write?team={member.team.slug}").status_code == 403


def test_revoking_through_the_admin_action(admin_client, key_factory, team):
    key, secret = key_factory(team)
    assert _bearer(secret).get(ME).status_code == 200
    response = admin_client.post(
        reverse("admin:accounts_apikey_changelist"),
        {"action": "revoke", "_selected_action": [key.pk]},
    )
    assert response.status_code == 302
    assert _bearer(secret).get(ME).status_code == 401
    assert admin_client.get(reverse("admin:accounts_apikey_add")).status_code == 403


def test_admin_pages_render(admin_client, team, key_factory):
    key_factory(team)
    services.invitation_create(
        team=team, email="i@example.com", role="member", invited_by=team.memberships.get().user
    )
    Project.objects.create(team=team, slug="p", name="P")
    for model in ("team", "membership", "project", "apikey", "plan", "subscription", "invitation"):
        assert admin_client.get(reverse(f"admin:accounts_{model}_changelist")).status_code == 200
    assert (
        admin_client.get(reverse("admin:accounts_team_change", args=[team.pk])).status_code == 200
    )
    key = ApiKey.objects.get(team=team)
    assert (
        admin_client.get(reverse("admin:accounts_apikey_change", args=[key.pk])).status_code == 200
    )
