"""Schemathesis against the app's own OpenAPI schema (/api/schema/), in-process over WSGI.

Every documented operation is called with generated input (valid and invalid, Schemathesis's
positive and negative modes), as one of several callers: API keys (every scope) of two teams,
and a logged-in owner of the first team (the budget writes and the audit log take a session).
Path parameters are random or the ids of real objects of either team. Each response must not
be a 5xx and must conform to the schema: a documented status code, content type, headers and
body. Before fuzzing an operation, hand-written valid requests (`World.seeds`) must succeed, so
the happy path is proven to be reached and its responses checked too.

Hypothesis drives `operation.as_strategy(...)` directly rather than Schemathesis's pytest
integration (`schemathesis.pytest.from_fixture`), which fails on pytest 9.2 (it sets
`Function._nodeid`); every operation is fuzzed and all failures are reported together.

Bounded: FUZZ_MAX_EXAMPLES examples per operation (default 25), derandomized (the same cases on
every run), no shrinking; about 20 s on 2 CPUs. It runs in `make test`; deselect it with
`-m "not fuzz"`. New endpoints are fuzzed as soon as they are in the schema.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from django.middleware.csrf import CSRF_ALLOWED_CHARS
from django.test import Client
from django.utils.crypto import get_random_string
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.models import Role
from ledger.services.budgets import budget_create
from pricing.money import NANO

pytestmark = pytest.mark.fuzz

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@dataclass
class Caller:
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)

    def call(self, case):
        return case.call_and_validate(headers=self.headers, cookies=self.cookies, checks=CHECKS)


@dataclass
class World:
    callers: dict[str, Caller]
    path_values: dict[str, list]  # real values for path parameters, by parameter name
    seeds: dict[str, list[tuple[str, dict]]]  # operation label -> [(caller, Case kwargs)]


@pytest.fixture
def world(transactional_db, team_factory, key_factory) -> World:
    team_a = team_factory(plan="pro", name="Fuzz A")
    team_b = team_factory(plan="pro", name="Fuzz B")
    _, key_a = key_factory(team_a)
    _, key_b = key_factory(team_b)
    owner_a = team_a.memberships.get(role=Role.OWNER).user
    owner_b = team_b.memberships.get(role=Role.OWNER).user
    budgets = {
        name: budget_create(team=team, actor=actor, name=name, scope="team", period="month",
                            limit_nano=100 * NANO, thresholds=[50], hard_cap=False)
        for name, team, actor in [("keep-a", team_a, owner_a), ("drop-a", team_a, owner_a),
                                  ("keep-b", team_b, owner_b)]
    }  # fmt: skip
    browser = Client()
    browser.force_login(owner_a)
    csrf = get_random_string(32, CSRF_ALLOWED_CHARS)
    usage = {"id": "fuzz-seed-1", "model": "gpt-5",
             "usage": {"input_tokens": 1000, "output_tokens": 100}}  # fmt: skip
    hold = {"model": "gpt-5", "estimated_input_tokens": 100, "max_output_tokens": 100}
    json = {"media_type": "application/json"}
    return World(
        callers={
            "key_a": Caller(headers={"Authorization": f"Bearer {key_a}"}),
            "key_b": Caller(headers={"Authorization": f"Bearer {key_b}"}),
            "session_a": Caller(
                headers={"X-CSRFToken": csrf},
                cookies={"sessionid": browser.cookies["sessionid"].value, "csrftoken": csrf},
            ),
        },
        path_values={
            "budget_id": [b.id for b in budgets.values()],
            "request_id": ["fuzz-hold-a", "fuzz-hold-b"],
        },
        seeds={
            "GET /api/v1/audit": [("session_a", {})],
            "POST /api/v1/authorize": [
                ("key_a", {"body": {**hold, "request_id": "fuzz-hold-a"}, **json}),
                ("key_b", {"body": {**hold, "request_id": "fuzz-hold-b"}, **json}),
                ("key_a", {"body": {**hold, "request_id": "fuzz-hold-a2"}, **json}),
            ],
            "POST /api/v1/authorize/{request_id}/release": [
                ("key_a", {"path_parameters": {"request_id": "fuzz-hold-a2"}})
            ],
            "GET /api/v1/balance": [("key_a", {}), ("session_a", {})],
            "GET /api/v1/budgets": [("key_b", {}), ("session_a", {})],
            "POST /api/v1/budgets": [
                (
                    "session_a",
                    {
                        "body": {
                            "name": "Seeded",
                            "scope": "team",
                            "period": "day",
                            "limit": "12.5",
                            "thresholds": [80],
                        },
                        **json,
                    },
                ),
            ],
            "GET /api/v1/budgets/{budget_id}": [
                ("key_a", {"path_parameters": {"budget_id": budgets["keep-a"].id}})
            ],
            "PATCH /api/v1/budgets/{budget_id}": [
                (
                    "session_a",
                    {
                        "path_parameters": {"budget_id": budgets["keep-a"].id},
                        "body": {"limit": "300", "hard_cap": True},
                        **json,
                    },
                ),
            ],
            "DELETE /api/v1/budgets/{budget_id}": [
                ("session_a", {"path_parameters": {"budget_id": budgets["drop-a"].id}})
            ],
            "GET /api/v1/ledger": [("key_a", {"query": {"kind": "plan_grant", "limit": 5}})],
            "GET /api/v1/me": [("key_b", {})],
            "GET /api/v1/models": [("key_a", {})],
            "POST /api/v1/usage": [("key_a", {"body": usage, **json})],
            "POST /api/v1/usage/batch": [
                ("key_b", {"body": {"events": [usage, {**usage, "id": "fuzz-seed-2"}]}, **json})
            ],
            "GET /api/v1/usage/summary": [("key_a", {"query": {"group_by": "day"}})],
        },
    )


def _cases(operation, world: World):
    """Generated cases, plus the same with each path parameter set to a real object's id."""
    strategies = [operation.as_strategy(mode) for mode in GenerationMode]
    names = [p.name for p in operation.path_parameters]
    if names and all(name in world.path_values for name in names):
        for values in zip(*(world.path_values[name] for name in names), strict=False):
            fixed = dict(zip(names, values, strict=True))
            strategies += [
                operation.as_strategy(mode, path_parameters=fixed) for mode in GenerationMode
            ]
    return st.one_of(strategies)


def _fuzz(operation, world: World) -> None:
    for caller, kwargs in world.seeds.get(operation.label, []):
        response = world.callers[caller].call(operation.Case(**kwargs))
        assert response.status_code < 300, (operation.label, caller, kwargs, response.text)

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_cases(operation, world), caller=st.sampled_from(sorted(world.callers)))
    def run(case, caller):
        world.callers[caller].call(case)

    run()


def test_every_operation_survives_generated_input(world):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    failures, labels = [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        try:
            _fuzz(operation, world)
        except Exception as exc:  # fuzz every operation, then report every failure
            failures.append(f"{operation.label}:\n{exc}")
    assert "POST /api/v1/usage" in labels and "POST /api/v1/authorize" in labels
    assert not failures, "\n\n".join(failures)
