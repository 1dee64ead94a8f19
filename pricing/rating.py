"""Rating: usage x price -> cost. Pure functions, exact Decimal, no I/O.

cost_usd = sum(tokens_t x price_per_1M_t / 1,000,000) + sum(units_u x unit_price_u)
credits  = cost_usd x credits_per_usd

Nothing is rounded between steps; the credits are rounded once, half-even, to 1e-9 (exact for
every catalog price with at most 3 decimals per 1M tokens at an integer credits-per-USD).
A token type whose price is N/A is charged at the input rate: no discount exists for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, localcontext

from .money import nano_from_credits

MILLION = Decimal(1_000_000)
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0  # excludes cached tokens
    output_tokens: int = 0  # includes reasoning tokens
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    images: Decimal = ZERO
    megapixels: Decimal = ZERO
    video_seconds: Decimal = ZERO
    videos: Decimal = ZERO
    requests: Decimal = ZERO
    gpu_seconds: Decimal = ZERO
    gpu_type: str = ""

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


@dataclass(frozen=True, slots=True)
class PriceTerms:
    """A price version as plain values (USD; None = not offered)."""

    version_id: int | None = None
    input_per_1m: Decimal | None = None
    cache_read_per_1m: Decimal | None = None
    output_per_1m: Decimal | None = None
    cache_write_per_1m: Decimal | None = None
    per_image: Decimal | None = None
    per_megapixel: Decimal | None = None
    per_video_second: Decimal | None = None
    per_video: Decimal | None = None
    per_request: Decimal | None = None
    gpu_second_prices: dict[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Cost:
    usd: Decimal
    credits: Decimal  # exact product, before the single rounding to nano-credits
    nano_credits: int


class UnpricedUsage(Exception):
    """The usage has a component the price does not cover (e.g. images on a token-only price)."""

    def __init__(self, component: str) -> None:
        super().__init__(f"no price for {component}")
        self.component = component


def _token_cost(count: int, rate: Decimal | None, fallback: Decimal | None, name: str) -> Decimal:
    if not count:
        return ZERO
    effective = rate if rate is not None else fallback
    if effective is None:
        raise UnpricedUsage(name)
    return count * effective / MILLION


def _unit_cost(count: Decimal, rate: Decimal | None, name: str) -> Decimal:
    if not count:
        return ZERO
    if rate is None:
        raise UnpricedUsage(name)
    return count * rate


def rate(usage: Usage, price: PriceTerms, credits_per_usd: Decimal) -> Cost:
    """Exact cost of one usage at one price. Raises UnpricedUsage for an unpriced component."""
    with localcontext() as ctx:
        ctx.prec = 60  # far beyond any product of 10^10 tokens and a 16-digit price
        usd = (
            _token_cost(usage.input_tokens, price.input_per_1m, None, "input_tokens")
            + _token_cost(usage.output_tokens, price.output_per_1m, None, "output_tokens")
            + _token_cost(
                usage.cache_read_tokens,
                price.cache_read_per_1m,
                price.input_per_1m,
                "cache_read_tokens",
            )
            + _token_cost(
                usage.cache_write_tokens,
                price.cache_write_per_1m,
                price.input_per_1m,
                "cache_write_tokens",
            )
        )
        if (
            usage.images
            or usage.megapixels
            or usage.video_seconds
            or usage.videos
            or usage.requests
        ):
            usd += (
                _unit_cost(usage.images, price.per_image, "images")
                + _unit_cost(usage.megapixels, price.per_megapixel, "megapixels")
                + _unit_cost(usage.video_seconds, price.per_video_second, "video_seconds")
                + _unit_cost(usage.videos, price.per_video, "videos")
                + _unit_cost(usage.requests, price.per_request, "requests")
            )
        if usage.gpu_seconds:
            gpu_rate = price.gpu_second_prices.get(usage.gpu_type)
            if gpu_rate is None:
                raise UnpricedUsage(f"gpu_seconds on {usage.gpu_type or 'an unnamed GPU type'}")
            usd += usage.gpu_seconds * gpu_rate
        credits = usd * credits_per_usd
        return Cost(usd=usd, credits=credits, nano_credits=nano_from_credits(credits))
