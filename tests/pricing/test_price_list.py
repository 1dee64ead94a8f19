"""The CSV price list: parsing, preview, apply, and the export round trip (service level)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway_billing.errors import ApplicationError
from pricing import selectors, services
from pricing.csv_io import COLUMNS, parse_price_list
from pricing.models import Price

pytestmark = pytest.mark.django_db

JULY = datetime(2026, 7, 1, tzinfo=UTC)
HEADER = ",".join(COLUMNS)


def _csv(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


def test_the_export_has_every_model_and_the_seed_prices(catalog):
    lines = selectors.price_list_export().splitlines()
    assert lines[0] == HEADER
    assert len(lines) == 1 + 54
    assert "openai,gpt-5,1.25,0.125,10.00,,,,,," in lines
    assert "anthropic,claude-opus-4-1-20250805,15.00,1.50,75.00,18.75,,,,," in lines
    assert "gemini,gemini-2.0-flash-lite,0.075,,0.30,,,,,," in lines
    assert "openai,gpt-5-pro,,,,,,,,," in lines


def test_export_then_import_is_a_no_op(catalog):
    text = selectors.price_list_export()
    preview = services.price_list_preview(csv_text=text, effective_from=JULY)
    assert preview.is_valid
    assert preview.changes == []
    assert len(preview.unchanged) == 54
    assert services.price_list_apply(csv_text=text, effective_from=JULY, author=None) == []
    assert Price.objects.count() == 32


def test_changed_and_new_rows_become_versions(catalog):
    text = _csv(
        "openai,gpt-5,1.25,0.125,12.00,,,,,,",  # output changed
        "openai,gpt-5-mini,0.25,0.025,2.00,,,,,,",  # unchanged
        "gemini,gemini-3-pro-image-preview,2,,12,,0.134,,,,",  # first price
    )
    preview = services.price_list_preview(csv_text=text, effective_from=JULY)
    assert preview.errors == []
    assert [(row.line, row.model.name) for row in preview.changes] == [
        (2, "gpt-5"),
        (4, "gemini-3-pro-image-preview"),
    ]
    assert preview.changes[0].changed_fields == ["output_per_1m"]
    assert [row.model.name for row in preview.unchanged] == ["gpt-5-mini"]

    created = services.price_list_apply(csv_text=text, effective_from=JULY, author=None)
    assert len(created) == 2
    gpt5 = selectors.price_at(model=created[0].model, at=JULY)
    assert (gpt5.output_per_1m, gpt5.input_per_1m, gpt5.cache_write_per_1m) == (
        Decimal("12"),
        Decimal("1.25"),
        None,
    )
    image = created[1]
    assert (image.per_image, image.effective_from) == (Decimal("0.134"), JULY)
    assert services.price_list_preview(csv_text=text, effective_from=JULY).changes == []


def test_errors_carry_their_line_numbers(catalog):
    text = _csv(
        "openai,gpt-5x,1,1,1,,,,,,",
        "openai,gpt-5,abc,0.125,10,,,,,,",
        "openai,gpt-5-mini,-1,0.025,2,,,,,,",
        "",
        "anthropic,gpt-5-nano,0.05,0.005,0.40,,,,,,",
        "openai,gpt-4o,2.5,1.25,10",
        "openai,o3,2,0.5,8.0000001,,,,,,",
        "openai,o3,2,0.5,9,,,,,,",
        "openai,gpt-4.1,,,,,,,,,",
    )
    preview = services.price_list_preview(csv_text=text, effective_from=JULY)
    errors = {error.line: error.message for error in preview.errors}
    assert set(errors) == {2, 3, 4, 6, 7, 8, 9, 10}
    assert "Unknown model 'gpt-5x'" in errors[2] and "gpt-5" in errors[2]
    assert "input_per_1m" in errors[3] and "decimal number" in errors[3]
    assert "must not be negative" in errors[4]
    assert "belongs to provider 'openai', not 'anthropic'" in errors[6]
    assert "Expected 11 cells, found 5" in errors[7]
    assert "more than 6 decimal places" in errors[8]
    assert "already appears on line 8" in errors[9]
    assert "prices cannot be withdrawn" in errors[10]
    with pytest.raises(ApplicationError) as excinfo:
        services.price_list_apply(csv_text=text, effective_from=JULY, author=None)
    assert excinfo.value.code == "price_list_invalid"
    assert "line 2: Unknown model" in excinfo.value.fields["csv"][0]
    assert Price.objects.count() == 32


def test_a_wrong_header_is_line_one(catalog):
    rows, errors = parse_price_list("model,provider,input\nopenai,gpt-5,1\n")
    assert rows == []
    assert [(e.line, e.message.split(":")[0]) for e in errors] == [(1, "Wrong header")]
    assert parse_price_list("")[1][0].line == 1


def test_na_dollar_signs_and_a_bom_are_accepted(catalog):
    rows, errors = parse_price_list("\ufeff" + _csv('openai,gpt-5,$1.25,$0.125,"$10.00",N/A,,,,,'))
    assert errors == []
    assert rows[0].values["output_per_1m"] == Decimal("10")
    assert rows[0].values["cache_write_per_1m"] is None


def test_an_effective_from_before_the_latest_version_is_an_error_for_changed_rows(catalog):
    early = datetime(2024, 12, 1, tzinfo=UTC)
    text = _csv("openai,gpt-5,1.25,0.125,11,,,,,,", "openai,gpt-5-mini,0.25,0.025,2.00,,,,,,")
    preview = services.price_list_preview(csv_text=text, effective_from=early)
    assert [error.line for error in preview.errors] == [2]
    assert "never rewritten" in preview.errors[0].message


def test_apply_is_all_or_nothing(catalog, monkeypatch):
    text = _csv("openai,gpt-5,1.25,0.125,11,,,,,,", "openai,o3,2,0.5,9,,,,,,")
    real = services.versions.price_version_create
    calls = []

    def flaky(**kwargs):
        calls.append(kwargs["model"].name)
        if len(calls) == 2:
            raise ApplicationError("boom", "simulated failure")
        return real(**kwargs)

    monkeypatch.setattr(services.versions, "price_version_create", flaky)
    with pytest.raises(ApplicationError):
        services.price_list_apply(csv_text=text, effective_from=JULY, author=None)
    assert calls == ["gpt-5", "o3"]
    assert Price.objects.count() == 32


def test_gpu_prices_carry_over_to_the_imported_version(catalog):
    model = selectors.model_by_name(name="gemini-3-pro-preview")
    services.price_version_create(
        model=model,
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
        author=None,
        per_request="0.01",
        gpu_second_prices={"H100": "0.00195"},
    )
    text = _csv("gemini,gemini-3-pro-preview,,,,,,,,,0.02")
    [created] = services.price_list_apply(csv_text=text, effective_from=JULY, author=None)
    assert created.per_request == Decimal("0.02")
    assert created.gpu_second_prices == {"H100": "0.00195"}
