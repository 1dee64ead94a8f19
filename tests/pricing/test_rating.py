"""Rating: exact costs for every seed price, N/A handling, unit prices, and a property test
against an independent Fraction oracle."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing import selectors
from pricing.rating import PriceTerms, UnpricedUsage, Usage, rate
from tests.pricing.seed_data import SEED_PRICES

CREDITS_PER_USD = Decimal("180")
ONE_MILLION_EACH = Usage(
    input_tokens=1_000_000,
    output_tokens=1_000_000,
    cache_read_tokens=1_000_000,
    cache_write_tokens=1_000_000,
)
ODD_MIX = Usage(input_tokens=1234, output_tokens=567, cache_read_tokens=89, cache_write_tokens=10)

# Computed by hand (integer milli-dollars per 1M tokens; N/A billed at the input rate), not by
# the code under test. Columns: model, then for ONE_MILLION_EACH: USD, credits; then for
# ODD_MIX: USD, credits, nano-credits.
EXPECTED = [
    ("gpt-5", "12.625", "2272.5", "0.007236125", "1.3025025", 1302502500),
    ("gpt-5-codex", "12.625", "2272.5", "0.007236125", "1.3025025", 1302502500),
    ("gpt-5-mini", "2.525", "454.5", "0.001447225", "0.2605005", 260500500),
    ("gpt-5-nano", "0.505", "90.9", "0.000289445", "0.0521001", 52100100),
    ("gpt-4.1", "12.5", "2250", "0.0070685", "1.27233", 1272330000),
    ("gpt-4.1-mini", "2.5", "450", "0.0014137", "0.254466", 254466000),
    ("gpt-4.1-nano", "0.625", "112.5", "0.000353425", "0.0636165", 63616500),
    ("gpt-4o", "16.25", "2925", "0.00889125", "1.600425", 1600425000),
    ("gpt-4o-mini", "0.975", "175.5", "0.000533475", "0.0960255", 96025500),
    ("o4-mini", "6.875", "1237.5", "0.003887675", "0.6997815", 699781500),
    ("o3", "12.5", "2250", "0.0070685", "1.27233", 1272330000),
    ("o3-mini", "7.15", "1287", "0.00391215", "0.704187", 704187000),
    ("codex-mini-latest", "9.375", "1687.5", "0.005301375", "0.9542475", 954247500),
    ("claude-opus-4-1-20250805", "110.25", "19845", "0.061356", "11.04408", 11044080000),
    ("claude-opus-4-20250514", "110.25", "19845", "0.061356", "11.04408", 11044080000),
    ("claude-sonnet-4-5-20250929", "22.05", "3969", "0.0122712", "2.208816", 2208816000),
    ("claude-sonnet-4-20250514", "22.05", "3969", "0.0122712", "2.208816", 2208816000),
    ("claude-3-7-sonnet-20250219", "22.05", "3969", "0.0122712", "2.208816", 2208816000),
    ("claude-3-7-sonnet-latest", "22.05", "3969", "0.0122712", "2.208816", 2208816000),
    ("claude-3-5-haiku-20241022", "5.88", "1058.4", "0.00327232", "0.5890176", 589017600),
    ("claude-3-5-haiku-latest", "5.88", "1058.4", "0.00327232", "0.5890176", 589017600),
    ("claude-3-haiku-20240307", "1.83", "329.4", "0.00102292", "0.1841256", 184125600),
    ("gemini-2.5-pro", "12.81", "2305.8", "0.00725259", "1.3054662", 1305466200),
    ("gemini-2.5-flash", "3.175", "571.5", "0.001797375", "0.3235275", 323527500),
    ("gemini-2.5-flash-preview-09-2025", "3.175", "571.5", "0.001797375", "0.3235275", 323527500),
    ("gemini-flash-latest", "3.175", "571.5", "0.001797375", "0.3235275", 323527500),
    ("gemini-2.5-flash-lite", "0.625", "112.5", "0.000353425", "0.0636165", 63616500),
    (
        "gemini-2.5-flash-lite-preview-09-2025",
        "0.625",
        "112.5",
        "0.000353425",
        "0.0636165",
        63616500,
    ),
    ("gemini-flash-lite-latest", "0.625", "112.5", "0.000353425", "0.0636165", 63616500),
    ("gemini-2.5-flash-image-preview", "30.9", "5562", "0.0174099", "3.133782", 3133782000),
    ("gemini-2.0-flash", "0.625", "112.5", "0.000353425", "0.0636165", 63616500),
    ("gemini-2.0-flash-lite", "0.525", "94.5", "0.000270075", "0.0486135", 48613500),
]


def _terms(row: tuple) -> PriceTerms:
    _, _, input_, cache_read, output, cache_write = row
    return PriceTerms(
        input_per_1m=Decimal(input_),
        cache_read_per_1m=None if cache_read is None else Decimal(cache_read),
        output_per_1m=Decimal(output),
        cache_write_per_1m=None if cache_write is None else Decimal(cache_write),
    )


SEED_BY_NAME = {row[1]: row for row in SEED_PRICES}


def test_the_expected_table_covers_every_seed_row():
    assert len(SEED_PRICES) == 32
    assert [row[0] for row in EXPECTED] == [row[1] for row in SEED_PRICES]


@pytest.mark.parametrize(("name", "usd_a", "credits_a", "usd_b", "credits_b", "nano_b"), EXPECTED)
def test_every_seed_price_rates_exactly(name, usd_a, credits_a, usd_b, credits_b, nano_b):
    terms = _terms(SEED_BY_NAME[name])

    big = rate(ONE_MILLION_EACH, terms, CREDITS_PER_USD)
    assert big.usd == Decimal(usd_a)
    assert big.credits == Decimal(credits_a)
    assert big.nano_credits == int(Decimal(credits_a) * 10**9)

    odd = rate(ODD_MIX, terms, CREDITS_PER_USD)
    assert odd.usd == Decimal(usd_b)
    assert odd.credits == Decimal(credits_b)
    assert odd.nano_credits == nano_b


@pytest.mark.django_db
def test_the_loaded_catalog_rates_like_the_seed(catalog):
    at = datetime(2026, 1, 1, tzinfo=UTC)
    book = selectors.price_book()
    for name, usd_a, credits_a, usd_b, _credits_b, nano_b in EXPECTED:
        model = selectors.model_by_name(name=name)
        from_db = selectors.price_terms(selectors.price_at(model=model, at=at))
        from_book = book.price_at(model=name, at=at).terms
        for terms in (from_db, from_book):
            assert rate(ONE_MILLION_EACH, terms, CREDITS_PER_USD).usd == Decimal(usd_a), name
            assert rate(ONE_MILLION_EACH, terms, CREDITS_PER_USD).credits == Decimal(credits_a)
            odd = rate(ODD_MIX, terms, CREDITS_PER_USD)
            assert (odd.usd, odd.nano_credits) == (Decimal(usd_b), nano_b), name


def test_a_token_type_priced_na_is_charged_at_the_input_rate():
    gpt5 = _terms(SEED_BY_NAME["gpt-5"])  # cache write N/A, input 1.25
    assert rate(Usage(cache_write_tokens=1_000_000), gpt5, CREDITS_PER_USD).usd == Decimal("1.25")
    lite = _terms(SEED_BY_NAME["gemini-2.0-flash-lite"])  # cache read N/A, input 0.075
    cost = rate(Usage(cache_read_tokens=2_000_000), lite, CREDITS_PER_USD)
    assert (cost.usd, cost.credits) == (Decimal("0.15"), Decimal("27"))


def test_a_missing_input_price_leaves_tokens_unpriced():
    output_only = PriceTerms(output_per_1m=Decimal("2"))
    with pytest.raises(UnpricedUsage) as excinfo:
        rate(Usage(input_tokens=1), output_only, CREDITS_PER_USD)
    assert excinfo.value.component == "input_tokens"
    with pytest.raises(UnpricedUsage) as excinfo:
        rate(Usage(cache_read_tokens=5), output_only, CREDITS_PER_USD)
    assert excinfo.value.component == "cache_read_tokens"
    assert rate(Usage(output_tokens=500_000), output_only, CREDITS_PER_USD).usd == Decimal("1")


MEDIA = PriceTerms(
    per_image=Decimal("0.039"),
    per_megapixel=Decimal("0.025"),
    per_video_second=Decimal("0.1"),
    per_video=Decimal("0.5"),
    per_request=Decimal("0.002"),
    gpu_second_prices={"A100": Decimal("0.00111"), "H100": Decimal("0.00195")},
)


@pytest.mark.parametrize(
    ("usage", "usd", "credits"),
    [
        (Usage(images=Decimal(3)), "0.117", "21.06"),
        (Usage(megapixels=Decimal("2.5")), "0.0625", "11.25"),
        (Usage(video_seconds=Decimal(8)), "0.8", "144"),
        (Usage(videos=Decimal(2)), "1.0", "180"),
        (Usage(requests=Decimal(7)), "0.014", "2.52"),
        (Usage(gpu_seconds=Decimal("12.5"), gpu_type="H100"), "0.024375", "4.3875"),
        (Usage(gpu_seconds=Decimal(1000), gpu_type="A100"), "1.11", "199.8"),
        (
            Usage(
                images=Decimal(3),
                megapixels=Decimal("2.5"),
                video_seconds=Decimal(8),
                videos=Decimal(2),
                requests=Decimal(7),
                gpu_seconds=Decimal("12.5"),
                gpu_type="H100",
            ),
            "2.017875",
            "363.2175",
        ),
    ],
)
def test_unit_prices(usage, usd, credits):
    cost = rate(usage, MEDIA, CREDITS_PER_USD)
    assert cost.usd == Decimal(usd)
    assert cost.credits == Decimal(credits)
    assert cost.nano_credits == int(Decimal(credits) * 10**9)


@pytest.mark.parametrize(
    ("usage", "component"),
    [
        (Usage(images=Decimal(1)), "images"),
        (Usage(megapixels=Decimal(1)), "megapixels"),
        (Usage(video_seconds=Decimal(1)), "video_seconds"),
        (Usage(videos=Decimal(1)), "videos"),
        (Usage(requests=Decimal(1)), "requests"),
        (Usage(gpu_seconds=Decimal(1), gpu_type="A100"), "gpu_seconds on A100"),
    ],
)
def test_units_on_a_token_only_price_are_unpriced(usage, component):
    with pytest.raises(UnpricedUsage) as excinfo:
        rate(usage, _terms(SEED_BY_NAME["gpt-5"]), CREDITS_PER_USD)
    assert excinfo.value.component == component


def test_gpu_seconds_of_an_unknown_or_unnamed_type_are_unpriced():
    with pytest.raises(UnpricedUsage, match="B200"):
        rate(Usage(gpu_seconds=Decimal(1), gpu_type="B200"), MEDIA, CREDITS_PER_USD)
    with pytest.raises(UnpricedUsage, match="unnamed"):
        rate(Usage(gpu_seconds=Decimal(1)), MEDIA, CREDITS_PER_USD)


def test_no_usage_costs_nothing_even_without_prices():
    cost = rate(Usage(), PriceTerms(), CREDITS_PER_USD)
    assert (cost.usd, cost.credits, cost.nano_credits) == (0, 0, 0)


# ---- properties ----------------------------------------------------------------------------

TOKENS = st.integers(min_value=0, max_value=10**10)
token_usage = st.builds(
    Usage,
    input_tokens=TOKENS,
    output_tokens=TOKENS,
    cache_read_tokens=TOKENS,
    cache_write_tokens=TOKENS,
)


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cache_read_tokens=a.cache_read_tokens + b.cache_read_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        images=a.images + b.images,
        megapixels=a.megapixels + b.megapixels,
        requests=a.requests + b.requests,
    )


def _oracle_usd(usage: Usage, row: tuple) -> Fraction:
    """The cost as an exact fraction, from the seed strings, not through Decimal."""
    _, _, input_, cache_read, output, cache_write = row
    per_token = {
        "input": Fraction(input_),
        "output": Fraction(output),
        "cache_read": Fraction(cache_read or input_),
        "cache_write": Fraction(cache_write or input_),
    }
    tokens = {
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "cache_read": usage.cache_read_tokens,
        "cache_write": usage.cache_write_tokens,
    }
    return sum((tokens[k] * per_token[k] for k in tokens), Fraction(0)) / 1_000_000


@settings(max_examples=400, deadline=None, database=None)
@given(row=st.sampled_from(SEED_PRICES), a=token_usage, b=token_usage)
def test_rating_is_additive_and_matches_a_fraction_oracle(row, a, b):
    terms = _terms(row)
    cost_a, cost_b = rate(a, terms, CREDITS_PER_USD), rate(b, terms, CREDITS_PER_USD)
    both = rate(_add(a, b), terms, CREDITS_PER_USD)

    assert cost_a.usd + cost_b.usd == both.usd
    assert cost_a.credits + cost_b.credits == both.credits
    # Seed prices have at most 3 decimals per 1M tokens: every cost is a whole nano-credit,
    # so no rounding happens and nano-credits add up exactly too.
    assert cost_a.nano_credits + cost_b.nano_credits == both.nano_credits

    for usage, cost in ((a, cost_a), (b, cost_b), (_add(a, b), both)):
        usd = _oracle_usd(usage, row)
        nano = usd * 180 * 10**9
        assert Fraction(cost.usd) == usd
        assert Fraction(cost.credits) == usd * 180
        assert nano.denominator == 1
        assert cost.nano_credits == nano.numerator


PRICE = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)
UNITS = st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None, database=None)
@given(
    input_price=PRICE,
    image_price=PRICE,
    request_price=PRICE,
    a=st.tuples(TOKENS, UNITS, UNITS),
    b=st.tuples(TOKENS, UNITS, UNITS),
)
def test_arbitrary_six_decimal_prices_rate_exactly(input_price, image_price, request_price, a, b):
    terms = PriceTerms(input_per_1m=input_price, per_image=image_price, per_request=request_price)
    usage_a = Usage(input_tokens=a[0], images=a[1], requests=a[2])
    usage_b = Usage(input_tokens=b[0], images=b[1], requests=b[2])
    cost_a, cost_b = rate(usage_a, terms, CREDITS_PER_USD), rate(usage_b, terms, CREDITS_PER_USD)
    both = rate(_add(usage_a, usage_b), terms, CREDITS_PER_USD)
    assert cost_a.usd + cost_b.usd == both.usd
    assert cost_a.credits + cost_b.credits == both.credits

    for usage, cost in ((usage_a, cost_a), (usage_b, cost_b)):
        usd = (
            Fraction(usage.input_tokens) * Fraction(input_price) / 1_000_000
            + Fraction(usage.images) * Fraction(image_price)
            + Fraction(usage.requests) * Fraction(request_price)
        )
        assert Fraction(cost.usd) == usd
        assert Fraction(cost.credits) == usd * 180
        assert cost.nano_credits == round(usd * 180 * 10**9)  # round() on a Fraction: half-even
