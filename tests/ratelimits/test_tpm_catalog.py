"""The catalog's TPM limits: seed 001's table, for every model and all three plans."""

from __future__ import annotations

import pytest

from ratelimits.models import TpmLimit
from tests.pricing.seed_data import SEED_TPM

pytestmark = pytest.mark.django_db


def _limits() -> dict[tuple[str, str], int]:
    return {
        (plan, model): tpm
        for plan, model, tpm in TpmLimit.objects.values_list(
            "plan__code", "model__name", "tokens_per_minute"
        )
    }


def test_every_model_of_the_tpm_table_has_a_limit_for_every_plan(catalog):
    limits = _limits()
    assert len(SEED_TPM) == 52
    assert len(limits) == 52 * 3
    for provider, model, free, personal, pro in SEED_TPM:
        assert limits[("free", model)] == free, model
        assert limits[("personal", model)] == personal, model
        assert limits[("pro", model)] == pro, model
        assert TpmLimit.objects.filter(model__name=model).first().model.provider.slug == provider


@pytest.mark.parametrize(
    ("model", "free", "personal", "pro"),
    [
        # Read straight off seed 001's table.
        ("claude-3-5-haiku-20241022", 1_200, 6_000, 9_600),
        ("gpt-5-nano", 300_000, 600_000, 900_000),
        ("claude-opus-4-1-20250805", 1_800, 3_600, 12_000),
        ("o3", 90_000, 180_000, 600_000),
        ("gemini-2.5-flash-image", 3_000, 6_000, 20_000),
        ("gemini-3-pro-preview", 24_000, 120_000, 240_000),
        ("gpt-4.1-mini", 50_000, 250_000, 400_000),
        ("claude-haiku-4-5", 12_000, 60_000, 96_000),
        ("gemini-flash-lite-latest", 50_000, 100_000, 150_000),
    ],
)
def test_spot_checks_from_the_seed(catalog, model, free, personal, pro):
    limits = _limits()
    assert (limits[("free", model)], limits[("personal", model)], limits[("pro", model)]) == (
        free,
        personal,
        pro,
    )


def test_models_without_a_tpm_row_have_no_limit(catalog):
    assert not TpmLimit.objects.filter(
        model__name__endswith="-latest", model__provider__slug="anthropic"
    ).exists()


def test_plan_and_model_are_unique_together(catalog):
    from django.db import IntegrityError, transaction

    existing = TpmLimit.objects.select_related("plan", "model").first()
    with pytest.raises(IntegrityError), transaction.atomic():
        TpmLimit.objects.create(plan=existing.plan, model=existing.model, tokens_per_minute=1)
