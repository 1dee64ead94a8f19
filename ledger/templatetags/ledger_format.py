"""Template filters for money on the team pages: `{{ nano|credits }}` (exact, short),
`{{ nano|credits_full }}` (9 places), `{{ decimal|usd }}`. Rendering itself is pricing.money's."""

from __future__ import annotations

from decimal import Decimal

from django import template

from ledger.models import LotSource
from pricing.money import format_credits, format_credits_short, format_usd

register = template.Library()


@register.filter
def credits(nano: int | None) -> str:
    return "" if nano is None else format_credits_short(nano)


@register.filter
def credits_full(nano: int | None) -> str:
    return "" if nano is None else format_credits(nano)


@register.filter
def usd(amount: Decimal | None) -> str:
    return "" if amount is None else format_usd(amount)


@register.filter
def lot_source(value: str) -> str:
    """A credit lot's source as people read it ("Monthly plan credits")."""
    return LotSource(value).label if value in LotSource.values else value
