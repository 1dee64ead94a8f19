"""POST /api/v1/authorize and POST /api/v1/authorize/{request_id}/release.

Authorize sits in front of every model call, so its common case skips DRF's request wrapping,
negotiation and rendering: a well-formed JSON call with a known key goes straight to the service
and its answer (or its error, in the API's one error shape) is written with orjson. Anything
else (no key, a bad key, malformed JSON, another method) takes the DRF view, which answers it
exactly as every other endpoint does. The DRF view also documents the endpoint.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import (
    ApiKeyAuthentication,
    ApiPrincipal,
    principal_for_key,
    principal_reload,
)
from gateway_billing import metrics
from gateway_billing.errors import ApplicationError, ErrorSerializer, error_body
from gateway_billing.permissions import TeamContext, team_context

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


def _authorize(principal: ApiPrincipal, data: Any, raw_key: str | None) -> dict:
    """Authorize for a resolved key; a key whose team changed meanwhile is loaded again once."""
    request = parse(data)
    for attempt in range(2):
        ctx = TeamContext(team_id=principal.team_id, project_id=principal.project_id,
                          member_id=principal.member_id, key_id=principal.key_id)  # fmt: skip
        try:
            decision = services.authorize(
                ctx=ctx, plan_id=principal.plan_id, request=request, budgets=principal.budgets,
                cycle_start=principal.cycle_start, recharge=principal.recharge,
                epoch=principal.epoch if attempt == 0 else "*",
            )  # fmt: skip
            return decision.render()
        except services.StaleKey:
            reloaded = principal_reload(raw_key, principal) if raw_key else None
            if reloaded is None or "authorize" not in reloaded.scopes:
                raise ApplicationError(
                    "unauthenticated", "Unknown or revoked API key.", status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                ) from None  # fmt: skip
            principal = reloaded
    raise AssertionError("unreachable")


def _fast_authorize(request: HttpRequest) -> HttpResponse | None:
    """The common case without DRF, or None to let the DRF view answer."""
    if request.method != "POST" or request.content_type != "application/json":
        return None
    parts = request.META.get("HTTP_AUTHORIZATION", "").split()
    if len(parts) != 2 or parts[0] != ApiKeyAuthentication.keyword:
        return None
    principal = principal_for_key(parts[1], epoch_checked_by_caller=True)
    if principal is None or "authorize" not in principal.scopes:
        return None
    try:
        data = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return None
    headers: dict[str, str] = {}
    try:
        body, status_code = _authorize(principal, data, parts[1]), 200
    except ApplicationError as exc:
        body = error_body(exc.code, exc.message, exc.fields, **exc.extra)
        status_code, headers = exc.status_code, exc.headers
    response = HttpResponse(orjson.dumps(body), status=status_code, content_type="application/json",
                            headers=headers)  # fmt: skip
    response.error_code = body["error"]["code"] if status_code != 200 else None
    return response


class AuthorizeApi(APIView):
    authentication_classes = [ApiKeyAuthentication]

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        drf_view = super().as_view(**initkwargs)

        def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            started = time.perf_counter()
            response = _fast_authorize(request)
            if response is None:
                return drf_view(request, *args, **kwargs)  # observed by dispatch()
            metrics.authorize_observe(response, time.perf_counter() - started)
            return response

        view.__dict__.update(drf_view.__dict__)  # cls, initkwargs, csrf_exempt: schema and URLs
        return view

    def dispatch(self, request, *args, **kwargs):
        """Times every answer (the key lookup included) and counts the decision."""
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
        team_context(request, scope="authorize")  # the scope check, in the one error shape
        raw_key = request.META.get("HTTP_AUTHORIZATION", "").split()[-1]
        return Response(_authorize(request.user, request.data, raw_key))


class HoldReleaseApi(APIView):
    authentication_classes = [ApiKeyAuthentication]

    @extend_schema(request=None, responses={204: None}, summary="Free a hold early")
    def post(self, request: Request, request_id: str) -> Response:
        ctx = team_context(request, scope="authorize")
        services.hold_release(ctx=ctx, request_id=request_id)
        return Response(status=204)
