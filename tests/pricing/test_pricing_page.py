"""The public pricing page (/pricing/): every priced model in USD and credits, and the
calculator, checked against hand-computed exact figures."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from pricing import services
from pricing.calculator import Workload
from pricing.models import Model, Provider
from tests.pricing.seed_data import SEED_PRICES

pytestmark = pytest.mark.django_db
URL = "/pricing/"
ESTIMATE_URL = "/pricing/estimate/"


def _row(html: str, model: str) -> str:
    """The table row of `model` (its name cell is <code>model</code></th> exactly)."""
    match = re.search(
        rf"<tr[^>]*>\s*<th scope=\"row\"><code>{re.escape(model)}</code>.*?</tr>", html, re.S
    )
    assert match, f"no row for {model}"
    return match.group(0)


def test_the_page_is_public_and_lists_every_priced_model_in_usd_and_credits(client, catalog):
    response = client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert "1 USD = 180 credits" in html
    for _provider, name, *prices in SEED_PRICES:
        row = _row(html, name)
        for seed in prices:
            if seed is None:
                continue
            usd = Decimal(seed)
            assert f"${usd:.2f}" in row or f"${usd.normalize():f}" in row, (name, seed, row)
    gpt5 = _row(html, "gpt-5")
    # 1.25 / 0.125 / 10.00 USD per 1M -> 225 / 22.5 / 1800 credits; cache write N/A
    for text in ("$1.25", "225 credits", "$0.125", "22.5 credits", "$10.00", "1800 credits"):
        assert text in gpt5
    assert "not offered, billed as input" in gpt5
    opus = _row(html, "claude-opus-4-1-20250805")
    assert "$18.75" in opus and "3375 credits" in opus  # cache write 18.75 x 180


def test_models_are_grouped_by_provider_and_unpriced_ones_say_so(client, catalog):
    response = client.get(URL)
    providers = response.context["providers"]
    assert [p["name"] for p in providers] == ["Anthropic", "Google Gemini", "OpenAI"]
    listed = {row["model"].name for p in providers for row in p["rows"]}
    assert listed == set(Model.objects.values_list("name", flat=True))
    html = response.content.decode()
    assert "Not priced yet" in _row(html, "gpt-5-pro")


def _estimate(client, **params):
    response = client.get(URL, params)
    assert response.status_code == 200
    return response


def test_calculator_gpt5_with_a_cached_share(client, catalog):
    # 1,000 input of which 20 % cached: 800 x 1.25 + 200 x 0.125 + 500 x 10.00 per 1M
    # = 0.001 + 0.000025 + 0.005 = 0.006025 USD a request; x 180 = 1.0845 credits
    response = _estimate(
        client,
        model="gpt-5",
        input_tokens=1000,
        output_tokens=500,
        cached_share="20",
        requests=10000,
    )
    estimate = response.context["estimate"]
    assert estimate.per_request.usd == Decimal("0.006025")
    assert estimate.per_request.nano_credits == 1_084_500_000
    assert estimate.monthly_usd == Decimal("60.25")
    assert estimate.monthly_nano == 10_845 * 10**9
    assert estimate.per_thousand_usd == Decimal("6.025")
    assert estimate.per_thousand_nano == 1_084_500_000_000
    html = response.content.decode()
    assert '<td data-testid="monthly-usd">$60.25</td>' in html
    assert '<td data-testid="monthly-credits">10845.00</td>' in html
    assert '<td data-testid="per-thousand-usd">$6.025</td>' in html
    assert '<td data-testid="per-thousand-credits">1084.50</td>' in html
    assert "billed as input, at the input price" not in html


def test_calculator_anthropic_with_half_cached(client, catalog):
    # 1,000 uncached x 3.00 + 1,000 cached x 0.30 + 1,000 output x 15.00 per 1M = 0.0183 USD;
    # x 180 = 3.294 credits; x 123,456 requests = 2,259.2448 USD and 406,664.064 credits
    response = _estimate(
        client,
        model="claude-sonnet-4-5-20250929",
        input_tokens=2000,
        output_tokens=1000,
        cached_share="50",
        requests=123456,
    )
    estimate = response.context["estimate"]
    assert estimate.per_request.usd == Decimal("0.0183")
    assert estimate.monthly_usd == Decimal("2259.2448")
    assert estimate.monthly_nano == 406_664_064_000_000
    assert estimate.per_thousand_usd == Decimal("18.3")
    assert estimate.per_thousand_nano == 3_294 * 10**9
    html = response.content.decode()
    assert "$2259.2448" in html and "406664.064" in html


def test_cached_share_of_a_model_without_cache_price_is_billed_as_input(client, catalog):
    # gemini-2.0-flash-lite has no cache-read price: all 1,000 input tokens at 0.075 plus
    # 100 output at 0.30 per 1M = 0.000105 USD; x 180 = 0.0189 credits
    response = _estimate(
        client,
        model="gemini-2.0-flash-lite",
        input_tokens=1000,
        output_tokens=100,
        cached_share="40",
        requests=1,
    )
    estimate = response.context["estimate"]
    assert estimate.per_request.usd == Decimal("0.000105")
    assert estimate.monthly_nano == 18_900_000
    assert estimate.cache_billed_as_input
    html = response.content.decode()
    assert "has no cache-read price: its cached input tokens are billed as input" in html


def test_fractional_cached_share_rounds_the_cached_tokens_down():
    workload = Workload(
        input_tokens=1001, output_tokens=0, cached_share=Decimal("33.33"), requests=1
    )
    assert workload.cached_tokens == 333  # 1001 x 0.3333 = 333.63
    usage = workload.usage()
    assert (usage.input_tokens, usage.cache_read_tokens) == (668, 333)


def test_without_parameters_the_page_estimates_an_example(client, catalog):
    response = client.get(URL)
    assert response.context["form"].is_valid()
    assert response.context["estimate"] is not None
    assert not response.context["submitted"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"input_tokens": "-5"}, "The input tokens per request cannot be negative."),
        ({"output_tokens": "-1"}, "The output tokens per request cannot be negative."),
        ({"cached_share": "101"}, "The cached share cannot be more than 100 %."),
        ({"cached_share": "-3"}, "The cached share cannot be negative."),
        ({"cached_share": "NaN"}, "The cached share must be a number from 0 to 100."),
        ({"model": "gpt-9000"}, "Unknown model “gpt-9000”. Choose a model from the list."),
        ({"model": "gpt-5-pro"}, "gpt-5-pro has no price yet, so its cost cannot be estimated."),
        ({"model": ""}, "Choose a model."),
        ({"requests": "0"}, "The requests per month cannot be below 1."),
        (
            {"requests": "99999999999999999999"},
            "The requests per month can be at most 1,000,000,000.",
        ),
        ({"input_tokens": "10000001"}, "The input tokens per request can be at most 10,000,000."),
        ({"input_tokens": "9" * 5000}, "The input tokens per request must be a whole number."),
        ({"input_tokens": "1e5"}, "The input tokens per request must be a whole number."),
        ({"output_tokens": "abc"}, "The output tokens per request must be a whole number."),
        ({"requests": ""}, "Enter the requests per month."),
    ],
)
def test_bad_input_is_a_page_with_a_clear_message(client, catalog, params, message):
    data = {
        "model": "gpt-5",
        "input_tokens": "1000",
        "output_tokens": "500",
        "cached_share": "0",
        "requests": "100",
        **params,
    }
    for url in (URL, ESTIMATE_URL):
        response = client.get(url, data)
        assert response.status_code == 200
        assert response.context["estimate"] is None
        html = response.content.decode()
        assert message.replace("“", "&ldquo;").replace("”", "&rdquo;") in html or message in html
        assert "Cannot estimate yet" in html


def test_the_estimate_fragment_is_the_same_computation(client, catalog):
    params = {
        "model": "gpt-5",
        "input_tokens": "1000",
        "output_tokens": "500",
        "cached_share": "20",
        "requests": "10000",
    }
    fragment = client.get(ESTIMATE_URL, params)
    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert html.lstrip().startswith('<div id="estimate"')
    assert "<html" not in html
    assert '<td data-testid="monthly-usd">$60.25</td>' in html


def test_htmx_enhances_the_form_only_when_vendored(client, catalog, monkeypatch):
    monkeypatch.setattr("pricing.views.vendored", lambda path: True)
    html = client.get(URL).content.decode()
    assert 'hx-get="/pricing/estimate/"' in html and "vendor/htmx.min.js" in html
    monkeypatch.setattr("pricing.views.vendored", lambda path: False)
    html = client.get(URL).content.decode()
    assert "hx-get" not in html and "htmx.min.js" not in html
    assert 'method="get" action="/pricing/#estimate"' in html  # works without JS


def test_the_page_uses_the_price_in_force_now(client, catalog):
    gpt5 = Model.objects.get(name="gpt-5")
    services.price_version_create(
        model=gpt5,
        effective_from=datetime(2025, 6, 1, tzinfo=UTC),
        author=None,
        input_per_1m=Decimal("2.00"),
        cache_read_per_1m=Decimal("0.20"),
        output_per_1m=Decimal("12.00"),
    )
    response = _estimate(
        client, model="gpt-5", input_tokens=1000, output_tokens=0, cached_share="0", requests=1
    )
    assert response.context["estimate"].per_request.usd == Decimal("0.002")
    assert "$2.00" in _row(response.content.decode(), "gpt-5")


def test_query_count_is_bounded_whatever_the_catalog_size(
    client, catalog, django_assert_max_num_queries
):
    params = {"model": "gpt-5", "input_tokens": "1", "output_tokens": "1", "requests": "1"}
    params["cached_share"] = "0"
    with django_assert_max_num_queries(2):  # the price book, cold: models and prices
        assert client.get(URL, params).status_code == 200
    provider = services.provider_save(provider=Provider(slug="extra", name="Extra"))
    for n in range(40):
        model = services.model_save(model=Model(provider=provider, name=f"extra-{n}"))
        services.price_version_create(
            model=model,
            effective_from=datetime(2025, 1, 1, tzinfo=UTC),
            author=None,
            input_per_1m=Decimal("1"),
            output_per_1m=Decimal("2"),
        )
    with django_assert_max_num_queries(2):
        response = client.get(URL, params)
    assert "extra-39" in response.content.decode()
    with django_assert_max_num_queries(0):  # warm: no query at all
        client.get(ESTIMATE_URL, params)
