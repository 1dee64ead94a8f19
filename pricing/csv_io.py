"""The price-list CSV format, for the admin's export and import. Pure: no database.

    provider,model,input_per_1m,cache_read_per_1m,output_per_1m,cache_write_per_1m,
    per_image,per_megapixel,per_video_second,per_video,per_request

One row per model; USD; token prices per 1M tokens. An empty cell (or "N/A") means the
component is not offered. Line numbers are the file's physical lines (the header is line 1).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from .models import TOKEN_PRICE_FIELDS, UNIT_PRICE_FIELDS
from .money import MoneyError, format_usd, parse_decimal

PRICE_COLUMNS = TOKEN_PRICE_FIELDS + UNIT_PRICE_FIELDS
COLUMNS = ("provider", "model", *PRICE_COLUMNS)
PRICE_PLACES = 6  # Price's DecimalFields: decimal_places=6
PRICE_INTEGER_DIGITS = 10  # max_digits=16 minus the 6 places
_EMPTY = {"", "n/a", "na"}


class PriceValueError(ValueError):
    """A price cell or argument that cannot be stored."""


@dataclass(frozen=True, slots=True)
class CsvRow:
    line: int
    provider: str
    model: str
    values: dict[str, Decimal | None]


@dataclass(frozen=True, slots=True)
class CsvError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def check_price_value(amount: Decimal, *, field: str) -> Decimal:
    """A USD price as the catalog stores it: finite, >= 0, at most 6 decimal places."""
    if amount < 0:
        raise PriceValueError(f"{field} must not be negative (got {amount}).")
    normalized = amount.normalize()
    if normalized.as_tuple().exponent < -PRICE_PLACES:  # type: ignore[operator]
        raise PriceValueError(f"{field} has more than {PRICE_PLACES} decimal places ({amount}).")
    if abs(amount) >= Decimal(10) ** PRICE_INTEGER_DIGITS:
        raise PriceValueError(f"{field} is too large ({amount}).")
    return amount


def parse_price_value(value: object, *, field: str) -> Decimal | None:
    """A price from a CSV cell, a form or a JSON string. None / empty / "N/A" -> None.
    Floats are refused: they cannot carry an exact price."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise PriceValueError(f"{field} must be a finite decimal number.")
        return check_price_value(value, field=field)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _EMPTY:
            return None
        value = text.removeprefix("$")
    try:
        amount = parse_decimal(value, field=field)
    except MoneyError as exc:
        raise PriceValueError(str(exc)) from None
    return check_price_value(amount, field=field)


def parse_price_list(text: str) -> tuple[list[CsvRow], list[CsvError]]:
    """Parse a price list. Rows with errors are left out of the rows and reported instead."""
    rows: list[CsvRow] = []
    errors: list[CsvError] = []
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = next(reader)
    except StopIteration:
        return [], [CsvError(1, "The file is empty; expected a header: " + ",".join(COLUMNS))]
    if tuple(cell.strip().lower() for cell in header) != COLUMNS:
        errors.append(CsvError(1, "Wrong header: expected exactly " + ",".join(COLUMNS)))
        return [], errors
    seen: dict[str, int] = {}
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(COLUMNS):
            errors.append(CsvError(line, f"Expected {len(COLUMNS)} cells, found {len(cells)}."))
            continue
        provider, model = cells[0].strip().lower(), cells[1].strip()
        if not model:
            errors.append(CsvError(line, "The model cell is empty."))
            continue
        if model in seen:
            errors.append(CsvError(line, f"{model} already appears on line {seen[model]}."))
            continue
        seen[model] = line
        values: dict[str, Decimal | None] = {}
        row_errors = []
        for column, cell in zip(PRICE_COLUMNS, cells[2:], strict=True):
            try:
                values[column] = parse_price_value(cell, field=column)
            except PriceValueError as exc:
                row_errors.append(CsvError(line, f"{model}: {exc}"))
        if row_errors:
            errors.extend(row_errors)
            continue
        rows.append(CsvRow(line=line, provider=provider, model=model, values=values))
    return rows, errors


def render_price_list(rows: Iterable[tuple[str, str, Mapping[str, Decimal | None]]]) -> str:
    """(provider, model, {column: USD or None}) rows -> CSV text with the header."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for provider, model, values in rows:
        cells = [
            "" if values.get(column) is None else format_usd(values[column])  # type: ignore[arg-type]
            for column in PRICE_COLUMNS
        ]
        writer.writerow([provider, model, *cells])
    return out.getvalue()
