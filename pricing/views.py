"""The public pricing page: every model's current prices, and a calculator.

No login. Prices come from the price book (no query when it is warm, two when cold). The
calculator is a GET form rated on the server with the billing code; with htmx vendored, the
form swaps only the result (``pricing:estimate``, the same computation as a fragment).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from gateway_billing.assets import HTMX, vendored

from . import selectors
from .calculator import estimate
from .forms import CalculatorForm
from .models import TOKEN_PRICE_FIELDS, UNIT_PRICE_FIELDS
from .money import format_decimal, format_usd
from .rating import UnpricedUsage

TOKEN_LABELS = {
    "input_per_1m": "Input",
    "cache_read_per_1m": "Cached input (cache read)",
    "output_per_1m": "Output",
    "cache_write_per_1m": "Cache write",
}
UNIT_LABELS = {
    "per_image": "image",
    "per_megapixel": "megapixel",
    "per_video_second": "video second",
    "per_video": "video",
    "per_request": "request",
}
CALCULATOR_FIELDS = ("model", "input_tokens", "output_tokens", "cached_share", "requests")


@dataclass(frozen=True, slots=True)
class Amount:
    usd: str
    credits: str


def _amount(usd: Decimal | None, credits_per_usd: Decimal) -> Amount | None:
    if usd is None:
        return None
    return Amount(usd=format_usd(usd), credits=format_decimal(usd * credits_per_usd))


def _price_rows(credits_per_usd: Decimal) -> list[dict[str, Any]]:
    providers = []
    for provider in selectors.catalog_by_provider():
        rows = []
        for entry in provider.entries:
            price = entry.price
            rows.append(
                {
                    "model": entry.model,
                    "priced": price is not None,
                    "tokens": [
                        _amount(price.value(name) if price else None, credits_per_usd)
                        for name in TOKEN_PRICE_FIELDS
                    ],
                    "units": [
                        (UNIT_LABELS[name], _amount(price.value(name), credits_per_usd))
                        for name in UNIT_PRICE_FIELDS
                        if price is not None and price.value(name) is not None
                    ]
                    + [
                        (f"GPU second ({gpu})", _amount(value, credits_per_usd))
                        for gpu, value in (price.terms.gpu_second_prices if price else {}).items()
                    ],
                }
            )
        providers.append({"slug": provider.slug, "name": provider.name, "rows": rows})
    return providers


def _calculator(request: HttpRequest, credits_per_usd: Decimal) -> dict[str, Any]:
    """The calculator's form and, when it is valid, its estimate. Without parameters the
    form's initial values are estimated (an example)."""
    book = selectors.price_book()
    priced = [entry for entry in selectors.catalog_current() if entry.price is not None]
    submitted = any(name in request.GET for name in CALCULATOR_FIELDS)
    data = request.GET if submitted else None
    form = CalculatorForm(data, book=book, priced=priced)
    if data is None:
        form = CalculatorForm(
            {name: form.get_initial_for_field(form.fields[name], name) for name in form.fields},
            book=book,
            priced=priced,
        )
    result = entry = None
    if form.is_valid():
        entry = form.entry
        try:
            result = estimate(
                workload=form.workload, terms=entry.price.terms, credits_per_usd=credits_per_usd
            )
        except UnpricedUsage as exc:
            form.add_error(
                None, f"{entry.model.name} has no price for {exc.component.replace('_', ' ')}."
            )
    return {"form": form, "estimate": result, "entry": entry, "submitted": submitted}


def _context(request: HttpRequest) -> dict[str, Any]:
    credits_per_usd: Decimal = settings.CREDITS_PER_USD
    return {
        "credits_per_usd": format_decimal(credits_per_usd),
        "now": timezone.now(),
        "htmx": vendored(HTMX),
        **_calculator(request, credits_per_usd),
    }


@require_safe
def pricing_page(request: HttpRequest) -> HttpResponse:
    context = _context(request)
    context["providers"] = _price_rows(settings.CREDITS_PER_USD)
    context["token_labels"] = list(TOKEN_LABELS.values())
    return render(request, "pricing/pricing.html", context)


@require_safe
def pricing_estimate(request: HttpRequest) -> HttpResponse:
    """The calculator's result alone (htmx swaps it in; also a plain page fragment)."""
    return render(request, "pricing/_estimate.html", _context(request))
