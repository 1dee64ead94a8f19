"""loadcatalog: the seed prices, models and plans, idempotence, and other catalog files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Plan
from pricing.models import Model, Price, Provider
from ratelimits.models import TpmLimit
from tests.pricing.seed_data import SEED_PRICES, SEED_TPM

pytestmark = pytest.mark.django_db

SEED_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
PLAN_FIELDS = [
    "code",
    "name",
    "monthly_credits",
    "monthly_price_cents",
    "price_per_member",
    "member_limit",
    "can_purchase_credits",
    "addon_pack_credits",
    "addon_pack_price_cents",
    "auto_recharge_pack_credits",
    "auto_recharge_pack_price_cents",
    "sort_order",
]


def _load(*args: str) -> str:
    out = StringIO()
    call_command("loadcatalog", *args, stdout=out, stderr=out)
    return out.getvalue()


def test_the_seed_price_table_is_loaded_exactly(catalog):
    assert Price.objects.count() == 32
    for provider, name, input_, cache_read, output, cache_write in SEED_PRICES:
        price = Price.objects.select_related("model__provider").get(model__name=name)
        assert price.model.provider.slug == provider
        assert price.effective_from == SEED_EPOCH
        assert price.input_per_1m == Decimal(input_), name
        assert price.output_per_1m == Decimal(output), name
        assert price.cache_read_per_1m == (None if cache_read is None else Decimal(cache_read))
        assert price.cache_write_per_1m == (None if cache_write is None else Decimal(cache_write))
        assert price.per_image is None and price.gpu_second_prices == {}


def test_every_model_of_both_seeds_exists_priced_or_not(catalog):
    names = {row[1] for row in SEED_PRICES} | {row[1] for row in SEED_TPM}
    assert len(names) == 54
    assert set(Model.objects.values_list("name", flat=True)) == names
    for provider, name, *_ in [*SEED_PRICES, *SEED_TPM]:
        assert Model.objects.get(name=name).provider.slug == provider
    priced = set(Price.objects.values_list("model__name", flat=True))
    assert priced == {row[1] for row in SEED_PRICES}
    # In seed 001 only: listed and rate-limited, but without a price (usage is kept unrated).
    for unpriced in ["gpt-5-pro", "gpt-5.2", "claude-haiku-4-5", "gemini-3-pro-preview"]:
        assert unpriced not in priced
    # In seed 000 only: priced, no TPM row.
    for name in ["claude-3-7-sonnet-latest", "claude-3-5-haiku-latest"]:
        assert name in priced and not TpmLimit.objects.filter(model__name=name).exists()


def test_providers_kinds_and_display_names(catalog):
    assert dict(Provider.objects.values_list("slug", "name")) == {
        "openai": "OpenAI",
        "anthropic": "Anthropic",
        "gemini": "Google Gemini",
    }
    images = set(Model.objects.filter(kind="image").values_list("name", flat=True))
    assert images == {
        "gemini-2.5-flash-image",
        "gemini-2.5-flash-image-preview",
        "gemini-3-pro-image-preview",
    }
    assert set(Model.objects.exclude(kind="image").values_list("kind", flat=True)) == {"chat"}
    assert not Model.objects.filter(display_name="").exists()
    assert Model.objects.get(name="gpt-5").display_name == "GPT-5"
    assert Model.objects.get(name="claude-opus-4-1-20250805").display_name == (
        "Claude Opus 4.1 (2025-08-05)"
    )


def test_plans_are_the_seed_facts(catalog):
    plans = [
        dict(zip(PLAN_FIELDS, row, strict=True)) for row in Plan.objects.values_list(*PLAN_FIELDS)
    ]
    assert plans == [
        {
            "code": "free",
            "name": "Free",
            "monthly_credits": 300,
            "monthly_price_cents": 0,
            "price_per_member": False,
            "member_limit": 1,
            "can_purchase_credits": False,
            "addon_pack_credits": None,
            "addon_pack_price_cents": None,
            "auto_recharge_pack_credits": None,
            "auto_recharge_pack_price_cents": None,
            "sort_order": 0,
        },
        {
            "code": "personal",
            "name": "Personal",
            "monthly_credits": 1000,
            "monthly_price_cents": 900,
            "price_per_member": False,
            "member_limit": None,
            "can_purchase_credits": True,
            "addon_pack_credits": 500,
            "addon_pack_price_cents": 500,
            "auto_recharge_pack_credits": 200,
            "auto_recharge_pack_price_cents": 500,
            "sort_order": 1,
        },
        {
            "code": "pro",
            "name": "Pro",
            "monthly_credits": 5000,
            "monthly_price_cents": 2000,
            "price_per_member": True,
            "member_limit": None,
            "can_purchase_credits": True,
            "addon_pack_credits": 1500,
            "addon_pack_price_cents": 1000,
            "auto_recharge_pack_credits": 1000,
            "auto_recharge_pack_price_cents": 2000,
            "sort_order": 2,
        },
    ]


def _snapshot() -> dict:
    return {
        "plans": list(Plan.objects.order_by("pk").values()),
        "providers": list(Provider.objects.order_by("pk").values()),
        "models": list(Model.objects.order_by("pk").values()),
        "prices": list(Price.objects.order_by("pk").values()),
        "tpm": list(TpmLimit.objects.order_by("pk").values()),
    }


def test_the_first_run_reports_what_it_created_and_the_second_creates_nothing(db):
    output = _load()
    assert "created 3 plans, 3 providers, 54 models, 32 price versions, 156 TPM limits" in output
    before = _snapshot()
    assert "already loaded, nothing to create" in _load()
    assert _snapshot() == before


def test_an_edited_plan_or_model_is_never_overwritten(catalog):
    Plan.objects.filter(code="pro").update(monthly_credits=7000, name="Pro (2026)")
    Model.objects.filter(name="gpt-5").update(display_name="GPT-5 (renamed)")
    TpmLimit.objects.filter(plan__code="free", model__name="gpt-5").update(tokens_per_minute=1)
    assert "nothing to create" in _load()
    assert Plan.objects.get(code="pro").monthly_credits == 7000
    assert Model.objects.get(name="gpt-5").display_name == "GPT-5 (renamed)"
    assert TpmLimit.objects.get(plan__code="free", model__name="gpt-5").tokens_per_minute == 1


def test_a_deleted_tpm_limit_is_created_again(catalog):
    TpmLimit.objects.filter(model__name="o3").delete()
    assert "created 0 plans, 0 providers, 0 models, 0 price versions, 3 TPM limits" in _load()


def _write(tmp_path, **catalog) -> str:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"format": 1, **catalog}))
    return str(path)


def test_another_catalog_file_adds_models_and_versions(catalog, tmp_path):
    path = _write(
        tmp_path,
        providers=[{"slug": "mistral", "name": "Mistral"}],
        models=[{"provider": "mistral", "name": "mistral-large", "display_name": "Mistral Large"}],
        prices=[
            {"model": "mistral-large", "effective_from": "2026-01-01T00:00:00Z",
             "input_per_1m": "2.00", "output_per_1m": "6.00"},
            {"model": "gpt-5", "effective_from": "2026-06-01T00:00:00Z",
             "input_per_1m": "1.00", "cache_read_per_1m": "0.10", "output_per_1m": "8.00"},
        ],
    )  # fmt: skip
    output = _load("--file", path)
    assert "created 0 plans, 1 providers, 1 models, 2 price versions, 0 TPM limits" in output
    versions = list(Price.objects.filter(model__name="gpt-5").order_by("effective_from"))
    assert [v.output_per_1m for v in versions] == [Decimal("10"), Decimal("8")]
    assert "nothing to create" in _load("--file", path)


def test_a_file_version_earlier_than_the_latest_is_skipped_with_a_warning(catalog, tmp_path):
    path = _write(
        tmp_path,
        prices=[{"model": "gpt-5", "effective_from": "2024-06-01T00:00:00Z",
                 "input_per_1m": "9.99", "output_per_1m": "9.99"}],
    )  # fmt: skip
    output = _load("--file", path)
    assert "warning: price of gpt-5 skipped" in output
    assert "nothing to create" in output
    assert Price.objects.filter(model__name="gpt-5").count() == 1


def test_a_stored_version_that_differs_from_the_file_is_left_alone(catalog, tmp_path):
    path = _write(
        tmp_path,
        prices=[{"model": "gpt-5", "effective_from": "2025-01-01T00:00:00Z",
                 "input_per_1m": "9.99", "output_per_1m": "9.99"}],
    )  # fmt: skip
    assert "stored version differs from the file" in _load("--file", path)
    assert Price.objects.get(model__name="gpt-5").input_per_1m == Decimal("1.25")


@pytest.mark.parametrize(
    ("catalog_data", "message"),
    [
        ({"format": 2}, "unsupported catalog format"),
        (
            {"format": 1, "prices": [{"model": "nope", "effective_from": "2026-01-01T00:00:00Z"}]},
            "unknown model 'nope'",
        ),
        (
            {"format": 1, "prices": [{"model": "gpt-5", "effective_from": "2027-01-01T00:00:00Z",
                                      "input_per_1m": "-1"}]},
            "must not be negative",
        ),
        (
            {"format": 1, "prices": [{"model": "gpt-5", "effective_from": "2027-01-01T00:00:00Z",
                                      "input_per_1m": "0.0000001"}]},
            "more than 6 decimal places",
        ),
        ({"format": 1, "models": [{"name": "x"}]}, "lacks the key"),
    ],
)  # fmt: skip
def test_a_bad_catalog_file_is_refused_and_nothing_is_written(
    catalog, tmp_path, catalog_data, message
):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(catalog_data))
    before = _snapshot()
    with pytest.raises(CommandError, match=message):
        _load("--file", str(path))
    assert _snapshot() == before


def test_a_missing_or_broken_file_is_a_command_error(db, tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        _load("--file", str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(CommandError, match="not valid JSON"):
        _load("--file", str(broken))
