"""Service rules that hold under concurrency: the team lock serialises team-wide checks."""

import threading

import pytest
from django.db import connection

from accounts import services
from accounts.models import Membership, Role
from gateway_billing.errors import ApplicationError
from tests.conftest import make_user


@pytest.mark.django_db(transaction=True)
def test_two_owners_demoting_each_other_at_once_leave_one_owner(team, owner):
    second = Membership.objects.create(team=team, user=make_user("o2@example.com"), role="owner")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def demote(target: Membership, actor) -> None:
        barrier.wait()
        try:
            services.membership_role_change(membership=target, role=Role.MEMBER, actor=actor)
            outcomes.append("changed")
        except ApplicationError as exc:
            outcomes.append(exc.code)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=demote, args=(second, owner.user)),
        threading.Thread(target=demote, args=(owner.membership, second.user)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) in (["changed", "last_owner"], ["changed", "forbidden"])
    assert Membership.objects.filter(team=team, role=Role.OWNER).count() == 1


def test_a_key_cannot_use_a_project_of_another_team(team, outsider_team):
    project = services.project_create(team=outsider_team, slug="theirs")
    with pytest.raises(ApplicationError) as raised:
        services.api_key_create(team=team, scopes=["usage:read"], project=project)
    assert raised.value.status_code == 404


def test_only_managers_invite_and_only_owners_change_roles(team, owner, finance, member):
    with pytest.raises(ApplicationError, match="Only owners and admins invite"):
        services.invitation_create(
            team=team, email="x@example.com", role=Role.MEMBER, invited_by=finance.user
        )
    with pytest.raises(ApplicationError, match="Only owners change roles"):
        services.membership_role_change(
            membership=member.membership, role=Role.ADMIN, actor=finance.user
        )


def test_project_and_team_slugs_are_checked(team, owner):
    with pytest.raises(ApplicationError, match="needs a slug"):
        services.project_create(team=team, slug="!!!")
    services.project_create(team=team, slug="web")
    with pytest.raises(ApplicationError, match="exists in this team"):
        services.project_create(team=team, slug="web")
    with pytest.raises(ApplicationError, match="is not a slug"):
        services.team_create(name="X", owner=owner.user, slug="Bad Slug")
    with pytest.raises(ApplicationError, match="exists"):
        services.team_create(name="X", owner=owner.user, slug=team.slug)
