"""POST /api/v1/usage and /usage/batch through the real API on PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from ledger.models import LedgerEntry, UsageEvent
from pricing.models import Model, Price
from pricing.services import price_version_create

from .conftest import balance_nano, entries_sum, grant

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(team, key_client):
    grant(team, 100)
    return key_client(team)


def post(client, body, path="/api/v1/usage"):
    return client.post(path, body, format="json")


def gpt5(event_id="e1", **extra):
    body = {
        "id": event_id,
        "model": "gpt-5",
        "usage": {"input_tokens": 1000, "output_tokens": 500, "cache_read_tokens": 200},
    }
    body.update(extra)
    return body


def test_single_event_is_rated_billed_and_reported(client, team):
    response = post(client, gpt5(provider="openai", metadata={"user": "u1"}))
    assert response.status_code == 201, response.content
    body = response.json()
    # 1000 x 1.25 + 500 x 10 + 200 x 0.125 per 1M = 0.006275 USD; x 180 = 1.1295 credits
    assert body["state"] == "billed"
    assert body["cost_usd"] == "0.006275"
    assert body["credits"] == "1.129500000"
    price = Price.objects.get(model__name="gpt-5")
    assert body["price"]["version"] == price.id
    assert body["price"]["prices_per_1m"] == {
        "input": "1.25",
        "cache_read": "0.125",
        "output": "10.00",
    }
    assert body["balance"] == {
        "total": "98.870500000",
        "monthly": "0.000000000",
        "addon": "98.870500000",
        "promotional": "0.000000000",
        "overdraft": "0.000000000",
    }
    event = UsageEvent.objects.get(team=team, event_id="e1")
    assert (event.input_tokens, event.output_tokens, event.cache_read_tokens) == (1000, 500, 200)
    assert event.price_id == price.id and event.metadata == {"user": "u1"}
    entry = LedgerEntry.objects.get(usage_event=event)
    assert entry.amount_nano == -1_129_500_000 and entry.price_id == price.id
    assert entry.credits_per_usd == 180
    assert balance_nano(team) == entries_sum(team)


def test_replay_returns_first_result_and_bills_nothing(client, team):
    first = post(client, gpt5())
    again = post(client, gpt5())
    assert again.status_code == 200
    assert again.json() == {**first.json(), "status": 200, "replayed": True}
    assert LedgerEntry.objects.filter(kind="usage").count() == 1
    assert balance_nano(team) == 98_870_500_000


def test_same_id_different_body_is_409(client):
    post(client, gpt5())
    response = post(client, gpt5(usage={"input_tokens": 1, "output_tokens": 1}))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"
    assert LedgerEntry.objects.filter(kind="usage").count() == 1


@pytest.mark.parametrize(
    ("model", "fmt", "usage", "expected"),
    [
        (
            "gpt-4o",
            "openai.chat",
            {
                "prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
                "prompt_tokens_details": {"cached_tokens": 200, "audio_tokens": None},
                "completion_tokens_details": {
                    "reasoning_tokens": 100, "audio_tokens": None,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
                },
            },
            (1000, 300, 200, 0),
        ),
        (
            "o3",
            "openai.responses",
            {
                "input_tokens": 5000, "input_tokens_details": {"cached_tokens": 4000},
                "output_tokens": 900, "output_tokens_details": {"reasoning_tokens": 700},
                "total_tokens": 5900,
            },
            (1000, 900, 4000, 0),
        ),
        (
            "claude-sonnet-4-5-20250929",
            "anthropic",
            {
                "input_tokens": 50, "output_tokens": 400, "cache_creation_input_tokens": 1000,
                "cache_read_input_tokens": 3000, "server_tool_use": None, "service_tier": "standard",
                "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 0},
            },
            (50, 400, 3000, 1000),
        ),
        (
            "gemini-2.5-pro",
            "gemini",
            {
                "promptTokenCount": 1000, "candidatesTokenCount": 200, "cachedContentTokenCount": 300,
                "thoughtsTokenCount": 50, "totalTokenCount": 1550, "trafficType": None,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1000}],
            },
            (700, 250, 300, 0),
        ),
        (
            "gemini-2.5-flash",
            "gemini",
            {
                "prompt_token_count": 80, "candidates_token_count": 20, "cached_content_token_count": None,
                "thoughts_token_count": 10, "total_token_count": 110,
            },
            (80, 30, 0, 0),
        ),
    ],
)  # fmt: skip
def test_provider_native_usage_objects(client, team, model, fmt, usage, expected):
    response = post(client, {"id": f"n-{fmt}", "model": model, "usage_format": fmt, "usage": usage})
    assert response.status_code == 201, response.content
    event = UsageEvent.objects.get(team=team, event_id=f"n-{fmt}")
    tokens = (
        event.input_tokens,
        event.output_tokens,
        event.cache_read_tokens,
        event.cache_write_tokens,
    )
    assert tokens == expected
    assert event.raw_usage == usage
    assert event.usage_format == fmt


def test_anthropic_cache_tokens_are_priced_by_type(client):
    body = {
        "id": "a1", "model": "claude-sonnet-4-5-20250929", "usage_format": "anthropic",
        "usage": {"input_tokens": 1_000_000, "output_tokens": 0, "cache_read_input_tokens": 1_000_000,
                  "cache_creation_input_tokens": 1_000_000},
    }  # fmt: skip
    # 3.00 + 0.30 + 3.75 = 7.05 USD -> 1269 credits
    assert post(client, body).json()["credits"] == "1269.000000000"


def test_server_errors_are_recorded_not_billed(client, team):
    response = post(client, gpt5(status=503))
    assert response.status_code == 201
    assert response.json()["state"] == "not_billed"
    assert response.json()["credits"] == "0.000000000"
    assert UsageEvent.objects.get(event_id="e1").state == "not_billed"
    assert not LedgerEntry.objects.filter(kind="usage").exists()
    assert balance_nano(team) == 100 * 10**9


def test_batch_with_good_and_bad_events(client, team):
    events = [
        gpt5("b1"),
        gpt5("b2"),
        gpt5("b3", usage={"input_tokens": -5, "output_tokens": 1}),
        gpt5("b4", model="gpt5"),
        gpt5("b1"),  # replay inside the batch
        gpt5("b5", status=500),
    ]
    response = post(client, {"events": events}, "/api/v1/usage/batch")
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 201, 400, 422, 200, 201]
    assert results[2]["error"]["fields"] == {
        "usage.input_tokens": ["usage.input_tokens must not be negative."]
    }
    assert "gpt-5" in results[3]["error"]["suggestions"]
    assert response.json()["summary"] == {"created": 3, "replayed": 1, "failed": 2}
    assert set(UsageEvent.objects.values_list("event_id", flat=True)) == {"b1", "b2", "b5"}
    assert LedgerEntry.objects.filter(kind="usage").count() == 2
    assert results[1]["balance"]["total"] == "97.741000000"
    assert balance_nano(team) == entries_sum(team) == 97_741_000_000


def test_unknown_model_is_422_with_suggestions(client):
    response = post(client, gpt5(model="claude-sonet-4-5"))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unknown_model"
    assert "claude-sonnet-4-5" in error["suggestions"]
    assert "Did you mean" in error["message"]


def test_provider_mismatch_is_refused(client):
    response = post(client, gpt5(provider="anthropic"))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "provider_mismatch"


def _old(days):
    return (timezone.now() - timedelta(days=days)).isoformat()


BAD = [
    ("negative count", gpt5(usage={"input_tokens": -1, "output_tokens": 0}), "usage.input_tokens"),
    ("fractional count", gpt5(usage={"input_tokens": 1.5, "output_tokens": 0}), "usage.input_tokens"),
    ("string count", gpt5(usage={"input_tokens": "10", "output_tokens": 0}), "usage.input_tokens"),
    ("huge count", gpt5(usage={"input_tokens": 10**10 + 1, "output_tokens": 0}), "usage.input_tokens"),
    ("missing id", {"model": "gpt-5", "usage": {"input_tokens": 1}}, "id"),
    ("long id", gpt5("x" * 129), "id"),
    ("id not a string", gpt5(123), "id"),
    ("missing model", {"id": "m", "usage": {"input_tokens": 1}}, "model"),
    ("unknown field", gpt5(colour="red"), "colour"),
    ("unknown usage key", gpt5(usage={"input_tokens": 1, "prompt_tokens": 2}), "usage.prompt_tokens"),
    ("usage and units", gpt5(units={"images": 1}), "usage"),
    ("neither usage nor units", {"id": "n", "model": "gpt-5"}, "usage"),
    ("unknown usage_format", gpt5(usage_format="mistral"), "usage_format"),
    ("metadata too big", gpt5(metadata={"x": "y" * 5000}), "metadata"),
    ("metadata not an object", gpt5(metadata=[1]), "metadata"),
    ("timestamp too old", gpt5(timestamp=_old(36)), "timestamp"),
    ("timestamp in the future", gpt5(timestamp=_old(-1)), "timestamp"),
    ("timestamp without zone", gpt5(timestamp="2025-06-01T12:00:00"), "timestamp"),
    ("timestamp garbage", gpt5(timestamp="yesterday"), "timestamp"),
    ("status out of range", gpt5(status=99), "status"),
    ("status not a number", gpt5(status="200"), "status"),
    ("cached above prompt", gpt5(usage_format="openai.chat", usage={"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 11}}), "usage.prompt_tokens_details.cached_tokens"),
    ("unknown unit", {"id": "u", "model": "gpt-5", "units": {"tokens": 1}}, "units.tokens"),
    ("gpu seconds without type", {"id": "u", "model": "gpt-5", "units": {"gpu_seconds": 3}}, "units.gpu_type"),
    ("unknown project", gpt5(project="nope"), "project"),
    ("body is a list", [gpt5()], "non_field_errors"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_4xx_and_writes_nothing(client, team, case, body, field):
    entries = LedgerEntry.objects.count()
    response = post(client, body)
    assert 400 <= response.status_code < 500, response.content
    error = response.json()["error"]
    assert set(error) >= {"code", "message", "fields"}
    assert field in error["fields"], error
    assert error["message"]
    assert UsageEvent.objects.count() == 0
    assert LedgerEntry.objects.count() == entries


def test_malformed_json_and_oversized_batch(client):
    response = client.post("/api/v1/usage", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
    response = post(client, {"events": [gpt5(f"e{i}") for i in range(1001)]}, "/api/v1/usage/batch")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "batch_too_large"
    response = post(client, {"events": "nope"}, "/api/v1/usage/batch")
    assert response.status_code == 400
    assert UsageEvent.objects.count() == 0


def test_unpriced_model_is_stored_unrated_then_rerated(client, team):
    model = Model.objects.get(name="gpt-5.1")
    assert not Price.objects.filter(model=model).exists()
    at = timezone.now() - timedelta(hours=1)
    response = post(client, gpt5("u1", model="gpt-5.1", timestamp=at.isoformat()))
    assert response.status_code == 201
    assert response.json()["state"] == "unrated"
    assert response.json()["credits"] is None
    assert not LedgerEntry.objects.filter(kind="usage").exists()

    call_command("rerate")  # still no price: nothing happens
    assert UsageEvent.objects.get(event_id="u1").state == "unrated"

    price_version_create(model=model, effective_from=at - timedelta(days=1), author=None,
                         input_per_1m="1.25", cache_read_per_1m="0.125", output_per_1m="10.00")  # fmt: skip
    call_command("rerate")
    call_command("rerate")  # idempotent
    event = UsageEvent.objects.get(event_id="u1")
    assert event.state == "billed"
    assert event.credits_nano == 1_129_500_000
    assert LedgerEntry.objects.get(usage_event=event).amount_nano == -1_129_500_000
    assert balance_nano(team) == entries_sum(team) == 98_870_500_000
    # A replay now reports the billed result.
    assert (
        post(client, gpt5("u1", model="gpt-5.1", timestamp=at.isoformat())).json()["state"]
        == "billed"
    )


def test_units_on_a_token_model_are_unrated(client):
    response = post(client, {"id": "img", "model": "gpt-5", "units": {"images": 2}})
    assert response.status_code == 201
    assert response.json()["state"] == "unrated"


def test_event_timestamp_picks_the_price_version(client, team):
    model = Model.objects.get(name="gpt-5")
    now = timezone.now()
    price_version_create(model=model, effective_from=now - timedelta(hours=1), author=None,
                         input_per_1m="2.50", cache_read_per_1m="0.25", output_per_1m="20.00")  # fmt: skip
    old = post(client, gpt5("old", timestamp=(now - timedelta(hours=2)).isoformat())).json()
    new = post(client, gpt5("new", timestamp=(now - timedelta(minutes=5)).isoformat())).json()
    assert old["credits"] == "1.129500000"
    assert new["credits"] == "2.259000000"
    assert old["price"]["version"] != new["price"]["version"]


def test_usage_below_zero_is_still_recorded(client, team):
    big = gpt5("big", usage={"input_tokens": 0, "output_tokens": 100_000})  # 1 USD = 180 credits
    response = post(client, big)
    assert response.status_code == 201
    assert response.json()["balance"]["total"] == "-80.000000000"
    assert response.json()["balance"]["overdraft"] == "80.000000000"


def test_key_bound_to_a_project(team, key_client):
    from accounts.services import project_create

    web = project_create(team=team, slug="web")
    project_create(team=team, slug="batch")
    client = key_client(team, project=web)
    assert post(client, gpt5("p1")).status_code == 201
    assert UsageEvent.objects.get(event_id="p1").project_id == web.id
    response = post(client, gpt5("p2", project="batch"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "project_forbidden"


def test_scopes_are_enforced(team, key_client):
    reader = key_client(team, scopes=["usage:read"])
    writer = key_client(team, scopes=["usage:write"])
    assert post(reader, gpt5()).status_code == 403
    assert writer.get("/api/v1/balance").status_code == 403
    assert post(writer, gpt5()).status_code == 201
    assert reader.get("/api/v1/balance").status_code == 200


def test_a_key_of_team_a_cannot_read_or_write_team_b(team, outsider_team, key_client):
    grant(team, 100)
    grant(outsider_team, 50)
    a, b = key_client(team), key_client(outsider_team)
    assert post(a, gpt5("shared-id")).status_code == 201
    assert post(b, gpt5("shared-id")).status_code == 201  # ids are per team: no cross-team replay
    assert UsageEvent.objects.filter(event_id="shared-id").count() == 2
    assert b.get("/api/v1/balance").json()["total"] == "48.870500000"
    b_refs = {e["reference"] for e in b.get("/api/v1/ledger").json()["results"]}
    a_refs = {e["reference"] for e in a.get("/api/v1/ledger").json()["results"]}
    assert a_refs.isdisjoint(b_refs)
    ours = LedgerEntry.objects.filter(team=team).values_list("reference", flat=True)
    assert a_refs == set(ours)
    summary = b.get("/api/v1/usage/summary").json()["groups"]
    assert [g["events"] for g in summary] == [1]
    # Naming team B's project from team A's key finds nothing.
    from accounts.services import project_create

    project_create(team=outsider_team, slug="b-only")
    assert post(a, gpt5("x", project="b-only")).status_code == 400


def test_reads_balance_ledger_and_summary(client, team):
    for i in range(3):
        post(client, gpt5(f"r{i}"))
    post(client, gpt5("r-claude", model="claude-3-haiku-20240307"))
    balance = client.get("/api/v1/balance").json()
    assert balance["lots"][0]["source"] == "addon"
    assert balance["total"] == balance["addon"]

    page = client.get("/api/v1/ledger?limit=2&kind=usage").json()
    assert len(page["results"]) == 2 and page["next"]
    rest = client.get(page["next"]).json()
    assert len(rest["results"]) == 2 and all(e["kind"] == "usage" for e in rest["results"])
    assert client.get("/api/v1/ledger?kind=bogus").status_code == 400
    assert client.get("/api/v1/ledger?from=yesterday").status_code == 400

    by_model = client.get("/api/v1/usage/summary?group_by=model").json()["groups"]
    assert {g["group"]: g["events"] for g in by_model} == {"claude-3-haiku-20240307": 1, "gpt-5": 3}
    gpt = next(g for g in by_model if g["group"] == "gpt-5")
    assert gpt["credits"] == "3.388500000"
    assert gpt["input_tokens"] == 3000
    by_day = client.get("/api/v1/usage/summary?group_by=day").json()["groups"]
    assert sum(g["events"] for g in by_day) == 4
    assert client.get("/api/v1/usage/summary?group_by=colour").status_code == 400


def test_body_json_roundtrip_keeps_decimal_strings(client):
    response = post(client, gpt5())
    assert isinstance(json.loads(response.content)["credits"], str)


def test_a_batch_stores_exactly_what_single_events_store(team_factory, key_client):
    """Batches travel to PostgreSQL as one JSON text (ledger/bulk.py), single events as plain
    values: both must store the same rows, to the last digit and character."""
    at = (timezone.now() - timedelta(minutes=3)).replace(microsecond=123456)
    events = [
        gpt5('q"uo\\te\'-1', timestamp=at.isoformat(), metadata={"ü": "naïve ✓", "n": None}),
        {"id": "anth-2", "model": "claude-sonnet-4-5-20250929", "usage_format": "anthropic",
         "usage": {"input_tokens": 3, "output_tokens": 7, "cache_read_input_tokens": 11,
                   "cache_creation_input_tokens": 13, "service_tier": None}},
        {"id": "gem-3", "model": "gemini-2.5-flash", "usage_format": "gemini", "status": 200,
         "usage": {"promptTokenCount": 999_999, "candidatesTokenCount": 1,
                   "thoughtsTokenCount": 17, "cachedContentTokenCount": 5}},
    ]  # fmt: skip
    for event in events[1:]:
        event["timestamp"] = (at - timedelta(seconds=1)).isoformat()  # else "now": differs
    one, many = team_factory(plan="pro"), team_factory(plan="pro")
    grant(one, 100)
    grant(many, 100)
    for event in events:
        assert post(key_client(one), event).status_code == 201
    batch = post(key_client(many), {"events": events}, "/api/v1/usage/batch")
    assert [r["status"] for r in batch.json()["results"]] == [201, 201, 201]

    skip = {"id", "team", "api_key", "received_at"}
    fields = [f.attname for f in UsageEvent._meta.concrete_fields if f.name not in skip]

    def stored(team):
        return list(UsageEvent.objects.filter(team=team).order_by("event_id").values(*fields))

    assert stored(one) == stored(many)
    assert stored(many)[2]["occurred_at"] == at
    entry = ["amount_nano", "balance_after_nano", "buckets_after", "kind", "price_id"]
    assert list(
        LedgerEntry.objects.filter(team=one, kind="usage").order_by("id").values(*entry)
    ) == list(LedgerEntry.objects.filter(team=many, kind="usage").order_by("id").values(*entry))


def test_a_full_batch_larger_than_djangos_body_cap_is_accepted(client, team):
    """1,000 events with 3 KiB of metadata each (about 3.4 MB) are a valid batch."""
    events = [gpt5(f"big-{i}", metadata={"note": "x" * 3000}) for i in range(1000)]
    body = json.dumps({"events": events})
    assert len(body) > 2_621_440  # Django's DATA_UPLOAD_MAX_MEMORY_SIZE
    response = client.post("/api/v1/usage/batch", data=body, content_type="application/json")
    assert response.status_code == 200, response.content[:300]
    assert response.json()["summary"] == {"created": 1000, "replayed": 0, "failed": 0}
