"""POST /api/v1/authorize and POST /api/v1/authorize/{request_id}/release.

Authorize sits in front of every model call, so its common case skips DRF's per-request
machinery (gateway_billing/fastpath.py); anything unusual is answered by the DRF view.
"""

from __future__ import annotations

import time
from typing import Any

from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import (
    ApiKeyAuthentication,
    ApiPrincipal,
    bearer_key,
    principal_reload,
)
from gateway_billing import metrics
from gateway_billing.errors import ApplicationError, ErrorSerializer
from gateway_billing.fastpath import FastJsonPost
from gateway_billing.permissions import key_context, team_context

from . import services

MAX_TOKENS = 10**10
FIELDS = {"model", "provider", "project", "estimated_input_tokens", "max_output_tokens",
          "request_id"}  # fmt: skip


def _invalid(field: str, message: str) -> ApplicationError:
    return ApplicationError("invalid", message, fields={field: [message]})


def _count(data: dict, name: str) -> int:
    value = data.get(name)
    if value is None:
        raise _invalid(name, f"{name} is required (a whole number of tokens).")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        raise _invalid(name, f"{name} must be a whole number from 0 to 10^10.")
    return value


def _text(data: dict, name: str, *, required: bool = False, max_len: int = 128) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise _invalid(name, f"{name} must be a non-empty string of at most {max_len} characters.")
    return value.strip()


def parse(data: Any) -> services.AuthorizeRequest:
    """A fast validator for the hot path (the serializer below documents the same shape)."""
    if not isinstance(data, dict):
        raise _invalid("non_field_errors", "Send a JSON object.")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise _invalid(
            unknown[0], f"Unknown field {unknown[0]!r}; allowed: {', '.join(sorted(FIELDS))}."
        )
    provider = _text(data, "provider")
    return services.AuthorizeRequest(
        model=_text(data, "model", required=True),  # type: ignore[arg-type]
        estimated_input_tokens=_count(data, "estimated_input_tokens"),
        max_output_tokens=_count(data, "max_output_tokens"),
        provider=provider.lower() if provider else None,
        project=_text(data, "project", max_len=60),
        request_id=_text(data, "request_id"),
    )


class AuthorizeInputSerializer(serializers.Serializer):
    model = serializers.CharField()
    provider = serializers.CharField(required=False)
    project = serializers.SlugField(required=False)
    estimated_input_tokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS)
    max_output_tokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS)
    request_id = serializers.CharField(required=False, max_length=128)


class AuthorizeOutputSerializer(serializers.Serializer):
    allowed = serializers.BooleanField()
    request_id = serializers.CharField()
    hold = serializers.DictField()
    tpm = serializers.DictField()
    balance = serializers.DictField()
    budgets = serializers.ListField()
    degraded = serializers.BooleanField()


class AuthorizeApi(FastJsonPost, APIView):
    authentication_classes = [ApiKeyAuthentication]
    scope = "authorize"
    epoch_checked_by_caller = True  # the decision script checks the key's epoch

    def fast_post(self, principal: ApiPrincipal, data: Any, raw_key: str) -> tuple[dict, int]:
        """Authorize for a resolved key; a key whose team changed meanwhile is loaded again."""
        request = parse(data)
        for attempt in range(2):
            try:
                decision = services.authorize(
                    ctx=key_context(principal), plan_id=principal.plan_id, request=request,
                    budgets=principal.budgets, cycle_start=principal.cycle_start,
                    recharge=principal.recharge, epoch=principal.epoch if attempt == 0 else "*",
                )  # fmt: skip
            except services.StaleKey:
                principal = self._reload(raw_key, principal)
                continue
            if decision.degraded:  # Redis is down, so no epoch was checked: ask the database
                self._reload(raw_key, principal)
            return decision.render(), 200
        raise AssertionError("unreachable")

    def _reload(self, raw_key: str, principal: ApiPrincipal) -> ApiPrincipal:
        reloaded = principal_reload(raw_key, principal)
        if reloaded is None or self.scope not in reloaded.scopes:
            raise ApplicationError(
                "unauthenticated", "Unknown or revoked API key.", status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        return reloaded

    @classmethod
    def fast(cls, request: HttpRequest) -> HttpResponse | None:
        """Times every fast answer (the key lookup included) and counts the decision."""
        started = time.perf_counter()
        response = super().fast(request)
        if response is not None:
            metrics.authorize_observe(response, time.perf_counter() - started)
        return response

    def dispatch(self, request, *args, **kwargs):
        """The DRF path, timed and counted the same way."""
        started, response = time.perf_counter(), None
        try:
            response = super().dispatch(request, *args, **kwargs)
            return response
        finally:
            metrics.authorize_observe(response, time.perf_counter() - started)

    @extend_schema(
        request=AuthorizeInputSerializer,
        responses={
            200: AuthorizeOutputSerializer,
            402: OpenApiResponse(
                ErrorSerializer, description="insufficient_credits / budget_exceeded"
            ),
            422: OpenApiResponse(ErrorSerializer, description="unknown_model / model_unpriced"),
            429: OpenApiResponse(ErrorSerializer, description="rate_limited; see Retry-After"),
            503: OpenApiResponse(
                ErrorSerializer, description="rate limiter down and failing closed"
            ),
        },
        summary="May this team make this model call now? Places a hold.",
    )
    def post(self, request: Request) -> Response:
        team_context(request, scope=self.scope)  # the scope check, in the one error shape
        raw_key = bearer_key(request.META.get("HTTP_AUTHORIZATION", ""))
        body, status = self.fast_post(request.user, request.data, raw_key)  # type: ignore[arg-type]
        return Response(body, status=status)


class HoldReleaseApi(APIView):
    authentication_classes = [ApiKeyAuthentication]

    @extend_schema(request=None, responses={204: None}, summary="Free a hold early")
    def post(self, request: Request, request_id: str) -> Response:
        ctx = team_context(request, scope="authorize")
        services.hold_release(ctx=ctx, request_id=request_id)
        return Response(status=204)
