"""Template filters rendering money exactly, through pricing.money (never float)."""

from __future__ import annotations

from decimal import Decimal

from django import template

from pricing.money import cents_to_usd, format_credits, format_credits_short, format_usd

register = template.Library()


@register.filter
def usd(amount: Decimal | None) -> str:
    """Exact USD, at least 2 decimals: Decimal('0.00375') -> '0.00375'."""
    return "" if amount is None else format_usd(amount)


@register.filter
def cents(amount: int | None) -> str:
    """USD from integer cents: 1234 -> '12.34', -500 -> '-5.00'."""
    return "" if amount is None else format_usd(cents_to_usd(amount))


@register.filter
def credits(nano: int | None) -> str:
    """Nano-credits with all 9 places: 1500000000 -> '1.500000000'."""
    return "" if nano is None else format_credits(nano)


@register.filter
def credits_short(nano: int | None) -> str:
    """Nano-credits exactly, for people: 1500000000 -> '1.50', 1129500000 -> '1.1295'."""
    return "" if nano is None else format_credits_short(nano)
