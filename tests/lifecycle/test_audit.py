"""The audit log: append-only at the database, written by the services that change roles,
invitations, keys, plans, webhooks and the ledger; read by owners and finance."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.urls import reverse
from rest_framework.test import APIClient

from accounts import services
from accounts.models import AuditEntry, Plan, Team
from ledger.models import EntryKind
from ledger.services.credits import ledger_adjust
from ledger.services.cycles import subscription_change_plan
from pricing.money import NANO
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def actions(team) -> list[str]:
    return list(
        AuditEntry.objects.filter(team=team).order_by("id").values_list("action", flat=True)
    )


# ---- append-only ---------------------------------------------------------------------------


def test_postgresql_refuses_update_and_delete_of_an_audit_row(team, owner):
    entry = services.audit_record(actor=owner.user, team=team, action="test.action", target="x")
    rows = AuditEntry.objects.filter(pk=entry.pk)
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        rows.update(action="edited")
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        rows.delete()
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        entry.target = "changed"
        entry.save()
    with (
        pytest.raises(IntegrityError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM accounts_auditentry")
    assert rows.get().action == "test.action"


@pytest.mark.django_db(databases=["default", "sqlite"])
def test_sqlite_refuses_update_and_delete_of_an_audit_row():
    team = Team.objects.using("sqlite").create(name="Lite", slug="lite")
    AuditEntry.objects.using("sqlite").create(team=team, action="a", target="t")
    rows = AuditEntry.objects.using("sqlite").filter(team=team)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(using="sqlite"):
        rows.update(action="b")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(using="sqlite"):
        rows.delete()
    assert rows.get().action == "a"


def test_nothing_that_points_at_an_audit_row_can_rewrite_it(team, owner):
    services.audit_record(actor=owner.user, team=team, action="test.action", target="x")
    fields = {f.name: f for f in AuditEntry._meta.get_fields() if f.is_relation}
    assert {name: f.remote_field.on_delete.__name__ for name, f in fields.items()} == {
        "actor": "PROTECT",
        "team": "PROTECT",
    }


# ---- what is recorded ----------------------------------------------------------------------


def test_member_invitation_and_key_changes_are_recorded(team, owner, member):
    invitation, token = services.invitation_create(
        team=team, email="new@example.com", role="finance", invited_by=owner.user, ip="192.0.2.1"
    )
    services.invitation_revoke(invitation=invitation, actor=owner.user)
    services.invitation_revoke(invitation=invitation, actor=owner.user)  # no change: no row
    _, token = services.invitation_create(
        team=team, email="new@example.com", role="finance", invited_by=owner.user
    )
    newcomer = make_user("new@example.com")
    services.invitation_accept(token=token, user=newcomer)
    services.membership_role_change(
        membership=member.membership, role="admin", actor=owner.user, ip="192.0.2.2"
    )
    created = services.api_key_create(team=team, scopes=["usage:read"], created_by=owner.user)
    services.api_key_revoke(key=created.key, actor=owner.user)
    services.api_key_revoke(key=created.key, actor=owner.user)  # already revoked: no row

    assert actions(team) == [
        "invitation.create",
        "invitation.revoke",
        "invitation.create",
        "invitation.accept",
        "membership.role_change",
        "api_key.create",
        "api_key.revoke",
    ]
    entries = list(AuditEntry.objects.filter(team=team).order_by("id"))
    assert entries[0].ip == "192.0.2.1" and entries[0].after == {
        "email": "new@example.com",
        "role": "finance",
    }
    assert entries[3].actor == newcomer
    role = entries[4]
    assert (role.before, role.after, role.ip) == (
        {"role": "member"},
        {"role": "admin"},
        "192.0.2.2",
    )
    assert entries[5].target == f"api_key:{created.key.prefix}"
    assert created.secret not in str(entries[5].after)


def test_plan_webhook_and_ledger_changes_are_recorded(team, owner):
    subscription_change_plan(team=team, plan=Plan.objects.get(code="personal"), actor=owner.user)
    endpoint = services.webhook_endpoint_create(
        team=team, url="https://hooks.example.com/a", event_types=["balance.low"], actor=owner.user
    )
    services.webhook_endpoint_update(
        endpoint=endpoint, actor=owner.user, event_types=["balance.low", "topup.failed"]
    )
    services.webhook_endpoint_update(endpoint=endpoint, actor=owner.user, is_active=False)
    for _ in range(2):  # a double submit: one entry, one audit row
        ledger_adjust(
            team=team,
            amount_nano=5 * NANO,
            reason="goodwill",
            author=owner.user,
            reference="manual:a",
        )
    ledger_adjust(
        team=team,
        amount_nano=-2 * NANO,
        reason="correction",
        author=owner.user,
        reference="manual:b",
        kind=EntryKind.REFUND,
    )
    assert actions(team) == [
        "plan.change",
        "webhook.endpoint_create",
        "webhook.endpoint_update",
        "webhook.endpoint_disable",
        "ledger.adjustment",
        "ledger.refund",
    ]
    update = AuditEntry.objects.get(action="webhook.endpoint_update")
    assert update.before == {"event_types": ["balance.low"]}
    assert update.after == {"event_types": ["balance.low", "topup.failed"]}
    created = AuditEntry.objects.get(action="webhook.endpoint_create")
    assert endpoint.secret not in str(created.after)
    refund = AuditEntry.objects.get(action="ledger.refund")
    assert refund.after == {"amount": "-2.000000000", "kind": "refund", "reason": "correction"}


# ---- reading: the API ----------------------------------------------------------------------


@pytest.fixture
def entries(team, owner) -> list[AuditEntry]:
    return [
        services.audit_record(actor=owner.user, team=team, action=f"test.{i}", target=str(i))
        for i in range(3)
    ]


@pytest.mark.parametrize("persona", ["owner", "finance"])
def test_owners_and_finance_read_the_log_page_by_page(request, team, entries, outsider, persona):
    services.audit_record(actor=outsider.user, team=outsider.team, action="theirs", target="x")
    client = APIClient()
    client.force_authenticate(request.getfixturevalue(persona).user)
    first = client.get("/api/v1/audit", {"team": team.slug, "limit": 2})
    assert first.status_code == 200
    body = first.json()
    assert [r["action"] for r in body["results"]] == ["test.2", "test.1"]
    assert body["results"][0]["actor"] == "owner@example.com"
    assert set(body["results"][0]) == {
        "id", "created_at", "actor", "action", "target", "before", "after", "ip",
    }  # fmt: skip
    second = client.get(body["next"]).json()
    assert [r["action"] for r in second["results"]] == ["test.0"] and second["next"] is None


@pytest.mark.parametrize("persona", ["admin_member", "member"])
def test_other_roles_get_403(request, team, entries, persona):
    client = APIClient()
    client.force_authenticate(request.getfixturevalue(persona).user)
    response = client.get("/api/v1/audit", {"team": team.slug})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_outsiders_get_404_and_api_keys_403(team, entries, outsider, key_client):
    client = APIClient()
    client.force_authenticate(outsider.user)
    assert client.get("/api/v1/audit", {"team": team.slug}).status_code == 404
    keyed = key_client(team, ["usage:read", "usage:write", "authorize"])
    response = keyed.get("/api/v1/audit", {"team": team.slug})
    assert response.status_code == 403
    assert "not with an API key" in response.json()["error"]["message"]
    assert APIClient().get("/api/v1/audit").status_code in {401, 403}


# ---- reading: the page ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "status"),
    [("owner", 200), ("finance", 200), ("admin_member", 403), ("member", 403)],
)
def test_the_audit_page_is_for_owners_and_finance(
    request, login_as, team, entries, persona, status
):
    response = login_as(request.getfixturevalue(persona)).get(
        reverse("accounts:audit", args=[team.slug])
    )
    assert response.status_code == status
    if status == 200:
        assert "test.2" in response.content.decode()


def test_outsiders_get_404_on_the_audit_page(login_as, team, entries, outsider):
    response = login_as(outsider).get(reverse("accounts:audit", args=[team.slug]))
    assert response.status_code == 404


def test_the_ip_of_a_page_action_is_recorded(login_as, team, owner, member):
    client = login_as(owner, REMOTE_ADDR="203.0.113.5")
    url = reverse("accounts:role_change", args=[team.slug, member.membership.pk])
    assert client.post(url, {f"m{member.membership.pk}-role": "finance"}).status_code == 302
    entry = AuditEntry.objects.get(action="membership.role_change")
    assert entry.ip == "203.0.113.5" and entry.actor == owner.user
