import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from accounts import services
from accounts.keys import hash_secret
from accounts.models import Invitation, Membership, Plan, Role
from gateway_billing.errors import ApplicationError
from tests.conftest import make_user

User = get_user_model()


def _invite(client, persona, email, role=Role.FINANCE, capture=None):
    client.force_login(persona.user)
    url = reverse("accounts:invite", args=[persona.team.slug])
    if capture is None:
        return client.post(url, {"email": email, "role": role})
    with capture(execute=True):
        return client.post(url, {"email": email, "role": role})


def _link_path(message) -> str:
    match = re.search(r"https?://[^/\s]+(/invitations/[^/\s]+/)", message.body)
    assert match, message.body
    return match.group(1)


def test_invite_sends_an_email_with_the_link_and_accepting_joins_with_the_role(
    client, owner, django_capture_on_commit_callbacks
):
    response = _invite(client, owner, "New@Example.com", capture=django_capture_on_commit_callbacks)
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["new@example.com"]
    assert owner.team.name in message.subject
    path = _link_path(message)
    invitation = Invitation.objects.get(email="new@example.com")
    assert invitation.token_hash == hash_secret(path.split("/")[2])  # only the hash is stored

    # The invitee, logged out, sees the team and role and links to log in / sign up.
    client.logout()
    page = client.get(path).content.decode()
    assert owner.team.name in page and "Finance" in page
    assert f"{reverse('accounts:signup')}?next={path}" in page
    assert f"{reverse('accounts:login')}?next={path}" in page

    invitee = make_user("new@example.com")
    client.force_login(invitee)
    assert b"csrfmiddlewaretoken" in client.get(path).content
    response = client.post(path)
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:team", args=[owner.team.slug])
    membership = Membership.objects.get(team=owner.team, user=invitee)
    assert membership.role == Role.FINANCE
    invitation.refresh_from_db()
    assert invitation.accepted_at is not None


def test_signup_from_an_invitation_comes_back_to_it(
    client, owner, django_capture_on_commit_callbacks
):
    _invite(client, owner, "fresh@example.com", capture=django_capture_on_commit_callbacks)
    path = _link_path(mail.outbox[0])
    client.logout()
    response = client.post(
        reverse("accounts:signup"),
        {"email": "fresh@example.com", "password": "a long enough pass phrase", "next": path},
    )
    assert response["Location"] == path
    assert client.post(path).status_code == 302
    assert Membership.objects.filter(team=owner.team, user__username="fresh@example.com").exists()


def test_accept_while_logged_out_goes_to_login(client, owner):
    _, token = services.invitation_create(
        team=owner.team, email="x@example.com", role=Role.MEMBER, invited_by=owner.user
    )
    path = reverse("accounts:invitation", args=[token])
    response = client.post(path)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))


def test_the_wrong_user_is_refused(client, owner, outsider):
    _, token = services.invitation_create(
        team=owner.team, email="right@example.com", role=Role.ADMIN, invited_by=owner.user
    )
    path = reverse("accounts:invitation", args=[token])
    client.force_login(outsider.user)
    page = client.get(path)
    assert page.status_code == 200
    assert b"this invitation is for" in page.content
    response = client.post(path)
    assert response.status_code == 403
    assert b"This invitation is for right@example.com" in response.content
    assert not Membership.objects.filter(team=owner.team, user=outsider.user).exists()


@pytest.mark.parametrize("state", ["expired", "used", "revoked", "unknown"])
def test_expired_used_revoked_or_unknown_invitations_are_refused(client, owner, state):
    invitation, token = services.invitation_create(
        team=owner.team, email="late@example.com", role=Role.MEMBER, invited_by=owner.user
    )
    user = make_user("late@example.com")
    if state == "expired":
        invitation.expires_at = timezone.now() - timedelta(seconds=1)
        invitation.save()
    elif state == "used":
        services.invitation_accept(token=token, user=user)
        Membership.objects.filter(user=user).delete()
    elif state == "revoked":
        services.invitation_revoke(invitation=invitation, actor=owner.user)
    elif state == "unknown":
        token = "not-a-token"
    path = reverse("accounts:invitation", args=[token])
    client.force_login(user)
    for response in (client.get(path), client.post(path)):
        assert response.status_code == 404
        assert b"This invitation is unknown, used or expired" in response.content
    assert not Membership.objects.filter(team=owner.team, user=user).exists()


def test_the_free_plan_member_limit_refuses_an_invite_with_a_clear_message(client, team_factory):
    team = team_factory(plan="free")
    membership = team.memberships.get()
    client.force_login(membership.user)
    response = client.post(
        reverse("accounts:invite", args=[team.slug]), {"email": "two@example.com", "role": "member"}
    )
    assert response.status_code == 400
    assert "The Free plan allows 1 member(s); upgrade the plan to invite more." in (
        response.content.decode()
    )
    assert not Invitation.objects.filter(team=team).exists()
    assert len(mail.outbox) == 0


def test_the_member_limit_is_checked_again_on_accept(owner):
    """An invitation sent on Pro cannot be used after a downgrade to Free fills the team."""
    _, token = services.invitation_create(
        team=owner.team, email="later@example.com", role=Role.MEMBER, invited_by=owner.user
    )
    subscription = owner.team.subscription
    subscription.plan = Plan.objects.get(code="free")
    subscription.save()
    user = make_user("later@example.com")
    with pytest.raises(ApplicationError, match="Free plan allows 1"):
        services.invitation_accept(token=token, user=user)


def test_pending_invitations_count_toward_the_limit_and_reinviting_replaces(team_factory):
    team = team_factory(plan="personal")
    plan = team.subscription.plan
    plan.member_limit = 2
    plan.save()
    first_owner = team.memberships.get().user
    first, _ = services.invitation_create(
        team=team, email="a@example.com", role=Role.MEMBER, invited_by=first_owner
    )
    again, _ = services.invitation_create(
        team=team, email="a@example.com", role=Role.ADMIN, invited_by=first_owner
    )
    first.refresh_from_db()
    assert first.revoked_at is not None and again.revoked_at is None
    with pytest.raises(ApplicationError, match="allows 2 member"):
        services.invitation_create(
            team=team, email="b@example.com", role=Role.MEMBER, invited_by=first_owner
        )


def test_existing_members_cannot_be_invited(client, owner, member):
    response = _invite(client, owner, "member@example.com")
    assert response.status_code == 400
    assert b"member@example.com is already a member" in response.content


def test_revoking_an_invitation_from_the_members_page(client, owner):
    invitation, token = services.invitation_create(
        team=owner.team, email="gone@example.com", role=Role.MEMBER, invited_by=owner.user
    )
    client.force_login(owner.user)
    page = client.get(reverse("accounts:members", args=[owner.team.slug])).content.decode()
    assert "gone@example.com" in page
    revoke_url = reverse("accounts:invitation_revoke", args=[owner.team.slug, invitation.pk])
    assert revoke_url in page
    page = client.post(revoke_url, follow=True).content.decode()
    assert "Invitation to gone@example.com revoked." in page
    assert revoke_url not in page
    invitee = make_user("gone@example.com")
    with pytest.raises(ApplicationError):
        services.invitation_accept(token=token, user=invitee)
