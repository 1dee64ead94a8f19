"""GET /api/v1/models: public, the seed prices in USD and credits, cached with a strong ETag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pricing import services
from pricing.models import Model
from tests.pricing.seed_data import SEED_PRICES, SEED_TPM

pytestmark = pytest.mark.django_db
URL = "/api/v1/models"


@pytest.fixture
def body(catalog, api_client) -> dict:
    response = api_client.get(URL)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    return response.json()


def _by_name(body: dict) -> dict[str, dict]:
    return {row["name"]: row for row in body["models"]}


def test_lists_every_model_ordered_by_provider_then_name(body):
    assert body["credits_per_usd"] == "180"
    names = {row[1] for row in SEED_PRICES} | {row[1] for row in SEED_TPM}
    assert {row["name"] for row in body["models"]} == names
    keys = [(row["provider"], row["name"]) for row in body["models"]]
    assert keys == sorted(keys)


def test_gpt5_in_usd_and_credits(body):
    gpt5 = _by_name(body)["gpt-5"]
    assert gpt5 == {
        "provider": "openai",
        "name": "gpt-5",
        "display_name": "GPT-5",
        "kind": "chat",
        "priced": True,
        "price_version": gpt5["price_version"],
        "effective_from": "2025-01-01T00:00:00Z",
        "prices_per_1m": {
            "input": "1.25",
            "cache_read": "0.125",
            "output": "10.00",
            "cache_write": None,
        },
        "credits_per_1m": {
            "input": "225",
            "cache_read": "22.5",
            "output": "1800",
            "cache_write": None,
        },
        "unit_prices": {},
        "gpu_second_prices": {},
    }
    assert isinstance(gpt5["price_version"], int)


def test_every_seed_price_in_usd_and_credits(body):
    models = _by_name(body)
    keys = ["input", "cache_read", "output", "cache_write"]
    for provider, name, *prices in SEED_PRICES:
        row = models[name]
        assert (row["provider"], row["priced"]) == (provider, True)
        for key, seed in zip(keys, prices, strict=True):
            if seed is None:
                assert row["prices_per_1m"][key] is None, (name, key)
                assert row["credits_per_1m"][key] is None, (name, key)
            else:
                assert Decimal(row["prices_per_1m"][key]) == Decimal(seed), (name, key)
                assert Decimal(row["credits_per_1m"][key]) == Decimal(seed) * 180, (name, key)
    opus = models["claude-opus-4-1-20250805"]
    assert opus["credits_per_1m"] == {
        "input": "2700",
        "cache_read": "270",
        "output": "13500",
        "cache_write": "3375",
    }
    assert models["gemini-2.0-flash-lite"]["credits_per_1m"]["input"] == "13.5"
    assert models["gpt-5-nano"]["credits_per_1m"]["cache_read"] == "0.9"


def test_unpriced_models_are_listed_with_priced_false(body):
    row = _by_name(body)["gemini-3-pro-image-preview"]
    assert row["kind"] == "image"
    assert row["priced"] is False
    assert row["price_version"] is None and row["effective_from"] is None
    assert row["prices_per_1m"] == dict.fromkeys(["input", "cache_read", "output", "cache_write"])
    assert row["credits_per_1m"] == row["prices_per_1m"]
    assert sum(1 for r in body["models"] if not r["priced"]) == 54 - 32


def test_no_authentication_is_needed_or_checked(catalog, api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-real-key")
    assert api_client.get(URL).status_code == 200


def test_etag_and_if_none_match(catalog, api_client):
    first = api_client.get(URL)
    etag = first["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert "max-age" in first["Cache-Control"]

    not_modified = api_client.get(URL, HTTP_IF_NONE_MATCH=etag)
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified["ETag"] == etag
    assert api_client.get(URL, HTTP_IF_NONE_MATCH=f'"other", W/{etag}').status_code == 304
    assert api_client.get(URL, HTTP_IF_NONE_MATCH="*").status_code == 304
    assert api_client.get(URL, HTTP_IF_NONE_MATCH='"stale"').status_code == 200


def test_a_warm_request_touches_no_table(catalog, api_client):
    api_client.get(URL)
    with CaptureQueriesContext(connection) as queries:
        assert api_client.get(URL).status_code == 200
    assert len(queries) == 0


def test_a_new_price_version_changes_the_etag_and_the_body(catalog, api_client):
    first = api_client.get(URL)
    services.price_version_create(
        model=Model.objects.get(name="gpt-5"),
        effective_from=timezone.now() - timedelta(seconds=1),
        author=None,
        input_per_1m="1.00",
        output_per_1m="9.00",
    )
    second = api_client.get(URL, HTTP_IF_NONE_MATCH=first["ETag"])
    assert second.status_code == 200
    assert second["ETag"] != first["ETag"]
    gpt5 = _by_name(second.json())["gpt-5"]
    assert gpt5["prices_per_1m"]["input"] == "1.00"
    assert gpt5["credits_per_1m"] == {
        "input": "180",
        "cache_read": None,
        "output": "1620",
        "cache_write": None,
    }


def test_a_scheduled_version_shows_once_it_takes_effect(catalog, api_client, monkeypatch):
    start = datetime.now(tz=UTC) + timedelta(days=10)
    services.price_version_create(
        model=Model.objects.get(name="o3"),
        effective_from=start,
        author=None,
        input_per_1m="1.5",
        output_per_1m="6",
    )
    before = api_client.get(URL)
    assert _by_name(before.json())["o3"]["prices_per_1m"]["input"] == "2.00"
    monkeypatch.setattr(timezone, "now", lambda: start + timedelta(seconds=1))
    after = api_client.get(URL)
    assert _by_name(after.json())["o3"]["prices_per_1m"]["input"] == "1.50"
    assert after["ETag"] != before["ETag"]


def test_the_openapi_schema_documents_the_endpoint(catalog):
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/v1/models"]["get"]
    assert operation["operationId"] == "models_list"
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/ModelListOutput"}
    assert "304" in operation["responses"]
    assert "401" not in operation["responses"]
    item = schema["components"]["schemas"]["ModelListItem"]
    assert {"provider", "name", "priced", "credits_per_1m", "unit_prices"} <= set(
        item["properties"]
    )
