"""Money types, parsing and rendering: the only place amounts are converted.

- Credits are stored as integer **nano-credits** (1 credit = 10**9 nano-credits): exact sums on
  every database, no float anywhere.
- USD amounts are exact ``Decimal``; catalog prices have 6 decimal places.
- The API renders both as decimal strings.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

NANO = 10**9
_NANO_D = Decimal(NANO)


class MoneyError(ValueError):
    """An amount that cannot be accepted (not a decimal, float, out of range)."""


def nano_from_credits(credits: Decimal) -> int:
    """Credits -> integer nano-credits, rounding half-even below 1e-9 (the one rounding step)."""
    return int((credits * _NANO_D).to_integral_value(rounding=ROUND_HALF_EVEN))


def format_credits(nano: int) -> str:
    """Render nano-credits as a decimal string with 9 places: 1500000000 -> '1.500000000'."""
    sign = "-" if nano < 0 else ""
    whole, frac = divmod(abs(nano), NANO)
    return f"{sign}{whole}.{frac:09d}"


def format_credits_short(nano: int) -> str:
    """For people: exact, without the trailing zeros past 2 places: 1500000000 -> '1.50',
    1129500000 -> '1.1295'. Nothing is rounded (the API and CSV keep all 9 places)."""
    whole, frac = format_credits(nano).split(".")
    return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"


def format_usd(amount: Decimal) -> str:
    """Render USD exactly, without exponent, keeping at least 2 decimals: '0.000003750'."""
    text = format(amount, "f")
    if "." not in text:
        return text + ".00"
    whole, frac = text.split(".")
    frac = frac.rstrip("0")
    return f"{whole}.{frac.ljust(2, '0')}"


def format_decimal(amount: Decimal) -> str:
    """Render a Decimal exactly, without exponent or trailing zeros: 225.000000 -> '225'."""
    text = format(amount, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def cents_to_usd(cents: int) -> Decimal:
    return Decimal(cents) / 100


def parse_decimal(value: object, *, field: str = "amount") -> Decimal:
    """Parse a client-supplied amount: a decimal string or an integer, never a float."""
    if isinstance(value, (bool, float)):
        raise MoneyError(f'{field} must be a decimal string such as "12.50", not a float.')
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise MoneyError(f'{field} must be a decimal number such as "12.50".') from None
        if not amount.is_finite():
            raise MoneyError(f"{field} must be a finite decimal number.")
        return amount
    raise MoneyError(f'{field} must be a decimal string such as "12.50".')


def parse_credits(value: object, *, field: str = "credits") -> int:
    """Client-supplied credits -> nano-credits; more than 9 decimal places is refused."""
    amount = parse_decimal(value, field=field)
    if amount.as_tuple().exponent < -9:  # type: ignore[operator]
        raise MoneyError(f"{field} has more than 9 decimal places.")
    return int(amount * _NANO_D)
