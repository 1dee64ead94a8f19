"""The pricing calculator: what a monthly workload of one model costs, in USD and credits.

Pure and exact: each request is rated with ``rating.rate`` (the code that bills usage), so the
estimate is what the ledger would charge. Monthly and per-1,000 figures multiply the rated
request: USD exactly, credits as the request's nano-credits (rounded once, like a billed event)
times the number of requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, localcontext

from .rating import Cost, PriceTerms, Usage, rate

HUNDRED = Decimal(100)
PER_THOUSAND = 1000


@dataclass(frozen=True, slots=True)
class Workload:
    input_tokens: int  # per request, cached tokens included
    output_tokens: int  # per request
    cached_share: Decimal  # percent of the input that is a cache read, 0..100
    requests: int  # per month

    @property
    def cached_tokens(self) -> int:
        """Cache-read tokens per request: the share of the input, rounded down to a token."""
        return int((self.input_tokens * self.cached_share / HUNDRED).to_integral_value(ROUND_FLOOR))

    def usage(self) -> Usage:
        """One request as the rating code sees it (input excludes the cached tokens)."""
        cached = self.cached_tokens
        return Usage(
            input_tokens=self.input_tokens - cached,
            output_tokens=self.output_tokens,
            cache_read_tokens=cached,
        )


@dataclass(frozen=True, slots=True)
class Estimate:
    workload: Workload
    per_request: Cost
    per_thousand_usd: Decimal
    per_thousand_nano: int
    monthly_usd: Decimal
    monthly_nano: int
    # The model has no cache-read price: cached tokens are billed at the input rate.
    cache_billed_as_input: bool


def estimate(*, workload: Workload, terms: PriceTerms, credits_per_usd: Decimal) -> Estimate:
    """The cost of `workload` at `terms`. Raises rating.UnpricedUsage if a part is unpriced."""
    per_request = rate(workload.usage(), terms, credits_per_usd)
    with localcontext() as ctx:
        ctx.prec = 60  # exact: the products below never need rounding
        per_thousand_usd = per_request.usd * PER_THOUSAND
        monthly_usd = per_request.usd * workload.requests
    return Estimate(
        workload=workload,
        per_request=per_request,
        per_thousand_usd=per_thousand_usd,
        per_thousand_nano=per_request.nano_credits * PER_THOUSAND,
        monthly_usd=monthly_usd,
        monthly_nano=per_request.nano_credits * workload.requests,
        cache_billed_as_input=workload.cached_tokens > 0 and terms.cache_read_per_1m is None,
    )
