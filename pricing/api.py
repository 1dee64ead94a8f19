"""Public catalog API: the models and their current prices. No key needed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse, HttpResponseNotModified
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from . import selectors
from .models import TOKEN_PRICE_FIELDS, UNIT_PRICE_FIELDS
from .money import format_usd

MODELS_CACHE_SECONDS = 3600  # the key changes with the catalog; this only bounds memory
CLIENT_MAX_AGE_SECONDS = 60
# "input" -> "input_per_1m", ...
_TOKEN_KEYS = {name.removesuffix("_per_1m"): name for name in TOKEN_PRICE_FIELDS}


def _plain(amount: Decimal) -> str:
    """A decimal string without exponent or trailing zeros: 225.000000 -> '225'."""
    text = format(amount, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True, slots=True)
class _Document:
    etag: str
    body: bytes


class TokenPricesSerializer(serializers.Serializer):
    input = serializers.CharField(allow_null=True)
    cache_read = serializers.CharField(allow_null=True)
    output = serializers.CharField(allow_null=True)
    cache_write = serializers.CharField(allow_null=True)


class ModelListItemSerializer(serializers.Serializer):
    provider = serializers.CharField(help_text="Provider slug: openai, anthropic, gemini")
    name = serializers.CharField(help_text="The model name to send in usage events")
    display_name = serializers.CharField()
    kind = serializers.CharField(help_text="chat, image, video or other")
    priced = serializers.BooleanField(help_text="False: usage is recorded unrated until priced")
    price_version = serializers.IntegerField(allow_null=True)
    effective_from = serializers.DateTimeField(allow_null=True)
    prices_per_1m = TokenPricesSerializer(help_text="USD per 1M tokens; null = not offered")
    credits_per_1m = TokenPricesSerializer(help_text="Credits per 1M tokens; null = not offered")
    unit_prices = serializers.DictField(
        child=serializers.CharField(), help_text="USD per unit, only the priced units"
    )
    gpu_second_prices = serializers.DictField(
        child=serializers.CharField(), help_text="USD per GPU second by machine type"
    )


class ModelListOutputSerializer(serializers.Serializer):
    credits_per_usd = serializers.CharField(help_text="Credits per 1 USD of provider cost")
    models = ModelListItemSerializer(many=True)


class ModelListApi(APIView):
    """GET /api/v1/models: public, cached, ETag-validated."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    OutputSerializer = ModelListOutputSerializer

    @extend_schema(
        operation_id="models_list",
        summary="List models and current prices",
        description=(
            "Every catalog model with its current price (USD per 1M tokens, and credits per "
            "1M tokens at `credits_per_usd`). Decimal strings; null = not offered (billed at "
            "the input rate). No authentication. Supports `If-None-Match` (strong ETag)."
        ),
        parameters=[
            OpenApiParameter(
                "If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False
            )
        ],
        responses={
            200: ModelListOutputSerializer,
            304: OpenApiResponse(description="Not modified: the ETag matched; no body."),
        },
    )
    def get(self, request: Request) -> HttpResponse:
        document = _models_document()
        headers = {"ETag": document.etag, "Cache-Control": f"max-age={CLIENT_MAX_AGE_SECONDS}"}
        if _etag_matches(request.headers.get("If-None-Match"), document.etag):
            return HttpResponseNotModified(headers=headers)
        return HttpResponse(document.body, content_type="application/json", headers=headers)


def _etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    return etag in {tag.strip().removeprefix("W/") for tag in header.split(",")}


def _model_row(entry: selectors.CatalogEntry, credits_per_usd: Decimal) -> dict:
    price = entry.price
    token_prices = {
        key: (price.value(field) if price else None) for key, field in _TOKEN_KEYS.items()
    }
    units = {field: price.value(field) for field in UNIT_PRICE_FIELDS} if price else {}
    return {
        "provider": entry.model.provider,
        "name": entry.model.name,
        "display_name": entry.model.display_name,
        "kind": entry.model.kind,
        "priced": price is not None,
        "price_version": price.id if price else None,
        "effective_from": price.effective_from if price else None,
        "prices_per_1m": {k: None if v is None else format_usd(v) for k, v in token_prices.items()},
        "credits_per_1m": {
            k: None if v is None else _plain(v * credits_per_usd) for k, v in token_prices.items()
        },
        "unit_prices": {k: format_usd(v) for k, v in units.items() if v is not None},
        "gpu_second_prices": {
            gpu: format_usd(v)
            for gpu, v in (price.terms.gpu_second_prices if price else {}).items()
        },
    }


def _models_document() -> _Document:
    """The rendered list, cached under the catalog state (new versions, scheduled versions
    becoming effective, the credits rate), so a warm request costs one or two cache reads."""
    now = timezone.now()
    credits_per_usd: Decimal = settings.CREDITS_PER_USD
    state = selectors.price_book().state_key(at=now)
    key = f"pricing:models-api:v1:{state}:{credits_per_usd}"
    cached = cache.get(key)
    if cached is not None:
        return _Document(*cached)
    rows = [_model_row(entry, credits_per_usd) for entry in selectors.catalog_current(at=now)]
    data = ModelListApi.OutputSerializer(
        {"credits_per_usd": _plain(credits_per_usd), "models": rows}
    ).data
    body = JSONRenderer().render(data)
    document = _Document(etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"', body=body)
    cache.set(key, (document.etag, document.body), MODELS_CACHE_SECONDS)
    return document
