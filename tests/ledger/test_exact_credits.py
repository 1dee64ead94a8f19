"""Exact credits for every priced catalog model over random token mixes, checked against an
independent computation in fractions (no Decimal, no rating code)."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from gateway_billing.permissions import TeamContext
from ledger.models import LedgerEntry, UsageEvent
from ledger.services.usage import usage_record
from pricing.models import Price

from .conftest import balance_nano, entries_sum

pytestmark = pytest.mark.django_db


def oracle(tokens: tuple[int, int, int, int], price: Price) -> tuple[Fraction, int]:
    def rate(value, fallback=None):
        chosen = value if value is not None else fallback
        return Fraction(str(chosen))

    rates = (
        rate(price.input_per_1m),
        rate(price.output_per_1m),
        rate(price.cache_read_per_1m, price.input_per_1m),
        rate(price.cache_write_per_1m, price.input_per_1m),
    )
    usd = sum((t * r / 1_000_000 for t, r in zip(tokens, rates, strict=True)), Fraction(0))
    nano = usd * 180 * 10**9
    assert nano.denominator == 1, "seed prices are exact to the nano-credit"
    return usd, int(nano)


def test_every_seed_model_is_rated_exactly(team):
    rng = random.Random(20261123)
    ctx = TeamContext(team_id=team.id)
    prices = list(Price.objects.select_related("model"))
    assert len(prices) == 32
    expected_total = 0
    events, expected = [], {}
    for price in prices:
        for i in range(25):
            tokens = tuple(
                rng.choice([0, 1, 7, rng.randint(0, 2_000_000), rng.randint(0, 10**10)])
                for _ in range(4)
            )
            event_id = f"{price.model.name}-{i}"
            events.append({
                "id": event_id, "model": price.model.name,
                "usage": dict(zip(("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"), tokens, strict=True)),
            })  # fmt: skip
            expected[event_id] = oracle(tokens, price)
            expected_total += expected[event_id][1]
    for start in range(0, len(events), 1000):
        results = usage_record(ctx=ctx, events=events[start : start + 1000])
        assert all(r.status == 201 for r in results), [r.error for r in results if r.error]
        for r in results:
            usd, nano = expected[r.event_id]
            assert Fraction(str(r.cost_usd)) == usd, r.event_id
            assert r.credits_nano == nano, r.event_id
    stored = dict(UsageEvent.objects.values_list("event_id", "credits_nano"))
    assert stored == {k: v[1] for k, v in expected.items()}
    assert -entries_sum(team) == expected_total == -balance_nano(team)
    assert LedgerEntry.objects.filter(kind="usage").count() == len(events)
