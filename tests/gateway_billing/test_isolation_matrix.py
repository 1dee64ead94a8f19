"""The tenant isolation matrix: team A's callers against team B's objects, on every API endpoint
and every team page.

Team A calls with an API key (every scope) and as each of its members logged in (owner, admin,
finance, member). Team B owns one of everything: a project, a second member, a pending
invitation, an API key, a budget, a webhook endpoint with a failed delivery, a payment, usage
events and a live authorize hold. Every attempt on B's objects must be refused (403 or 404; a
405 for a GET of a POST-only page that A's role may use; 401 when a browser session calls a
key-only endpoint, a 4xx naming the bad field when a body names B's object) and change nothing:
every row of every table that belongs to B (and to A), and B's hold, are compared before and
after each attempt (`team_state`).

Endpoints that take no object id answer with the caller's own team only (`OWN_DATA`).

Routes come from the URL resolver: a route under /api/v1/ or /t/<slug>/ (or a tenant route
elsewhere) without a row here fails `test_every_route_has_a_matrix_row`, naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import (
    AuditEntry,
    DeliveryState,
    Membership,
    OutboxEvent,
    Role,
    Team,
    WebhookDelivery,
)
from accounts.services.webhooks import webhook_endpoint_create
from ledger.models import Budget, LedgerEntry, Payment, PaymentKind, PaymentStatus, TeamBalance
from ledger.services.budgets import budget_create
from pricing.money import NANO, format_credits
from ratelimits import services as gate_services
from tests.conftest import make_user

ROLES = ("owner", "admin", "finance", "member")
KEY = ("key",)
EVERYONE = KEY + ROLES
REFUSED = frozenset({403, 404})
TENANT_APPS = {"accounts", "ledger", "pricing", "ratelimits"}
# Written by every authenticated request, not by the attempt itself.
VOLATILE_FIELDS = {"last_used_at"}


# ---- the two teams -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_gate():
    gate_services.gate_reset()
    yield
    gate_services.gate_reset()


def _key_client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


USAGE = {"model": "gpt-5", "usage": {"input_tokens": 2000, "output_tokens": 300}}
A_USAGE = {"model": "gpt-4o", "usage": {"input_tokens": 10}}  # A's own model: summaries differ
HOLD = {"model": "gpt-5", "estimated_input_tokens": 1000, "max_output_tokens": 500}


@pytest.fixture
def world(
    team, owner, admin_member, finance, member, outsider_team, outsider, key_factory,
    django_capture_on_commit_callbacks,
) -> SimpleNamespace:  # fmt: skip
    a, b = team, outsider_team
    _, a_secret = key_factory(a)
    b_key, b_secret = key_factory(b)
    b_project = account_services.project_create(team=b, slug="b-only")
    b_member = Membership.objects.create(
        team=b, user=make_user("b-member@example.com"), role=Role.MEMBER
    )
    b_invitation, _ = account_services.invitation_create(
        team=b, email="b-invitee@example.com", role=Role.MEMBER, invited_by=outsider.user
    )
    b_endpoint = webhook_endpoint_create(
        team=b, url="https://hooks.example.com/b", event_types=["balance.low"], actor=outsider.user
    )
    now = timezone.now()
    b_event = OutboxEvent.objects.create(
        team=b, event_id="evt_b_1", type="balance.low", payload={"id": "evt_b_1"},
        dispatched_at=now,
    )  # fmt: skip
    b_delivery = WebhookDelivery.objects.create(
        endpoint=b_endpoint, event=b_event, attempt=9, state=DeliveryState.FAILED,
        status_code=500, attempted_at=now,
    )  # fmt: skip
    b_budget = budget_create(
        team=b, actor=outsider.user, name="B web", scope="project", project=b_project,
        period="month", limit_nano=100 * NANO, thresholds=[50], hard_cap=True,
    )  # fmt: skip
    b_payment = Payment.objects.create(
        team=b, kind=PaymentKind.AUTO_RECHARGE, provider="fake",
        status=PaymentStatus.REQUIRES_ACTION, amount_cents=2000, credits_nano=1000 * NANO,
        checkout_session_id="fake_cs_pay_b", payment_intent_id="fake_pi_b",
    )  # fmt: skip
    a_budget = budget_create(
        team=a, actor=owner.user, name="A team", scope="team", period="month",
        limit_nano=100 * NANO,
    )  # fmt: skip
    b_client, a_client = _key_client(b_secret), _key_client(a_secret)
    with django_capture_on_commit_callbacks(execute=True):
        # B spends on gpt-5 and holds credits; A spends on another model (the summaries differ).
        for event_id in ("b-event-1", "b-event-2"):
            body = {"id": event_id, **USAGE}
            assert b_client.post("/api/v1/usage", body, format="json").status_code == 201
        hold = b_client.post("/api/v1/authorize", {**HOLD, "request_id": "b-hold"}, format="json")
        assert hold.status_code == 200, hold.content
        a_usage = {"id": "a-event-1", **A_USAGE}
        assert a_client.post("/api/v1/usage", a_usage, format="json").status_code == 201
    clients = {"key": a_client}
    for role, persona in zip(ROLES, (owner, admin_member, finance, member), strict=True):
        clients[role] = APIClient()
        clients[role].force_login(persona.user)
    b_objects = SimpleNamespace(
        team=b, slug=b.slug, key=b_key, project=b_project, member=b_member,
        invitation=b_invitation, endpoint=b_endpoint, delivery=b_delivery, budget=b_budget,
        payment=b_payment, event_ids=("b-event-1", "b-event-2"), hold="b-hold", owner=outsider,
    )  # fmt: skip
    a_objects = SimpleNamespace(team=a, slug=a.slug, budget=a_budget, owner=owner)
    return SimpleNamespace(a=a_objects, b=b_objects, clients=clients)


# ---- what "nothing changed" means ------------------------------------------------------------


def _team_path(model) -> str | None:
    """The lookup from a model to the team owning its rows, or None for untenanted tables."""
    if model is Team:
        return "pk"
    fields = [f for f in model._meta.get_fields() if f.concrete]
    if any(f.name == "team" for f in fields):
        return "team"
    for f in fields:
        related = f.related_model if f.many_to_one else None
        if related is not None and any(g.name == "team" for g in related._meta.get_fields()):
            return f"{f.name}__team"
    return None


def _tenant_models() -> list[tuple[str, type, str, list[str]]]:
    found = []
    for model in apps.get_models():
        path = model._meta.app_label in TENANT_APPS and _team_path(model)
        if path:
            columns = [f.attname for f in model._meta.concrete_fields
                       if f.attname not in VOLATILE_FIELDS]  # fmt: skip
            found.append((model._meta.label, model, path, columns))
    return found


def team_state(team: Team, hold: str | None = None) -> dict[str, object]:
    """Every row of every table that belongs to the team (today's tables and any added later),
    plus its live hold in the gate. One round trip: the tables are read as JSON in one query."""
    parts, params = [], []
    for label, model, path, columns in _tenant_models():
        query = model.objects.filter(**{path: team.pk}).order_by("pk").values(*columns).query
        sql, sql_params = query.sql_with_params()
        parts.append(f"SELECT %s, (SELECT json_agg(x) FROM ({sql}) x)")
        params += [label, *sql_params]
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), params)
        state: dict[str, object] = dict(cursor.fetchall())
    if hold:
        state["gate hold"] = gate_services.gate().hold_get(team_id=team.pk, request_id=hold)
    return state


def _states(w: SimpleNamespace) -> dict[str, dict]:
    return {"B": team_state(w.b.team, w.b.hold), "A": team_state(w.a.team)}


def _changes(before: dict, after: dict) -> list[str]:
    return [
        f"team {team}'s {name}"
        for team in before
        for name in before[team]
        if before[team][name] != after[team].get(name)
    ]


# ---- the API matrix --------------------------------------------------------------------------


@dataclass(frozen=True)
class Try:
    """One attempt on team B's objects, sent by each caller in `who`; its status must be in
    `refused`. `path` and `body` name B's objects as {b.budget.pk}, {b.slug}, {b.hold} ..."""

    method: str
    path: str
    body: dict | None = None
    who: tuple[str, ...] = EVERYONE
    refused: frozenset[int] = REFUSED


@dataclass(frozen=True)
class Row:
    tries: list[Try] = field(default_factory=list)
    own_data: str | None = None  # the OWN_DATA check showing A sees only A's data
    public: bool = False  # no tenant data at all


SESSION_ONLY = frozenset({401, 403})  # a key-only endpoint called by a browser session
BAD_TARGET = frozenset({400, 403, 404, 422})  # a body naming B's object
BUDGET = {"name": "probe", "period": "month", "limit": "1"}

# fmt: off
API: dict[str, Row] = {
    # route: Row(attempts: Try(method, path, body, callers (default: all), refused (403/404)))
    "api/v1/models": Row(public=True, own_data="models"),
    "api/v1/usage": Row(own_data="usage", tries=[
        Try("POST", "/api/v1/usage", {"id": "p1", **USAGE, "project": "{b.project.slug}"},
            KEY, BAD_TARGET),
        Try("POST", "/api/v1/usage", {"id": "p2", **USAGE}, ROLES),
        Try("POST", "/api/v1/usage?team={b.slug}", {"id": "p3", **USAGE}, ROLES),
    ]),
    "api/v1/usage/batch": Row(own_data="usage_batch", tries=[
        Try("POST", "/api/v1/usage/batch?team={b.slug}", {"events": [{"id": "p4", **USAGE}]},
            ROLES),
    ]),
    "api/v1/usage/summary": Row(own_data="usage_summary", tries=[
        Try("GET", "/api/v1/usage/summary?team={b.slug}", None, ROLES),
    ]),
    "api/v1/balance": Row(own_data="balance", tries=[
        Try("GET", "/api/v1/balance?team={b.slug}", None, ROLES),
    ]),
    "api/v1/ledger": Row(own_data="ledger", tries=[
        Try("GET", "/api/v1/ledger?team={b.slug}", None, ROLES),
    ]),
    "api/v1/budgets": Row(own_data="budgets", tries=[
        Try("GET", "/api/v1/budgets?team={b.slug}", None, ROLES),
        Try("POST", "/api/v1/budgets?team={b.slug}", {**BUDGET, "scope": "team"}),
        Try("POST", "/api/v1/budgets", {**BUDGET, "scope": "project", "project": "{b.project.slug}"},
            EVERYONE, BAD_TARGET),
        Try("POST", "/api/v1/budgets", {**BUDGET, "scope": "member", "member": "{b.member.pk}"},
            EVERYONE, BAD_TARGET),
        Try("POST", "/api/v1/budgets", {**BUDGET, "scope": "key", "api_key": "{b.key.pk}"},
            EVERYONE, BAD_TARGET),
    ]),
    "api/v1/budgets/<int:budget_id>": Row(tries=[
        Try("GET", "/api/v1/budgets/{b.budget.pk}"),
        Try("GET", "/api/v1/budgets/{b.budget.pk}?team={b.slug}", None, ROLES),
        Try("PATCH", "/api/v1/budgets/{b.budget.pk}", {"limit": "1"}),
        Try("PATCH", "/api/v1/budgets/{b.budget.pk}?team={b.slug}", {"limit": "1"}, ROLES),
        Try("PATCH", "/api/v1/budgets/{a.budget.pk}",
            {"scope": "project", "project": "{b.project.slug}"}, EVERYONE, BAD_TARGET),
        Try("DELETE", "/api/v1/budgets/{b.budget.pk}"),
        Try("DELETE", "/api/v1/budgets/{b.budget.pk}?team={b.slug}", None, ROLES),
    ]),
    "api/v1/authorize": Row(own_data="authorize", tries=[
        Try("POST", "/api/v1/authorize", {**HOLD, "request_id": "{b.hold}"}, ROLES, SESSION_ONLY),
    ]),
    "api/v1/authorize/<str:request_id>/release": Row(tries=[
        Try("POST", "/api/v1/authorize/{b.hold}/release", None, KEY),
        Try("POST", "/api/v1/authorize/{b.hold}/release", None, ROLES, SESSION_ONLY),
    ]),
    "api/v1/payments": Row(own_data="payments", tries=[
        Try("GET", "/api/v1/payments?team={b.slug}", None, ROLES),
    ]),
    "api/v1/me": Row(own_data="me"),
    "api/v1/audit": Row(own_data="audit", tries=[
        Try("GET", "/api/v1/audit?team={b.slug}", None, ROLES),
    ]),
}
# fmt: on


# ---- the team pages matrix -------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """A team page. `post` is a form that would succeed for an allowed role of the team (None:
    the page takes no POST; it is still sent one). `cross` are forms posted to A's own page that
    name B's objects in the body."""

    post: dict | None = None
    cross: list[dict] = field(default_factory=list)


BUDGET_FORM = {"name": "probe", "period": "month", "limit": "5", "thresholds": "50"}

PAGES: dict[str, Page] = {
    "t/<slug:slug>/": Page(),
    "t/<slug:slug>/alerts/balance/": Page(post={"threshold": "10"}),
    "t/<slug:slug>/members/": Page(),
    "t/<slug:slug>/members/invite/": Page(post={"email": "probe@example.com", "role": "member"}),
    "t/<slug:slug>/members/<int:membership_id>/role/": Page(post={"m{b.member.pk}-role": "admin"}),
    "t/<slug:slug>/invitations/<int:invitation_id>/revoke/": Page(post={}),
    "t/<slug:slug>/keys/": Page(),
    "t/<slug:slug>/keys/new/": Page(
        post={"name": "probe", "scopes": ["usage:read"]},
        cross=[{"name": "probe", "scopes": ["usage:read"], "project": "{b.project.pk}"}],
    ),
    "t/<slug:slug>/keys/<int:key_id>/revoke/": Page(post={}),
    "t/<slug:slug>/projects/": Page(post={"slug": "probe", "name": "Probe"}),
    "t/<slug:slug>/plan/": Page(),
    "t/<slug:slug>/plan/change/": Page(post={"plan": "personal"}),
    "t/<slug:slug>/plan/resume/": Page(post={}),
    "t/<slug:slug>/webhooks/": Page(),
    "t/<slug:slug>/webhooks/new/": Page(
        post={"url": "https://hooks.example.com/probe", "event_types": ["balance.low"]}
    ),
    "t/<slug:slug>/webhooks/<int:endpoint_id>/disable/": Page(post={}),
    "t/<slug:slug>/webhooks/<int:endpoint_id>/enable/": Page(post={}),
    "t/<slug:slug>/webhooks/deliveries/<int:delivery_id>/resend/": Page(post={}),
    "t/<slug:slug>/audit/": Page(),
    "t/<slug:slug>/usage/": Page(),
    "t/<slug:slug>/usage/export.csv": Page(),
    "t/<slug:slug>/ledger/": Page(),
    "t/<slug:slug>/budgets/": Page(),
    "t/<slug:slug>/budgets/new/": Page(
        post={**BUDGET_FORM, "scope": "team"},
        cross=[
            {**BUDGET_FORM, "scope": "project", "project": "{b.project.pk}"},
            {**BUDGET_FORM, "scope": "member", "member": "{b.member.pk}"},
            {**BUDGET_FORM, "scope": "key", "api_key": "{b.key.pk}"},
        ],
    ),
    "t/<slug:slug>/budgets/<int:budget_id>/edit/": Page(post={**BUDGET_FORM, "scope": "team"}),
    "t/<slug:slug>/budgets/<int:budget_id>/delete/": Page(post={}),
    "t/<slug:slug>/billing/": Page(),
    "t/<slug:slug>/billing/topup/": Page(post={"option": "custom", "amount": "25"}),
    "t/<slug:slug>/billing/auto-recharge/": Page(
        post={"enabled": "on", "threshold": "100", "amount": "20", "monthly_cap": "3"}
    ),
    "t/<slug:slug>/billing/payments/<int:payment_id>/finish/": Page(post={}),
}

# Team B's object for each id in a team page's URL.
OBJECT_IDS: dict[str, Callable[[SimpleNamespace], object]] = {
    "membership_id": lambda b: b.member.pk,
    "invitation_id": lambda b: b.invitation.pk,
    "key_id": lambda b: b.key.pk,
    "endpoint_id": lambda b: b.endpoint.pk,
    "delivery_id": lambda b: b.delivery.pk,
    "budget_id": lambda b: b.budget.pk,
    "payment_id": lambda b: b.payment.pk,
}

# Routes outside /t/<slug>/ that reach one team's object by a token in the URL. Sent by every
# role of A, GET and POST: 404, nothing changed.
OTHER_TENANT_ROUTES: dict[str, list[str]] = {
    "billing/test-checkout/<str:session_id>/": [
        "/billing/test-checkout/fake_cs_pay_{b.payment.pk}/",
        "/billing/test-checkout/fake_cs_sub_{b.team.pk}_personal_x/",
    ],
}

# Routes that are not tenant pages, and why.
NOT_TENANT_ROUTES = {
    "": "home: redirects to the caller's own first team",
    "signup/": "account", "login/": "account", "logout/": "account",
    "teams/new/": "creates a new team of the caller",
    "invitations/<str:token>/": "the secret token is the capability (tests/accounts)",
    "webhooks/stripe": "signed by Stripe, no session or key",
    "finance/": "staff only", "finance/ledger.csv": "staff only",
    "finance/reconcile/": "staff only",
    "healthz": "probe", "readyz": "probe", "metrics": "Prometheus, token or allowed IPs",
    "api/schema/": "public schema", "api/docs/": "public docs",
    "pricing/": "public page", "pricing/estimate/": "the public page's calculator",
}  # fmt: skip


# ---- resolving templates ---------------------------------------------------------------------


def _fill(value, w: SimpleNamespace):
    if isinstance(value, str):
        return value.format(a=w.a, b=w.b)
    if isinstance(value, list):
        return [_fill(v, w) for v in value]
    if isinstance(value, dict):
        return {_fill(k, w): _fill(v, w) for k, v in value.items()}
    return value


def _send(client: APIClient, method: str, path: str, body, *, json: bool):
    call = getattr(client, method.lower())
    if body is None:
        return call(path)
    return call(path, body, format="json") if json else call(path, body)


def _routes() -> list[str]:
    """Every route of the URLconf as its pattern text, e.g. 'api/v1/budgets/<int:budget_id>'."""
    found: list[str] = []

    def walk(patterns, prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                found.append(prefix + str(p.pattern))

    walk(get_resolver().url_patterns, "")
    return found


def _page_path(route: str, slug: str, b: SimpleNamespace) -> str:
    def object_id(match: re.Match) -> str:
        return str(OBJECT_IDS[match.group(1)](b))

    path = route.replace("<slug:slug>", slug)
    return "/" + re.sub(r"<(?:int|str|slug):(\w+)>", object_id, path)


# ---- the tests -------------------------------------------------------------------------------


def test_every_route_has_a_matrix_row():
    routes = _routes()
    api = [r for r in routes if r.startswith("api/v1/")]
    pages = [r for r in routes if r.startswith("t/<slug:slug>/")]
    others = [r for r in routes if r not in api and r not in pages and not r.startswith("admin/")]
    missing = [f"API endpoint {r!r}: add a row to API" for r in api if r not in API]
    missing += [f"team page {r!r}: add a row to PAGES" for r in pages if r not in PAGES]
    for r in pages:
        for name in re.findall(r"<(?:int|str|slug):(\w+)>", r):
            if name != "slug" and name not in OBJECT_IDS:
                missing.append(f"team page {r!r}: add how to find team B's {name} to OBJECT_IDS")
    missing += [
        f"route {r!r}: add it to OTHER_TENANT_ROUTES (it reaches a team's object) or to "
        "NOT_TENANT_ROUTES (with the reason)"
        for r in others
        if r not in OTHER_TENANT_ROUTES and r not in NOT_TENANT_ROUTES
    ]
    assert not missing, "Routes without a tenant isolation row:\n" + "\n".join(missing)
    stale = [r for r in [*API, *PAGES, *OTHER_TENANT_ROUTES] if r not in routes]
    assert not stale, f"Matrix rows for routes that no longer exist: {stale}"


class Attempts:
    """Sends attempts and records every status outside its refused set; `route()` compares
    both teams' state before and after all the attempts on one route."""

    def __init__(self, world: SimpleNamespace, capture) -> None:
        self.w, self.capture, self.failures = world, capture, []

    def send(self, caller: str, method: str, path: str, body, *, json: bool,
             refused: frozenset[int]) -> None:  # fmt: skip
        with self.capture(execute=True):  # after-commit hooks run, as in production
            response = _send(self.w.clients[caller], method, path, body, json=json)
        if response.status_code not in refused:
            self.failures.append(
                f"{caller:>7} {method:<6} {path} {body or ''}: {response.status_code}, "
                f"expected one of {sorted(refused)}"
            )

    @contextmanager
    def route(self, route: str):
        before = _states(self.w)
        yield self
        if changed := _changes(before, _states(self.w)):
            self.failures.append(f"{route}: the attempts changed {', '.join(changed)}")

    def assert_none_failed(self) -> None:
        assert not self.failures, f"{len(self.failures)} isolation failures:\n" + "\n".join(
            self.failures
        )


@pytest.mark.django_db
def test_api_attempts_on_team_b_objects_are_refused_and_change_nothing(
    world, django_capture_on_commit_callbacks
):
    attempts = Attempts(world, django_capture_on_commit_callbacks)
    for route, row in API.items():
        with attempts.route(route):
            for attempt in row.tries:
                path, body = _fill(attempt.path, world), _fill(attempt.body, world)
                for caller in attempt.who:
                    attempts.send(caller, attempt.method, path, body, json=True,
                                  refused=attempt.refused)  # fmt: skip
    attempts.assert_none_failed()


@pytest.mark.django_db
def test_team_b_pages_are_404_to_every_role_of_team_a_and_change_nothing(
    world, django_capture_on_commit_callbacks
):
    """Every team page of B, GET and POST (with a form that would succeed for B's owner), by
    every role of A: 404 (the page does not confirm that B exists), nothing changed."""
    attempts = Attempts(world, django_capture_on_commit_callbacks)
    targets = [
        (route, _page_path(route, world.b.slug, world.b), _fill(page.post or {}, world))
        for route, page in PAGES.items()
    ] + [
        (route, _fill(path, world), {})
        for route, paths in OTHER_TENANT_ROUTES.items()
        for path in paths
    ]
    for route, path, form in targets:
        with attempts.route(route):
            for caller in ROLES:
                attempts.send(caller, "GET", path, None, json=False, refused=frozenset({404}))
                attempts.send(caller, "POST", path, form, json=False, refused=frozenset({404}))
    attempts.assert_none_failed()


@pytest.mark.django_db
def test_team_b_objects_through_team_a_pages_are_refused_and_change_nothing(
    world, django_capture_on_commit_callbacks
):
    """A's own pages with B's object in the URL (or in the form): 403 for a role the page is
    not for, 404 for one it is for (405 for a GET of a POST-only page), 400 for a form naming
    B's object; nothing changed."""
    attempts = Attempts(world, django_capture_on_commit_callbacks)
    for route, page in PAGES.items():
        path = _page_path(route, world.a.slug, world.b)
        has_object = any(f":{name}>" in route for name in OBJECT_IDS)
        if not has_object and not page.cross:
            continue
        with attempts.route(route):
            for caller in ROLES:
                if has_object:
                    attempts.send(caller, "GET", path, None, json=False,
                                  refused=frozenset({403, 404, 405}))  # fmt: skip
                    attempts.send(caller, "POST", path, _fill(page.post or {}, world), json=False,
                                  refused=REFUSED)  # fmt: skip
                for form in page.cross:
                    attempts.send(caller, "POST", path, _fill(form, world), json=False,
                                  refused=frozenset({400, 403, 404}))  # fmt: skip
    attempts.assert_none_failed()


# ---- endpoints without an object id: A's callers see A's data only --------------------------


def _json(response, status: int = 200) -> dict:
    assert response.status_code == status, response.content
    return response.json()


def _own_models(w, capture) -> None:
    """Public: the same document for anyone, so it carries no team's data."""
    anonymous = APIClient().get("/api/v1/models").content
    assert w.clients["key"].get("/api/v1/models").content == anonymous
    assert w.clients["owner"].get(f"/api/v1/models?team={w.b.slug}").content == anonymous


def _own_usage(w, capture) -> None:
    """A reuses B's event id and B's hold's request id: A gets a new event of its own (not B's
    replayed result), B's event, ledger and hold are untouched."""
    before = team_state(w.b.team, w.b.hold)
    body = {"id": w.b.event_ids[0], "request_id": w.b.hold, **A_USAGE}
    with capture(execute=True):
        result = _json(w.clients["key"].post("/api/v1/usage", body, format="json"), 201)
    assert result["replayed"] is False
    assert result["balance"]["total"] == format_credits(_balance(w.a.team))
    assert team_state(w.b.team, w.b.hold) == before


def _own_usage_batch(w, capture) -> None:
    before = team_state(w.b.team, w.b.hold)
    events = [{"id": w.b.event_ids[1], "request_id": w.b.hold, **A_USAGE},
              {"id": "batch-2", **A_USAGE, "project": w.b.project.slug}]  # fmt: skip
    with capture(execute=True):
        body = _json(
            w.clients["key"].post("/api/v1/usage/batch", {"events": events}, format="json")
        )
    first, second = body["results"]
    assert first["status"] == 201 and first["replayed"] is False
    assert second["status"] >= 400 and "error" in second  # B's project is unknown to A
    assert team_state(w.b.team, w.b.hold) == before


def _own_usage_summary(w, capture) -> None:
    for caller in EVERYONE:
        suffix = f"&team={w.b.slug}" if caller == "key" else ""  # a key ignores ?team
        groups = _json(w.clients[caller].get(f"/api/v1/usage/summary?group_by=model{suffix}"))
        assert [g["group"] for g in groups["groups"]] == ["gpt-4o"], (caller, groups)


def _balance(team) -> int:
    return TeamBalance.objects.get(team_id=team.pk).balance_nano


def _own_balance(w, capture) -> None:
    assert _balance(w.a.team) != _balance(w.b.team)
    for caller in EVERYONE:
        body = _json(w.clients[caller].get(f"/api/v1/balance?team={w.a.slug}"))
        assert body["total"] == format_credits(_balance(w.a.team)), caller
    body = _json(w.clients["key"].get(f"/api/v1/balance?team={w.b.slug}"))
    assert body["total"] == format_credits(_balance(w.a.team))


def _own_ledger(w, capture) -> None:
    mine = set(LedgerEntry.objects.filter(team=w.a.team).values_list("id", flat=True))
    for caller in EVERYONE:
        suffix = f"&team={w.b.slug}" if caller == "key" else ""
        body = _json(w.clients[caller].get(f"/api/v1/ledger?limit=1000{suffix}"))
        assert {e["id"] for e in body["results"]} == mine, caller


def _own_budgets(w, capture) -> None:
    mine = set(Budget.objects.filter(team=w.a.team).values_list("id", flat=True))
    for caller in EVERYONE:
        suffix = f"?team={w.b.slug}" if caller == "key" else ""
        body = _json(w.clients[caller].get(f"/api/v1/budgets{suffix}"))
        assert {b["id"] for b in body["budgets"]} == mine, caller


def _own_payments(w, capture) -> None:
    mine = set(Payment.objects.filter(team=w.a.team).values_list("id", flat=True))
    assert Payment.objects.filter(team=w.b.team).exists()
    for caller in EVERYONE:
        suffix = f"&team={w.b.slug}" if caller == "key" else ""
        body = _json(w.clients[caller].get(f"/api/v1/payments?limit=500{suffix}"))
        assert {p["id"] for p in body["results"]} == mine, caller


def _own_authorize(w, capture) -> None:
    """A authorizes with B's request id: A gets its own hold; B's hold is untouched."""
    before = team_state(w.b.team, w.b.hold)
    body = {**HOLD, "request_id": w.b.hold}
    decision = _json(w.clients["key"].post("/api/v1/authorize", body, format="json"))
    assert decision["allowed"] is True
    assert gate_services.gate().hold_get(team_id=w.a.team.pk, request_id=w.b.hold) is not None
    assert team_state(w.b.team, w.b.hold) == before


def _own_me(w, capture) -> None:
    assert _json(w.clients["key"].get(f"/api/v1/me?team={w.b.slug}"))["team"]["slug"] == w.a.slug


def _own_audit(w, capture) -> None:
    mine = set(AuditEntry.objects.filter(team=w.a.team).values_list("id", flat=True))
    assert AuditEntry.objects.filter(team=w.b.team).exists()
    for caller in ("owner", "finance"):
        body = _json(w.clients[caller].get("/api/v1/audit?limit=500"))
        assert {e["id"] for e in body["results"]} == mine, caller


OWN_DATA: dict[str, Callable] = {
    "models": _own_models,
    "usage": _own_usage,
    "usage_batch": _own_usage_batch,
    "usage_summary": _own_usage_summary,
    "balance": _own_balance,
    "ledger": _own_ledger,
    "budgets": _own_budgets,
    "payments": _own_payments,
    "authorize": _own_authorize,
    "me": _own_me,
    "audit": _own_audit,
}


def test_every_api_row_is_checked_somehow():
    for route, row in API.items():
        assert row.tries or row.own_data, f"{route}: no attempt and no own-data check"
        assert row.own_data is None or row.own_data in OWN_DATA, route


@pytest.mark.django_db
def test_endpoints_without_an_object_id_answer_with_the_callers_team_only(
    world, django_capture_on_commit_callbacks
):
    failures = []
    for name, check in OWN_DATA.items():
        try:
            check(world, django_capture_on_commit_callbacks)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)


def test_the_hold_of_team_b_is_live_in_the_world(world):
    """The matrix compares B's hold before and after: make sure there is one to compare."""
    assert gate_services.gate().hold_get(team_id=world.b.team.pk, request_id=world.b.hold)
