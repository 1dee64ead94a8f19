"""Reads of the price catalog.

Two ways in:

- ``price_at``, ``price_terms``, ``model_by_name``: single lookups straight from the database,
  for admin pages, scripts and anything that must see its own uncommitted writes.
- ``price_book()``: the hot path (rating 1,000 events per request, the public models list).

The price book
--------------
A ``PriceBook`` is the whole catalog in memory: every model (one query, joined with its
provider) and every price version (one query), grouped per model and sorted by
``effective_from``. ``book.price_at(model=..., at=...)`` is a bisect: no I/O, so a batch of
events costs the same two queries as one event, and nothing at all while the book is warm.

It is cached per process and tagged with the **catalog version**, an integer kept in Django's
cache (Redis in production) under ``CATALOG_VERSION_KEY``:

- every service that changes a price, model or provider calls
  ``services.catalog_version_bump()``, which increments the key immediately and again on
  commit (the second bump makes every process reload once the new rows are visible; the
  first one lets code in the same transaction, and tests, see the change at once);
- ``price_book()`` reads the key at most once a second per process (one cache GET) and
  reloads when it differs from the book's tag; a bump made in this process is seen at once. The increment is atomic and readers never write it (except
  ``add`` when the key is missing, e.g. after a cache flush: a fresh time-based value), so
  there is no lost-update race: a book loaded just before a commit is tagged with the old
  version and replaced on the next call;
- as a safety net for writes that bypass the services (a shell, raw SQL) or a cache that is not
  shared between processes (the embedded local-memory cache), a book older than
  ``BOOK_MAX_AGE_SECONDS`` is reloaded; if the cache is unreachable the book is reused until
  that age rather than failing the request.

Known limit: a process that loads the book inside a transaction which wrote a price and then
rolls back keeps the phantom version until the next bump or ``BOOK_MAX_AGE_SECONDS``; no
service reads the book after writing a price.
"""

from __future__ import annotations

import bisect
import difflib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core.cache import cache
from django.utils import timezone

from .csv_io import render_price_list
from .models import TOKEN_PRICE_FIELDS, UNIT_PRICE_FIELDS, Model, Price
from .money import parse_decimal
from .rating import PriceTerms

logger = logging.getLogger(__name__)

PRICE_FIELDS = TOKEN_PRICE_FIELDS + UNIT_PRICE_FIELDS
CATALOG_VERSION_KEY = "pricing:catalog-version"
BOOK_MAX_AGE_SECONDS = 60.0
VERSION_CHECK_SECONDS = 1.0


def _require_aware(at: datetime) -> None:
    if timezone.is_naive(at):
        raise ValueError("A timezone-aware datetime is required.")


# ---- single lookups (database) -------------------------------------------------------------


def price_at(*, model: Model | int, at: datetime) -> Price | None:
    """The version of `model` in force at `at`: the greatest effective_from <= at."""
    _require_aware(at)
    model_id = model.pk if isinstance(model, Model) else model
    return (
        Price.objects.filter(model_id=model_id, effective_from__lte=at)
        .order_by("-effective_from")
        .first()
    )


def _gpu_prices(raw: dict | None) -> dict[str, Decimal]:
    return {
        str(gpu): parse_decimal(value, field=f"gpu_second_prices.{gpu}")
        for gpu, value in (raw or {}).items()
    }


def price_terms(price: Price) -> PriceTerms:
    """A Price row as the plain values `rating.rate` takes."""
    return PriceTerms(
        version_id=price.pk,
        **{name: getattr(price, name) for name in PRICE_FIELDS},
        gpu_second_prices=_gpu_prices(price.gpu_second_prices),
    )


def model_by_name(*, name: str, provider: str | None = None) -> Model | None:
    """A catalog model by its exact API name, optionally checked against a provider slug."""
    queryset = Model.objects.select_related("provider").filter(name=name.strip())
    if provider:
        queryset = queryset.filter(provider__slug=provider.strip().lower())
    return queryset.first()


def model_suggestions(*, name: str, limit: int = 3) -> list[str]:
    """The catalog names closest to `name` (for "unknown model, did you mean ..." errors)."""
    names = {model.name.lower(): model.name for model in price_book().models}
    matches = difflib.get_close_matches(name.strip().lower(), list(names), n=limit, cutoff=0.6)
    return [names[match] for match in matches]


# ---- the price book (memory) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: int
    name: str
    display_name: str
    kind: str
    provider: str  # slug
    provider_name: str


@dataclass(frozen=True, slots=True)
class PriceVersion:
    id: int
    model_id: int
    effective_from: datetime
    terms: PriceTerms

    def value(self, field: str) -> Decimal | None:
        return getattr(self.terms, field)


class PriceBook:
    """Every model and price version, answering price_at in memory (see the module doc)."""

    def __init__(
        self, *, version: str, models: list[ModelInfo], versions: list[PriceVersion]
    ) -> None:
        self.version = version
        self.loaded_at = time.monotonic()
        self.models: tuple[ModelInfo, ...] = tuple(models)
        self._by_id = {model.id: model for model in models}
        self._by_name = {model.name: model for model in models}
        grouped: dict[int, list[PriceVersion]] = {}
        for price in sorted(versions, key=lambda v: (v.model_id, v.effective_from)):
            grouped.setdefault(price.model_id, []).append(price)
        self._versions = {model_id: tuple(prices) for model_id, prices in grouped.items()}
        self._starts = {
            model_id: [price.effective_from for price in prices]
            for model_id, prices in grouped.items()
        }
        # Every instant at which some model's current price changes, for `state_key`.
        self._boundaries = sorted({price.effective_from for price in versions})

    def model(self, *, name: str) -> ModelInfo | None:
        return self._by_name.get(name)

    def model_by_id(self, model_id: int) -> ModelInfo | None:
        return self._by_id.get(model_id)

    def _model_id(self, model: int | str | ModelInfo | Model) -> int | None:
        if isinstance(model, str):
            info = self._by_name.get(model)
            return info.id if info else None
        if isinstance(model, int):
            return model
        return model.id

    def versions(self, *, model: int | str | ModelInfo | Model) -> tuple[PriceVersion, ...]:
        """All versions of a model, oldest first."""
        model_id = self._model_id(model)
        return self._versions.get(model_id, ()) if model_id is not None else ()

    def price_at(
        self, *, model: int | str | ModelInfo | Model, at: datetime
    ) -> PriceVersion | None:
        """The version in force at `at` (greatest effective_from <= at), or None."""
        _require_aware(at)
        model_id = self._model_id(model)
        starts = self._starts.get(model_id) if model_id is not None else None
        if not starts:
            return None
        index = bisect.bisect_right(starts, at)
        return self._versions[model_id][index - 1] if index else None

    def state_key(self, *, at: datetime) -> str:
        """Changes whenever the set of current prices at `at` may differ: a new catalog version
        or a scheduled version becoming effective. Used to key caches of "current" views."""
        return f"{self.version}:{bisect.bisect_right(self._boundaries, at)}"


_book: PriceBook | None = None
_book_lock = threading.Lock()


def catalog_version() -> str | None:
    """The shared catalog version (None when the cache cannot be reached)."""
    try:
        version = cache.get(CATALOG_VERSION_KEY)
        if version is None:
            cache.add(CATALOG_VERSION_KEY, time.time_ns(), timeout=None)
            version = cache.get(CATALOG_VERSION_KEY)
    except Exception:  # a cache outage must not stop rating; the max age bounds staleness
        logger.warning("pricing: catalog version unavailable from the cache", exc_info=True)
        return None
    return None if version is None else str(version)


def _load_book(version: str) -> PriceBook:
    models = [
        ModelInfo(
            id=row[0],
            name=row[1],
            display_name=row[2] or row[1],
            kind=row[3],
            provider=row[4],
            provider_name=row[5],
        )
        for row in Model.objects.order_by("provider__slug", "name").values_list(
            "id", "name", "display_name", "kind", "provider__slug", "provider__name"
        )
    ]
    versions = [
        PriceVersion(
            id=row["id"],
            model_id=row["model_id"],
            effective_from=row["effective_from"],
            terms=PriceTerms(
                version_id=row["id"],
                **{name: row[name] for name in PRICE_FIELDS},
                gpu_second_prices=_gpu_prices(row["gpu_second_prices"]),
            ),
        )
        for row in Price.objects.order_by().values(
            "id", "model_id", "effective_from", *PRICE_FIELDS, "gpu_second_prices"
        )
    ]
    return PriceBook(version=version, models=models, versions=versions)


def _fresh(book: PriceBook | None, version: str | None) -> bool:
    if book is None or time.monotonic() - book.loaded_at > BOOK_MAX_AGE_SECONDS:
        return False
    return version is None or book.version == version


_checked_at = 0.0  # when this process last compared its book with the shared version


def forget_book() -> None:
    """Make the next price_book() call check the shared version (a bump in this process)."""
    global _checked_at
    _checked_at = 0.0


def price_book() -> PriceBook:
    """The process's PriceBook, reloaded when the catalog version moved (see the module doc).

    The shared version is read at most once per VERSION_CHECK_SECONDS: the hot path then costs
    no I/O at all, and another process's price change reaches this one within that second.
    """
    global _book, _checked_at
    now = time.monotonic()
    checked = _checked_at  # read before the book: writers set the book first, then the time
    book = _book
    if book is not None and now - checked < VERSION_CHECK_SECONDS:
        return book
    version = catalog_version()
    if _fresh(book, version):
        _checked_at = now
        return book  # type: ignore[return-value]
    with _book_lock:
        book = _book
        if not _fresh(book, version):
            book = _load_book(version or f"local-{time.time_ns()}")
            _book = book
        _checked_at = now
    return book


# ---- catalog views -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    model: ModelInfo
    price: PriceVersion | None  # None: the model exists but has no price (yet) at that time


def catalog_current(*, at: datetime | None = None) -> list[CatalogEntry]:
    """Every model with its provider, kind and the price in force at `at` (default: now),
    ordered by provider then name. Served from the price book: 0 queries when warm, 2 cold."""
    at = at or timezone.now()
    book = price_book()
    return [CatalogEntry(model=m, price=book.price_at(model=m.id, at=at)) for m in book.models]


def price_list_export(*, at: datetime | None = None) -> str:
    """The current price list as CSV (the import format); unpriced models have empty cells."""
    rows = []
    for entry in catalog_current(at=at):
        values = {name: (entry.price.value(name) if entry.price else None) for name in PRICE_FIELDS}
        rows.append((entry.model.provider, entry.model.name, values))
    return render_price_list(rows)


@dataclass(frozen=True, slots=True)
class ProviderCatalog:
    slug: str
    name: str
    entries: tuple[CatalogEntry, ...]


def catalog_by_provider(*, at: datetime | None = None) -> list[ProviderCatalog]:
    """``catalog_current`` grouped by provider (providers by slug, models by name)."""
    groups: dict[str, list[CatalogEntry]] = {}
    names: dict[str, str] = {}
    for entry in catalog_current(at=at):
        groups.setdefault(entry.model.provider, []).append(entry)
        names[entry.model.provider] = entry.model.provider_name
    return [
        ProviderCatalog(slug=slug, name=names[slug], entries=tuple(entries))
        for slug, entries in groups.items()
    ]
