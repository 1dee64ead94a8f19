"""Price versions and the catalog version.

Prices are append-only (database triggers refuse UPDATE and DELETE): a change is a new version
with its own effective_from, and history is never rewritten, so a new version must start after
the model's latest one. Every catalog write bumps the catalog version that the price book and
the models API cache are keyed on (see pricing.selectors).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from rest_framework import status

from accounts.services import price_change_publish
from gateway_billing.errors import ApplicationError

from ..csv_io import PriceValueError, parse_price_value
from ..models import Model, Price, Provider
from ..selectors import CATALOG_VERSION_KEY, PRICE_FIELDS, forget_book

logger = logging.getLogger(__name__)

PriceValue = Decimal | str | int | None


def _bump() -> None:
    forget_book()
    try:
        cache.incr(CATALOG_VERSION_KEY)
    except ValueError:  # missing (first write, or the cache was flushed)
        cache.add(CATALOG_VERSION_KEY, time.time_ns(), timeout=None)
    except Exception:  # an outage: readers fall back to the book's max age
        logger.warning("pricing: could not bump the catalog version", exc_info=True)


def catalog_version_bump() -> None:
    """Tell every process the catalog changed: now (same transaction, tests) and on commit
    (other processes, once the rows are visible to them)."""
    _bump()
    transaction.on_commit(_bump)


@transaction.atomic
def provider_save(*, provider: Provider) -> Provider:
    provider.save()
    catalog_version_bump()
    return provider


@transaction.atomic
def model_save(*, model: Model) -> Model:
    model.save()
    catalog_version_bump()
    return model


# ---- price versions ------------------------------------------------------------------------


def clean_values(raw: Mapping[str, PriceValue]) -> dict[str, Decimal | None]:
    values: dict[str, Decimal | None] = {}
    errors: dict[str, list[str]] = {}
    for name in PRICE_FIELDS:
        try:
            values[name] = parse_price_value(raw.get(name), field=name)
        except PriceValueError as exc:
            errors[name] = [str(exc)]
    if errors:
        first = next(iter(errors.values()))[0]
        raise ApplicationError("invalid_price", first, fields=errors)
    return values


def _clean_gpu_prices(raw: Mapping[str, PriceValue] | None) -> dict[str, str]:
    cleaned: dict[str, str] = {}
    for gpu, value in (raw or {}).items():
        name = f"gpu_second_prices.{gpu}"
        try:
            amount = parse_price_value(value, field=name)
        except PriceValueError as exc:
            raise ApplicationError(
                "invalid_price", str(exc), fields={"gpu_second_prices": [str(exc)]}
            ) from None
        if not str(gpu).strip() or amount is None:
            message = "gpu_second_prices maps a GPU type to a USD price per second."
            raise ApplicationError(
                "invalid_price", message, fields={"gpu_second_prices": [message]}
            )
        cleaned[str(gpu).strip()] = format(amount, "f")
    return cleaned


def check_effective_from(*, model: Model, effective_from: datetime, latest: Price | None) -> None:
    if timezone.is_naive(effective_from):
        raise ApplicationError(
            "invalid_effective_from",
            "effective_from needs a time zone.",
            fields={"effective_from": ["Give a time zone, e.g. 2026-01-01T00:00:00Z."]},
        )
    if latest is None:
        return
    if effective_from == latest.effective_from:
        message = (
            f"{model.name} already has a version effective from "
            f"{latest.effective_from.isoformat()}; choose a later time."
        )
        raise ApplicationError(
            "price_version_exists",
            message,
            fields={"effective_from": [message]},
            status_code=status.HTTP_409_CONFLICT,
        )
    if effective_from < latest.effective_from:
        message = (
            f"{model.name}'s latest version starts {latest.effective_from.isoformat()}; a new "
            "version must start after it (price history is never rewritten)."
        )
        raise ApplicationError(
            "price_history_immutable",
            message,
            fields={"effective_from": [message]},
            status_code=status.HTTP_409_CONFLICT,
        )


def _latest_version(model: Model) -> Price | None:
    return Price.objects.filter(model=model).order_by("-effective_from").first()


def price_version_validate(
    *,
    model: Model,
    effective_from: datetime,
    values: Mapping[str, PriceValue],
    gpu_second_prices: Mapping[str, PriceValue] | None = None,
) -> dict[str, Decimal | None]:
    """Check a would-be version without writing it (forms call this to show errors early).
    Returns the cleaned values; raises ApplicationError."""
    cleaned = clean_values(values)
    gpu = _clean_gpu_prices(gpu_second_prices)
    if all(value is None for value in cleaned.values()) and not gpu:
        raise ApplicationError(
            "price_empty", "A price version needs at least one price; empty means N/A for all."
        )
    check_effective_from(model=model, effective_from=effective_from, latest=_latest_version(model))
    return cleaned


@transaction.atomic
def price_version_create(
    *,
    model: Model,
    effective_from: datetime,
    author: AbstractBaseUser | None,
    input_per_1m: PriceValue = None,
    cache_read_per_1m: PriceValue = None,
    output_per_1m: PriceValue = None,
    cache_write_per_1m: PriceValue = None,
    per_image: PriceValue = None,
    per_megapixel: PriceValue = None,
    per_video_second: PriceValue = None,
    per_video: PriceValue = None,
    per_request: PriceValue = None,
    gpu_second_prices: Mapping[str, PriceValue] | None = None,
    note: str = "",
) -> Price:
    """A new price version of `model` (USD; None = not offered) from `effective_from` on.

    Refused: negative amounts, more than 6 decimal places, floats, an empty version, and an
    effective_from equal to or earlier than the model's latest version.
    """
    raw = {
        "input_per_1m": input_per_1m,
        "cache_read_per_1m": cache_read_per_1m,
        "output_per_1m": output_per_1m,
        "cache_write_per_1m": cache_write_per_1m,
        "per_image": per_image,
        "per_megapixel": per_megapixel,
        "per_video_second": per_video_second,
        "per_video": per_video,
        "per_request": per_request,
    }
    # Serialise concurrent versions of one model: the latest-version check below must hold.
    Model.objects.select_for_update().only("pk").get(pk=model.pk)
    values = price_version_validate(
        model=model, effective_from=effective_from, values=raw, gpu_second_prices=gpu_second_prices
    )
    price = Price.objects.create(
        model=model,
        effective_from=effective_from,
        author=author,
        note=note[:200],
        gpu_second_prices=_clean_gpu_prices(gpu_second_prices),
        **values,
    )
    catalog_version_bump()
    price_change_publish(price=price, actor=author)  # audit entry + price.changed events
    return price
