"""Price versions: append-only rows, price_at over time, the history rule, the price book."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from gateway_billing.errors import ApplicationError
from pricing import selectors, services
from pricing.models import Model, Price

pytestmark = pytest.mark.django_db

SEED_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
JUNE = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def gpt5(catalog) -> Model:
    return Model.objects.get(name="gpt-5")


def _new_version(model: Model, at: datetime = JUNE, **prices) -> Price:
    prices = prices or {"input_per_1m": "1.00", "cache_read_per_1m": "0.1", "output_per_1m": "8"}
    return services.price_version_create(model=model, effective_from=at, author=None, **prices)


def test_a_new_version_leaves_the_old_row_untouched(gpt5):
    old = Price.objects.get(model=gpt5)
    snapshot = Price.objects.filter(pk=old.pk).values().get()
    new = _new_version(gpt5)
    assert new.pk != old.pk
    assert Price.objects.filter(pk=old.pk).values().get() == snapshot
    assert Price.objects.filter(model=gpt5).count() == 2


def test_price_at_picks_the_version_in_force(gpt5):
    old = Price.objects.get(model=gpt5)
    new = _new_version(gpt5)
    assert selectors.price_at(model=gpt5, at=JUNE - timedelta(microseconds=1)) == old
    assert selectors.price_at(model=gpt5, at=JUNE) == new
    assert selectors.price_at(model=gpt5.pk, at=JUNE + timedelta(days=400)) == new
    assert selectors.price_at(model=gpt5, at=SEED_EPOCH) == old
    assert selectors.price_at(model=gpt5, at=SEED_EPOCH - timedelta(seconds=1)) is None

    book = selectors.price_book()
    assert book.price_at(model="gpt-5", at=JUNE - timedelta(microseconds=1)).id == old.pk
    assert book.price_at(model=gpt5.pk, at=JUNE).id == new.pk
    assert book.price_at(model=gpt5, at=SEED_EPOCH - timedelta(seconds=1)) is None
    assert book.price_at(model="no-such-model", at=JUNE) is None
    assert [v.id for v in book.versions(model="gpt-5")] == [old.pk, new.pk]


def test_price_terms_converts_the_row(gpt5):
    price = _new_version(
        gpt5, input_per_1m="2", output_per_1m="4", gpu_second_prices={"H100": "0.00195"}
    )
    terms = selectors.price_terms(price)
    assert terms.version_id == price.pk
    assert terms.input_per_1m == Decimal("2") and terms.cache_write_per_1m is None
    assert terms.gpu_second_prices == {"H100": Decimal("0.00195")}
    assert Price.objects.get(pk=price.pk).gpu_second_prices == {"H100": "0.00195"}


def test_update_and_delete_of_a_price_row_fail_in_the_database(gpt5):
    price = Price.objects.get(model=gpt5)
    with pytest.raises(IntegrityError), transaction.atomic():
        Price.objects.filter(pk=price.pk).update(input_per_1m=Decimal("0.01"))
    with pytest.raises(IntegrityError), transaction.atomic():
        price.note = "sneaky"
        price.save()
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM pricing_price WHERE id = %s", [price.pk])
    price.refresh_from_db()
    assert (price.input_per_1m, price.note) == (Decimal("1.25"), "catalog")


def test_history_is_never_rewritten(gpt5):
    _new_version(gpt5, at=JUNE)
    with pytest.raises(ApplicationError) as excinfo:
        _new_version(gpt5, at=JUNE - timedelta(days=1))
    assert excinfo.value.code == "price_history_immutable"
    assert "effective_from" in excinfo.value.fields
    with pytest.raises(ApplicationError) as excinfo:
        _new_version(gpt5, at=JUNE)
    assert excinfo.value.code == "price_version_exists"
    assert Price.objects.filter(model=gpt5).count() == 2


def test_a_past_effective_from_is_allowed_when_later_than_the_latest(gpt5):
    price = _new_version(gpt5, at=SEED_EPOCH + timedelta(days=1))
    assert price.effective_from < datetime.now(tz=UTC)


@pytest.mark.parametrize(
    ("prices", "field", "message"),
    [
        ({"input_per_1m": "-0.01"}, "input_per_1m", "must not be negative"),
        ({"output_per_1m": "0.0000001"}, "output_per_1m", "more than 6 decimal places"),
        ({"output_per_1m": 1.25}, "output_per_1m", "not a float"),
        ({"per_image": "abc"}, "per_image", "decimal number"),
        ({"per_request": "12345678901"}, "per_request", "too large"),
    ],
)
def test_bad_amounts_are_refused(gpt5, prices, field, message):
    with pytest.raises(ApplicationError, match=message) as excinfo:
        _new_version(gpt5, **{"input_per_1m": "1", **prices})
    assert excinfo.value.code == "invalid_price"
    assert field in excinfo.value.fields
    assert Price.objects.filter(model=gpt5).count() == 1


def test_an_empty_version_or_a_naive_time_is_refused(gpt5):
    with pytest.raises(ApplicationError) as excinfo:
        services.price_version_create(model=gpt5, effective_from=JUNE, author=None)
    assert excinfo.value.code == "price_empty"
    with pytest.raises(ApplicationError) as excinfo:
        _new_version(gpt5, at=datetime(2026, 6, 1))
    assert excinfo.value.code == "invalid_effective_from"
    with pytest.raises(ValueError, match="timezone-aware"):
        selectors.price_at(model=gpt5, at=datetime(2026, 6, 1))


def test_trailing_zeros_beyond_six_places_are_fine(gpt5):
    price = _new_version(gpt5, input_per_1m="1.250000000", output_per_1m=Decimal(3))
    assert price.input_per_1m == Decimal("1.25")


def test_the_price_book_is_warm_and_reloads_after_a_change(gpt5, django_assert_num_queries):
    with CaptureQueriesContext(connection) as cold:
        book = selectors.price_book()
    assert len(cold) == 2  # models with providers, then every price version
    with django_assert_num_queries(0):
        assert selectors.price_book() is book
        for _ in range(1000):
            book.price_at(model="gpt-5", at=JUNE)
        selectors.catalog_current()

    new = _new_version(gpt5)
    reloaded = selectors.price_book()
    assert reloaded is not book and reloaded.version != book.version
    assert reloaded.price_at(model="gpt-5", at=JUNE).id == new.pk


def test_the_price_book_survives_a_flushed_cache(gpt5):
    from django.core.cache import cache

    book = selectors.price_book()
    cache.clear()
    assert selectors.price_book() is book  # within the check interval: no cache read at all
    selectors.forget_book()  # the interval has passed
    assert selectors.price_book() is not book  # a fresh version token: reloaded once
    again = selectors.price_book()
    assert selectors.price_book() is again


def test_model_lookup_and_suggestions(catalog):
    assert selectors.model_by_name(name="gpt-5").provider.slug == "openai"
    assert selectors.model_by_name(name=" gpt-5 ", provider="OpenAI").name == "gpt-5"
    assert selectors.model_by_name(name="gpt-5", provider="anthropic") is None
    assert selectors.model_by_name(name="gpt-6") is None
    assert selectors.model_suggestions(name="gpt5")[0] == "gpt-5"
    assert "claude-sonnet-4-5" in selectors.model_suggestions(name="claude-sonet-4-5")
    assert len(selectors.model_suggestions(name="gemini-2.5-flsh", limit=2)) == 2
    assert selectors.model_suggestions(name="zzzzzz") == []


def test_catalog_current_lists_every_model_with_its_price_in_bounded_queries(catalog):
    with CaptureQueriesContext(connection) as queries:
        entries = selectors.catalog_current()
    assert len(queries) <= 2
    assert len(entries) == 54
    keys = [(e.model.provider, e.model.name) for e in entries]
    assert keys == sorted(keys)
    by_name = {e.model.name: e for e in entries}
    assert by_name["gpt-5"].price.value("input_per_1m") == Decimal("1.25")
    assert by_name["gpt-5-pro"].price is None
    assert by_name["gemini-2.5-flash-image"].model.kind == "image"
    assert sum(1 for e in entries if e.price) == 32


def test_catalog_current_at_a_time_and_scheduled_versions(gpt5):
    future = datetime.now(tz=UTC) + timedelta(days=30)
    new = _new_version(gpt5, at=future)
    book = selectors.price_book()
    now_key, later_key = book.state_key(at=future - timedelta(days=1)), book.state_key(at=future)
    assert now_key != later_key
    by_name = {e.model.name: e for e in selectors.catalog_current()}
    assert by_name["gpt-5"].price.id != new.pk
    by_name = {e.model.name: e for e in selectors.catalog_current(at=future)}
    assert by_name["gpt-5"].price.id == new.pk
