"""The role matrix, checked on every team page and every POST action, for every role; plus
anonymous visitors (login redirect) and outsiders (404, nothing changes).

| page / action                 | owner | admin | finance | member |
|-------------------------------|-------|-------|---------|--------|
| dashboard, members, keys (GET)|  yes  |  yes  |   yes   |  yes   |
| new key form, projects (GET)  |  yes  |  yes  |   403   |  403   |
| invite, revoke invitation     |  yes  |  yes  |   403   |  403   |
| change a role                 |  yes  |  403  |   403   |  403   |
| create / revoke a key         |  yes  |  yes  |   403   |  403   |
| create a project              |  yes  |  yes  |   403   |  403   |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from django.urls import reverse

from accounts import services
from accounts.models import ApiKey, Invitation, Membership, Project, Role

ROLES = ["owner", "admin", "finance", "member"]
PERSONA_FIXTURE = {
    "owner": "owner",
    "admin": "admin_member",
    "finance": "finance",
    "member": "member",
}
MANAGERS = {"owner", "admin"}

PAGES = {  # name -> roles allowed
    "team": set(ROLES),
    "members": set(ROLES),
    "keys": set(ROLES),
    "key_create": MANAGERS,
    "projects": MANAGERS,
}


@dataclass(frozen=True)
class Action:
    url: Callable[[SimpleNamespace], str]
    data: Callable[[SimpleNamespace], dict]
    done: Callable[[SimpleNamespace], bool]  # has the action taken effect?
    allowed: frozenset[str]
    ok_status: int = 302


ACTIONS = {
    "invite": Action(
        url=lambda s: reverse("accounts:invite", args=[s.team.slug]),
        data=lambda s: {"email": "new@example.com", "role": Role.MEMBER},
        done=lambda s: Invitation.objects.filter(team=s.team, email="new@example.com").exists(),
        allowed=frozenset(MANAGERS),
    ),
    "invitation_revoke": Action(
        url=lambda s: reverse("accounts:invitation_revoke", args=[s.team.slug, s.invitation.pk]),
        data=lambda s: {},
        done=lambda s: Invitation.objects.get(pk=s.invitation.pk).revoked_at is not None,
        allowed=frozenset(MANAGERS),
    ),
    "role_change": Action(
        url=lambda s: reverse("accounts:role_change", args=[s.team.slug, s.target.pk]),
        data=lambda s: {f"m{s.target.pk}-role": Role.FINANCE},
        done=lambda s: Membership.objects.get(pk=s.target.pk).role == Role.FINANCE,
        allowed=frozenset({"owner"}),
    ),
    "key_create": Action(
        url=lambda s: reverse("accounts:key_create", args=[s.team.slug]),
        data=lambda s: {"name": "made-by-test", "scopes": ["usage:read"]},
        done=lambda s: ApiKey.objects.filter(team=s.team, name="made-by-test").exists(),
        allowed=frozenset(MANAGERS),
        ok_status=201,
    ),
    "key_revoke": Action(
        url=lambda s: reverse("accounts:key_revoke", args=[s.team.slug, s.key.pk]),
        data=lambda s: {},
        done=lambda s: ApiKey.objects.get(pk=s.key.pk).revoked_at is not None,
        allowed=frozenset(MANAGERS),
    ),
    "project_create": Action(
        url=lambda s: reverse("accounts:projects", args=[s.team.slug]),
        data=lambda s: {"slug": "web", "name": "Web"},
        done=lambda s: Project.objects.filter(team=s.team, slug="web").exists(),
        allowed=frozenset(MANAGERS),
    ),
}


@pytest.fixture
def scene(team, owner, admin_member, finance, member, key_factory) -> SimpleNamespace:
    invitation, _ = services.invitation_create(
        team=team, email="pending@example.com", role=Role.MEMBER, invited_by=owner.user
    )
    key, _ = key_factory(team)
    return SimpleNamespace(team=team, invitation=invitation, key=key, target=member.membership)


def _client_for(request, client, role: str):
    client.force_login(request.getfixturevalue(PERSONA_FIXTURE[role]).user)
    return client


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", sorted(PAGES))
def test_get_pages_per_role(request, client, scene, page, role):
    client = _client_for(request, client, role)
    response = client.get(reverse(f"accounts:{page}", args=[scene.team.slug]))
    if role in PAGES[page]:
        assert response.status_code == 200
        assert scene.team.name.encode() in response.content
    else:
        assert response.status_code == 403
        assert b"Not allowed" in response.content


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_post_actions_per_role(request, client, scene, name, role):
    action = ACTIONS[name]
    client = _client_for(request, client, role)
    response = client.post(action.url(scene), action.data(scene))
    if role in action.allowed:
        assert response.status_code == action.ok_status, response.content.decode()[:500]
        assert action.done(scene)
    else:
        assert response.status_code == 403
        assert not action.done(scene)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_anonymous_pages_redirect_to_login(client, scene, page):
    url = reverse(f"accounts:{page}", args=[scene.team.slug])
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('accounts:login')}?next={url}"


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_anonymous_posts_redirect_to_login_and_change_nothing(client, scene, name):
    action = ACTIONS[name]
    response = client.post(action.url(scene), action.data(scene))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))
    assert not action.done(scene)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_outsider_gets_404_on_every_page(client, scene, outsider, page):
    client.force_login(outsider.user)
    assert client.get(reverse(f"accounts:{page}", args=[scene.team.slug])).status_code == 404


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_outsider_posts_are_404_and_change_nothing(client, scene, outsider, name):
    action = ACTIONS[name]
    client.force_login(outsider.user)
    assert client.post(action.url(scene), action.data(scene)).status_code == 404
    assert client.get(action.url(scene)).status_code == 404  # no 405 that confirms the team
    assert not action.done(scene)


def test_unknown_team_is_404_like_another_teams(client, owner):
    client.force_login(owner.user)
    assert client.get(reverse("accounts:team", args=["no-such-team"])).status_code == 404


def test_another_teams_objects_are_404_through_my_team(
    client, scene, owner, outsider_team, outsider, key_factory
):
    """An owner of `team` cannot reach `outsider_team`'s key, invitation or member by id."""
    their_key, _ = key_factory(outsider_team)
    their_invitation, _ = services.invitation_create(
        team=outsider_team, email="x@example.com", role=Role.MEMBER, invited_by=outsider.user
    )
    client.force_login(owner.user)
    slug = scene.team.slug
    urls = [
        reverse("accounts:key_revoke", args=[slug, their_key.pk]),
        reverse("accounts:invitation_revoke", args=[slug, their_invitation.pk]),
        reverse("accounts:role_change", args=[slug, outsider.membership.pk]),
    ]
    for url in urls:
        assert client.post(url, {f"m{outsider.membership.pk}-role": Role.MEMBER}).status_code == 404
    their_key.refresh_from_db()
    their_invitation.refresh_from_db()
    outsider.membership.refresh_from_db()
    assert their_key.revoked_at is None
    assert their_invitation.revoked_at is None
    assert outsider.membership.role == Role.OWNER


def test_a_key_of_another_team_cannot_be_attached_as_project(client, scene, owner, outsider_team):
    other = services.project_create(team=outsider_team, slug="theirs")
    client.force_login(owner.user)
    response = client.post(
        reverse("accounts:key_create", args=[scene.team.slug]),
        {"name": "sneaky", "scopes": ["usage:read"], "project": other.slug},
    )
    assert response.status_code == 400
    assert not ApiKey.objects.filter(name="sneaky").exists()


@pytest.mark.parametrize("role", ROLES)
def test_members_page_shows_controls_per_role(request, client, scene, role):
    client = _client_for(request, client, role)
    page = client.get(reverse("accounts:members", args=[scene.team.slug])).content.decode()
    invite_url = reverse("accounts:invite", args=[scene.team.slug])
    role_url = reverse("accounts:role_change", args=[scene.team.slug, scene.target.pk])
    assert (invite_url in page) is (role in MANAGERS)
    assert ("pending@example.com" in page) is (role in MANAGERS)
    assert (role_url in page) is (role == "owner")
    for email in ("owner@example.com", "admin@example.com", "finance@example.com"):
        assert email in page


@pytest.mark.parametrize("role", ROLES)
def test_keys_page_shows_revoke_only_to_managers(request, client, scene, role):
    client = _client_for(request, client, role)
    page = client.get(reverse("accounts:keys", args=[scene.team.slug])).content.decode()
    assert scene.key.prefix in page
    revoke_url = reverse("accounts:key_revoke", args=[scene.team.slug, scene.key.pk])
    assert (revoke_url in page) is (role in MANAGERS)


def test_the_last_owner_cannot_be_demoted(client, owner):
    client.force_login(owner.user)
    m = owner.membership
    response = client.post(
        reverse("accounts:role_change", args=[owner.team.slug, m.pk]), {f"m{m.pk}-role": "admin"}
    )
    assert response.status_code == 400
    assert "A team needs at least one owner" in response.content.decode()
    m.refresh_from_db()
    assert m.role == Role.OWNER


def test_an_owner_can_step_down_when_another_owner_exists(client, owner, admin_member):
    client.force_login(owner.user)
    promote = admin_member.membership
    url = reverse("accounts:role_change", args=[owner.team.slug, promote.pk])
    assert client.post(url, {f"m{promote.pk}-role": "owner"}).status_code == 302
    me = owner.membership
    url = reverse("accounts:role_change", args=[owner.team.slug, me.pk])
    assert client.post(url, {f"m{me.pk}-role": "member"}).status_code == 302
    me.refresh_from_db()
    assert me.role == Role.MEMBER
    # Now a plain member: the role-change action is forbidden to them.
    assert client.post(url, {f"m{me.pk}-role": "owner"}).status_code == 403


def test_admins_cannot_invite_owners(client, admin_member):
    client.force_login(admin_member.user)
    response = client.post(
        reverse("accounts:invite", args=[admin_member.team.slug]),
        {"email": "boss@example.com", "role": "owner"},
    )
    assert response.status_code == 400
    assert not Invitation.objects.filter(email="boss@example.com").exists()
