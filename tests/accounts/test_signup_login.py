import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from accounts.models import Membership, Role, Team
from tests.conftest import PASSWORD

User = get_user_model()
pytestmark = pytest.mark.usefixtures("catalog")


def _signup(client, email="New.User@Example.com", password=PASSWORD, team_name="Rocket", **extra):
    data = {"email": email, "password": password, "team_name": team_name}
    return client.post(reverse("accounts:signup"), data | extra)


def test_signup_page_has_labelled_fields_and_csrf(client):
    page = client.get(reverse("accounts:signup")).content.decode()
    assert "csrfmiddlewaretoken" in page
    for field in ("email", "password", "team_name"):
        assert f'<label for="id_{field}"' in page


def test_signup_creates_a_free_team_owned_by_the_user_and_logs_in(client):
    response = _signup(client)
    user = User.objects.get(username="new.user@example.com")
    team = Team.objects.get(memberships__user=user)
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:team", args=[team.slug])
    assert team.name == "Rocket"
    assert Membership.objects.get(team=team, user=user).role == Role.OWNER
    assert team.subscription.plan.code == "free"
    assert team.subscription.current_cycle_end > team.subscription.current_cycle_start
    dashboard = client.get(response["Location"])
    assert dashboard.status_code == 200
    assert b"Free" in dashboard.content


def test_signup_without_team_name_names_the_team_after_the_email(client):
    _signup(client, email="solo@example.com", team_name="")
    assert Team.objects.get(memberships__user__username="solo@example.com").name == "solo"


def test_duplicate_email_is_a_form_error_not_a_500(client):
    _signup(client)
    client.logout()
    response = _signup(client, email="NEW.USER@example.com", team_name="Other")
    assert response.status_code == 400
    assert "An account with this email exists" in response.content.decode()
    assert User.objects.filter(username="new.user@example.com").count() == 1
    assert not Team.objects.filter(name="Other").exists()


def test_weak_password_is_refused_by_django_validators(client):
    response = _signup(client, password="12345678")
    assert response.status_code == 400
    assert b"This password is too common" in response.content
    assert not User.objects.filter(username="new.user@example.com").exists()


def test_signup_follows_a_safe_next_only(client):
    response = _signup(client, next="/invitations/abc/")
    assert response["Location"] == "/invitations/abc/"
    client.logout()
    response = _signup(client, email="b@example.com", next="https://evil.example/")
    assert response["Location"].startswith("/t/")


def test_login_with_email_any_case_and_home_redirects_to_the_team(client, owner):
    response = client.post(
        reverse("accounts:login"), {"username": "OWNER@example.com", "password": PASSWORD}
    )
    assert response.status_code == 302
    home = client.get(reverse("accounts:home"))
    assert home["Location"] == reverse("accounts:team", args=[owner.team.slug])


def test_wrong_password_shows_an_error(client, owner):
    response = client.post(
        reverse("accounts:login"), {"username": "owner@example.com", "password": "nope"}
    )
    assert response.status_code == 200
    assert b"That email and password do not match" in response.content
    assert "_auth_user_id" not in client.session


def test_home_logged_out_redirects_to_login(client):
    response = client.get(reverse("accounts:home"))
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:login")


def test_home_without_a_team_offers_to_create_one(client, catalog):
    user = User.objects.create_user(username="lonely@example.com", email="lonely@example.com")
    client.force_login(user)
    page = client.get(reverse("accounts:home"))
    assert page.status_code == 200
    assert reverse("accounts:team_create").encode() in page.content
    created = client.post(reverse("accounts:team_create"), {"name": "Mine"})
    team = Team.objects.get(name="Mine")
    assert created["Location"] == reverse("accounts:team", args=[team.slug])
    assert team.memberships.get().user == user
    assert team.subscription.plan.code == "free"


def test_logout_is_post_only(client, owner):
    client.force_login(owner.user)
    assert client.get(reverse("accounts:logout")).status_code == 405
    assert "_auth_user_id" in client.session
    response = client.post(reverse("accounts:logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:login")
    assert "_auth_user_id" not in client.session


def test_base_layout_has_viewport_nav_and_logout_form(client, owner):
    client.force_login(owner.user)
    page = client.get(reverse("accounts:team", args=[owner.team.slug])).content.decode()
    assert 'name="viewport"' in page
    assert f'action="{reverse("accounts:logout")}"' in page
    assert reverse("accounts:members", args=[owner.team.slug]) in page
    assert reverse("accounts:keys", args=[owner.team.slug]) in page
