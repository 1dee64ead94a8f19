"""CSV price lists: preview what an import would change, then apply it all or nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from gateway_billing.errors import ApplicationError

from ..csv_io import CsvError, parse_price_list
from ..models import Model, Price
from ..selectors import PRICE_FIELDS, model_suggestions
from . import versions
from .versions import check_effective_from


@dataclass(frozen=True, slots=True)
class PriceListRow:
    line: int
    model: Model
    current: Price | None  # the model's latest version, which the new one would follow
    values: dict[str, Decimal | None]

    @property
    def changed_fields(self) -> list[str]:
        return [
            name
            for name in PRICE_FIELDS
            if self.values[name] != (getattr(self.current, name) if self.current else None)
        ]


@dataclass(frozen=True, slots=True)
class PriceListPreview:
    effective_from: datetime
    changes: list[PriceListRow] = field(default_factory=list)
    unchanged: list[PriceListRow] = field(default_factory=list)
    errors: list[CsvError] = field(default_factory=list)

    @property
    def is_valid(self) -> bool:
        return not self.errors


def _unknown_model_message(name: str) -> str:
    suggestions = model_suggestions(name=name)
    hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
    return f"Unknown model {name!r}.{hint}"


def price_list_preview(*, csv_text: str, effective_from: datetime) -> PriceListPreview:
    """What importing `csv_text` as of `effective_from` would do; writes nothing.

    Models missing from the file keep their prices. A row equal to the model's latest version
    is unchanged; a row for an unpriced model with every cell empty is unchanged too.
    """
    rows, errors = parse_price_list(csv_text)
    models = {
        model.name: model
        for model in Model.objects.select_related("provider").filter(
            name__in=[row.model for row in rows]
        )
    }
    latest: dict[int, Price] = {}
    for price in Price.objects.filter(model__in=models.values()).order_by(
        "model_id", "-effective_from"
    ):
        latest.setdefault(price.model_id, price)
    preview = PriceListPreview(effective_from=effective_from, errors=errors)
    for row in rows:
        model = models.get(row.model)
        if model is None:
            errors.append(CsvError(row.line, _unknown_model_message(row.model)))
            continue
        if row.provider != model.provider.slug:
            errors.append(
                CsvError(
                    row.line,
                    f"{model.name} belongs to provider {model.provider.slug!r}, "
                    f"not {row.provider!r}.",
                )
            )
            continue
        item = PriceListRow(
            line=row.line, model=model, current=latest.get(model.pk), values=row.values
        )
        if not item.changed_fields:
            preview.unchanged.append(item)
            continue
        if all(value is None for value in row.values.values()):
            errors.append(
                CsvError(
                    row.line,
                    f"{model.name}: every cell is empty; prices cannot be "
                    "withdrawn by import (leave the row out to keep them).",
                )
            )
            continue
        try:
            check_effective_from(model=model, effective_from=effective_from, latest=item.current)
        except ApplicationError as exc:
            errors.append(CsvError(row.line, exc.message))
            continue
        preview.changes.append(item)
    errors.sort(key=lambda error: error.line)
    return preview


@transaction.atomic
def price_list_apply(
    *, csv_text: str, effective_from: datetime, author: AbstractBaseUser | None
) -> list[Price]:
    """Create a version for every changed row of the price list, all or nothing."""
    preview = price_list_preview(csv_text=csv_text, effective_from=effective_from)
    if preview.errors:
        raise ApplicationError(
            "price_list_invalid",
            f"The price list has {len(preview.errors)} error(s); nothing was imported.",
            fields={"csv": [str(error) for error in preview.errors]},
        )
    return [
        versions.price_version_create(
            model=row.model,
            effective_from=effective_from,
            author=author,
            gpu_second_prices=row.current.gpu_second_prices if row.current else None,
            note=f"CSV import, line {row.line}",
            **row.values,
        )
        for row in preview.changes
    ]
