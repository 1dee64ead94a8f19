"""Every write of the price catalog, by topic: price versions and the catalog version
(versions), CSV price lists (price_lists), the catalog file (catalog)."""

from .catalog import CatalogLoadResult, catalog_load
from .price_lists import PriceListPreview, PriceListRow, price_list_apply, price_list_preview
from .versions import (
    PriceValue,
    catalog_version_bump,
    model_save,
    price_version_create,
    price_version_validate,
    provider_save,
)

__all__ = [
    "CatalogLoadResult",
    "PriceListPreview",
    "PriceListRow",
    "PriceValue",
    "catalog_load",
    "catalog_version_bump",
    "model_save",
    "price_list_apply",
    "price_list_preview",
    "price_version_create",
    "price_version_validate",
    "provider_save",
]
