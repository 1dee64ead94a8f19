"""The ledger's API: usage ingest (single and batch), balance, ledger entries, usage summary.

Views parse, call one service or selector, and render. The ingest hot path validates with
ledger.ingest.validate (fast); the serializers below document the same shape for the schema.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import ApiPrincipal
from accounts.models import Membership, Project, Role
from gateway_billing import metrics
from gateway_billing.errors import ApplicationError, ErrorSerializer
from gateway_billing.fastpath import FastJsonPost
from gateway_billing.permissions import TeamContext, session_membership, team_context
from ledger import selectors
from ledger.ingest.formats import FORMATS
from ledger.ingest.validate import UNIT_FIELDS
from ledger.models import Budget, BudgetPeriod, BudgetScope, EntryKind
from ledger.services.budgets import budget_create, budget_delete, budget_update
from ledger.services.usage import MAX_BATCH, EventResult, usage_record
from pricing.models import TOKEN_PRICE_FIELDS, UNIT_PRICE_FIELDS
from pricing.money import MoneyError, format_credits, format_usd, parse_credits
from pricing.selectors import PriceBook, price_book

# ---- rendering -----------------------------------------------------------------------------


def render_buckets(
    buckets: dict[str, int], credits: Callable[[int], str] = format_credits
) -> dict[str, str]:
    return {name: credits(value) for name, value in buckets.items()}


def render_price(book: PriceBook, model_id: int | None, price_id: int | None) -> dict | None:
    if price_id is None or model_id is None:
        return None
    version = next((v for v in book.versions(model=model_id) if v.id == price_id), None)
    if version is None:
        return {"version": price_id}
    terms = version.terms
    return {
        "version": version.id,
        "effective_from": version.effective_from,
        "prices_per_1m": {
            f.removesuffix("_per_1m"): format_usd(getattr(terms, f))
            for f in TOKEN_PRICE_FIELDS
            if getattr(terms, f) is not None
        },
        "unit_prices": {
            **{
                f: format_usd(getattr(terms, f))
                for f in UNIT_PRICE_FIELDS
                if getattr(terms, f) is not None
            },
            **{f"gpu_second:{gpu}": format_usd(p) for gpu, p in terms.gpu_second_prices.items()},
        },
    }


def render_result(
    result: EventResult,
    price: dict | None,
    balance: dict[str, int] | None,
    credits: Callable[[int], str] = format_credits,
) -> dict:
    if result.error is not None:
        return {"id": result.event_id, "status": result.status, "error": result.error}
    return {
        "id": result.event_id,
        "status": result.status,
        "state": result.state,
        "replayed": result.replayed,
        "cost_usd": format_usd(result.cost_usd) if result.cost_usd is not None else None,
        "credits": credits(result.credits_nano) if result.credits_nano is not None else None,
        "price": price,
        "balance": render_buckets(result.balance or balance or {}, credits),
    }


def _render_all(team_id: int, results: list[EventResult]) -> list[dict]:
    book = price_book()
    current = None
    if any(r.error is None and r.balance is None for r in results):
        current = selectors.balance_get(team_id=team_id).buckets()
    prices: dict[int | None, dict | None] = {None: None}  # a batch uses few price versions
    # Most of a batch's balance figures repeat from event to event (the buckets the events do
    # not draw from): each distinct amount is formatted once.
    texts: dict[int, str] = {}

    def credits(nano: int) -> str:
        text = texts.get(nano)
        if text is None:
            text = texts[nano] = format_credits(nano)
        return text

    out = []
    for r in results:
        if r.price_id not in prices:
            prices[r.price_id] = render_price(book, r.model_id, r.price_id)
        out.append(render_result(r, prices[r.price_id], current, credits))
    return out


# ---- schema serializers (documentation of the hot path's shape) ----------------------------


class UnitsSerializer(serializers.Serializer):
    images = serializers.DecimalField(max_digits=20, decimal_places=6, required=False)
    megapixels = serializers.DecimalField(max_digits=20, decimal_places=6, required=False)
    video_seconds = serializers.DecimalField(max_digits=20, decimal_places=6, required=False)
    videos = serializers.DecimalField(max_digits=20, decimal_places=6, required=False)
    requests = serializers.DecimalField(max_digits=20, decimal_places=6, required=False)
    gpu_seconds = serializers.DecimalField(max_digits=20, decimal_places=6, required=False)
    gpu_type = serializers.CharField(required=False)


class UsageEventInputSerializer(serializers.Serializer):
    id = serializers.CharField(max_length=128, help_text="Your idempotency key for this event.")
    model = serializers.CharField()
    provider = serializers.CharField(required=False)
    timestamp = serializers.DateTimeField(required=False, help_text="RFC 3339; default now.")
    status = serializers.IntegerField(required=False, min_value=100, max_value=599)
    project = serializers.SlugField(required=False)
    request_id = serializers.CharField(required=False, max_length=128)
    metadata = serializers.DictField(required=False, help_text="At most 4 KiB.")
    usage = serializers.DictField(required=False, help_text="Token counts, canonical or native.")
    usage_format = serializers.ChoiceField(choices=list(FORMATS), required=False)
    units = UnitsSerializer(required=False, help_text=f"Any of {', '.join(UNIT_FIELDS)}.")


class UsageBatchInputSerializer(serializers.Serializer):
    events = UsageEventInputSerializer(many=True, help_text=f"At most {MAX_BATCH} events.")


class BucketsSerializer(serializers.Serializer):
    total = serializers.CharField()
    monthly = serializers.CharField()
    addon = serializers.CharField()
    promotional = serializers.CharField()
    overdraft = serializers.CharField()


class UsageResultSerializer(serializers.Serializer):
    id = serializers.CharField()
    status = serializers.IntegerField()
    state = serializers.ChoiceField(choices=["billed", "not_billed", "unrated"])
    replayed = serializers.BooleanField()
    cost_usd = serializers.CharField(allow_null=True)
    credits = serializers.CharField(allow_null=True)
    price = serializers.DictField(allow_null=True)
    balance = BucketsSerializer()


class UsageBatchResultSerializer(serializers.Serializer):
    results = serializers.ListField(child=serializers.DictField())
    summary = serializers.DictField(child=serializers.IntegerField())


# ---- ingest ----------------------------------------------------------------------------------


class UsageRecordApi(FastJsonPost, APIView):
    scope = "usage:write"

    @extend_schema(
        request=UsageEventInputSerializer,
        responses={
            201: UsageResultSerializer,
            200: UsageResultSerializer,
            403: ErrorSerializer,
            409: ErrorSerializer,
            422: ErrorSerializer,
        },
        summary="Record one usage event",
    )
    def post(self, request: Request) -> Response:
        return self.drf_post(request)

    def record(self, ctx: TeamContext, data: Any) -> tuple[dict, int]:
        (result,) = usage_record(ctx=ctx, events=[data])
        metrics.usage_results_count([result])
        if result.error is not None:
            return {"error": result.error}, result.status
        return _render_all(ctx.team_id, [result])[0], result.status


class UsageBatchRecordApi(FastJsonPost, APIView):
    scope = "usage:write"

    @extend_schema(
        request=UsageBatchInputSerializer,
        responses={200: UsageBatchResultSerializer},
        summary="Record up to 1,000 usage events; each gets its own result",
    )
    def post(self, request: Request) -> Response:
        return self.drf_post(request)

    def record(self, ctx: TeamContext, data: Any) -> tuple[dict, int]:
        events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(events, list):
            raise ApplicationError(
                "invalid",
                'Send {"events": [...]} with up to 1,000 events.',
                fields={"events": ["A list of events is required."]},
            )
        if len(events) > MAX_BATCH:
            raise ApplicationError(
                "batch_too_large",
                f"A batch holds at most {MAX_BATCH} events; this one has {len(events)}. "
                "Split it into several requests.",
                fields={"events": [f"At most {MAX_BATCH} events."]},
            )
        if not events:
            raise ApplicationError(
                "invalid", "The batch is empty.", fields={"events": ["At least one event."]}
            )
        results = usage_record(ctx=ctx, events=events)
        metrics.usage_results_count(results)
        summary = {"created": 0, "replayed": 0, "failed": 0}
        for r in results:
            summary["failed" if r.error else "replayed" if r.status == 200 else "created"] += 1
        return {"results": _render_all(ctx.team_id, results), "summary": summary}, 200


# ---- reads -----------------------------------------------------------------------------------


class BalanceGetApi(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT}, summary="The team's balance and lots")
    def get(self, request: Request) -> Response:
        ctx = team_context(request, scope="usage:read")
        balance = selectors.balance_get(team_id=ctx.team_id)
        lots = [
            {
                **lot,
                "amount": format_credits(lot["amount"]),
                "remaining": format_credits(lot["remaining"]),
            }
            for lot in balance.lots
        ]
        return Response({**render_buckets(balance.buckets()), "lots": lots})


class LedgerFilterSerializer(serializers.Serializer):
    kind = serializers.CharField(required=False, help_text="Comma-separated entry kinds.")
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)

    def validate_kind(self, value: str) -> list[str]:
        kinds = [k.strip() for k in value.split(",") if k.strip()]
        unknown = [k for k in kinds if k not in EntryKind.values]
        if unknown:
            raise serializers.ValidationError(
                f"Unknown kind {unknown[0]!r}; use {', '.join(EntryKind.values)}."
            )
        return kinds


class LedgerCursor(CursorPagination):
    ordering = "-id"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000


class LedgerEntryOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    amount = serializers.SerializerMethodField()
    balance_after = serializers.SerializerMethodField()
    buckets_after = serializers.SerializerMethodField()
    reference = serializers.CharField()
    event_id = serializers.CharField(source="usage_event.event_id", default=None, allow_null=True)
    price_version = serializers.IntegerField(source="price_id", allow_null=True)
    credits_per_usd = serializers.DecimalField(max_digits=12, decimal_places=4, allow_null=True)
    reason = serializers.CharField()
    created_at = serializers.DateTimeField()

    def get_amount(self, entry: Any) -> str:
        return format_credits(entry.amount_nano)

    def get_balance_after(self, entry: Any) -> str:
        return format_credits(entry.balance_after_nano)

    def get_buckets_after(self, entry: Any) -> dict[str, str]:
        return render_buckets(entry.buckets_after)


def _query(serializer_class: type[serializers.Serializer], request: Request) -> dict:
    params = {k: v for k, v in request.query_params.items() if k not in {"team", "cursor", "limit"}}
    aliases = {"from": "start", "to": "end"}
    params = {aliases.get(k, k): v for k, v in params.items()}
    serializer = serializer_class(data=params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class LedgerListApi(APIView):
    pagination_class = LedgerCursor  # documents the page shape (next, previous, results)

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", str, description="Comma-separated kinds"),
            OpenApiParameter("from", OpenApiTypes.DATETIME),
            OpenApiParameter("to", OpenApiTypes.DATETIME),
            OpenApiParameter("cursor", str),
            OpenApiParameter("limit", int),
        ],
        responses={200: LedgerEntryOutputSerializer(many=True)},
        summary="The team's ledger entries, newest first (cursor pagination)",
    )
    def get(self, request: Request) -> Response:
        ctx = team_context(request, scope="usage:read")
        filters = _query(LedgerFilterSerializer, request)
        entries = selectors.ledger_entries(
            team_id=ctx.team_id,
            kinds=filters.get("kind"),
            start=filters.get("start"),
            end=filters.get("end"),
        ).select_related("usage_event")
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(LedgerEntryOutputSerializer(page, many=True).data)


class UsageSummaryFilterSerializer(serializers.Serializer):
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)
    group_by = serializers.ChoiceField(choices=list(selectors.GROUPS), default="model")

    def validate(self, attrs: dict) -> dict:
        end = attrs.get("end") or timezone.now()
        start = attrs.get("start") or end - timedelta(days=30)
        if start >= end:
            raise serializers.ValidationError({"from": ["`from` must be before `to`."]})
        if end - start > timedelta(days=400):
            raise serializers.ValidationError({"from": ["Ask for at most 400 days at once."]})
        return {**attrs, "start": start, "end": end}


class UsageSummaryApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATETIME, description="Default: 30 days ago"),
            OpenApiParameter("to", OpenApiTypes.DATETIME, description="Default: now"),
            OpenApiParameter("group_by", str, enum=list(selectors.GROUPS)),
        ],
        responses={200: OpenApiTypes.OBJECT},
        summary="Usage grouped by model, provider, project, member, key or day",
    )
    def get(self, request: Request) -> Response:
        ctx = team_context(request, scope="usage:read")
        q = _query(UsageSummaryFilterSerializer, request)
        groups = selectors.usage_summary(
            team_id=ctx.team_id, start=q["start"], end=q["end"], group_by=q["group_by"]
        )
        rendered = []
        for row in groups:
            credits_nano = row.pop("credits_nano")
            row.update(credits=format_credits(credits_nano), cost_usd=format_usd(row["cost_usd"]))
            rendered.append(row)
        return Response(
            {"from": q["start"], "to": q["end"], "group_by": q["group_by"], "groups": rendered}
        )


# ---- budgets ---------------------------------------------------------------------------------


class BudgetInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=120)
    scope = serializers.ChoiceField(choices=BudgetScope.values)
    project = serializers.SlugField(required=False, allow_null=True, help_text="project slug")
    member = serializers.IntegerField(required=False, allow_null=True, help_text="membership id")
    api_key = serializers.IntegerField(required=False, allow_null=True, help_text="API key id")
    period = serializers.ChoiceField(choices=BudgetPeriod.values)
    limit = serializers.JSONField(help_text='Credits as a decimal string, e.g. "250"')
    thresholds = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=100),
                                       required=False)  # fmt: skip
    hard_cap = serializers.BooleanField(required=False)

    def validate_limit(self, value: object) -> int:
        try:
            amount = parse_credits(value, field="limit")
        except MoneyError as exc:
            raise serializers.ValidationError(str(exc)) from None
        if amount <= 0:
            raise serializers.ValidationError("limit must be a positive number of credits.")
        return amount


def render_budget(row: dict) -> dict:
    b = row["budget"]
    return {
        "id": b.id, "name": b.name, "scope": b.scope,
        "project": b.project.slug if b.project_id else None,
        "member": b.member_id, "api_key": b.api_key_id, "period": b.period,
        "limit": format_credits(b.limit_nano), "thresholds": b.thresholds, "hard_cap": b.hard_cap,
        "period_start": row["period_start"], "spent": format_credits(row["spent"]),
        "remaining": format_credits(b.limit_nano - row["spent"]),
    }  # fmt: skip


def _manager(request: Request) -> Membership:
    """Budgets are changed by an owner or admin through a logged-in session."""
    if isinstance(request.user, ApiPrincipal):
        raise exceptions.PermissionDenied(
            "Budgets are changed by a team owner or admin, logged in."
        )
    if not getattr(request.user, "is_authenticated", False):
        raise exceptions.NotAuthenticated("Log in as an owner or admin of the team.")
    membership = session_membership(request)
    if membership.role not in (Role.OWNER, Role.ADMIN):
        raise exceptions.PermissionDenied("Only the team's owners and admins change budgets.")
    return membership


def _targets(team_id: int, data: dict) -> dict:
    values = dict(data)
    if values.get("limit") is not None:
        values["limit_nano"] = values.pop("limit")
    if values.get("project"):
        project = Project.objects.filter(team_id=team_id, slug=values["project"]).first()
        if project is None:
            raise ApplicationError("not_found", "No such project in this team.",
                                   fields={"project": ["Not found."]}, status_code=404)  # fmt: skip
        values["project"] = project
    return values


def _budget_of(team_id: int, budget_id: int) -> Budget:
    budget = (
        Budget.objects.select_related("team", "project")
        .filter(team_id=team_id, pk=budget_id)
        .first()
    )
    if budget is None:
        raise exceptions.NotFound("No such budget in your team.")
    return budget


class BudgetListApi(APIView):
    @extend_schema(
        operation_id="budgets_list",
        responses={200: OpenApiTypes.OBJECT},
        summary="The team's budgets and their spend",
    )
    def get(self, request: Request) -> Response:
        ctx = team_context(request, scope="usage:read")
        return Response(
            {"budgets": [render_budget(r) for r in selectors.budget_list(team_id=ctx.team_id)]}
        )

    @extend_schema(request=BudgetInputSerializer, responses={201: OpenApiTypes.OBJECT},
                   summary="Create a budget (owners and admins, logged in)")  # fmt: skip
    def post(self, request: Request) -> Response:
        membership = _manager(request)
        serializer = BudgetInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        budget = budget_create(team=membership.team, actor=request.user,
                               **_targets(membership.team_id, serializer.validated_data))  # fmt: skip
        row = next(
            r
            for r in selectors.budget_list(team_id=membership.team_id)
            if r["budget"].id == budget.id
        )
        return Response(render_budget(row), status=201)


class BudgetDetailApi(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT}, summary="One budget and its spend")
    def get(self, request: Request, budget_id: int) -> Response:
        ctx = team_context(request, scope="usage:read")
        _budget_of(ctx.team_id, budget_id)
        row = next(
            r for r in selectors.budget_list(team_id=ctx.team_id) if r["budget"].id == budget_id
        )
        return Response(render_budget(row))

    @extend_schema(request=BudgetInputSerializer, responses={200: OpenApiTypes.OBJECT},
                   summary="Change a budget (owners and admins, logged in)")  # fmt: skip
    def patch(self, request: Request, budget_id: int) -> Response:
        membership = _manager(request)
        budget = _budget_of(membership.team_id, budget_id)
        serializer = BudgetInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        budget_update(budget=budget, actor=request.user,
                      **_targets(membership.team_id, serializer.validated_data))  # fmt: skip
        row = next(
            r
            for r in selectors.budget_list(team_id=membership.team_id)
            if r["budget"].id == budget_id
        )
        return Response(render_budget(row))

    @extend_schema(responses={204: None}, summary="Delete a budget (owners and admins, logged in)")
    def delete(self, request: Request, budget_id: int) -> Response:
        membership = _manager(request)
        budget_delete(budget=_budget_of(membership.team_id, budget_id), actor=request.user)
        return Response(status=204)
