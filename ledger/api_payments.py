"""`GET /api/v1/payments`: the team's payments, newest first (top-ups, auto recharges, plan
invoices), with amounts as decimal strings and the provider's ids."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway_billing.permissions import team_context
from ledger.selectors import payment_list
from ledger.services.payments import usd
from pricing.money import format_credits


class PaymentCursor(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500


class PaymentOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.CharField()
    provider = serializers.CharField()
    test_mode = serializers.BooleanField(source="is_test_mode")
    amount_usd = serializers.SerializerMethodField()
    refunded_usd = serializers.SerializerMethodField()
    credits = serializers.SerializerMethodField()
    description = serializers.CharField()
    checkout_session_id = serializers.CharField(allow_null=True)
    payment_intent_id = serializers.CharField(allow_null=True)
    invoice_id = serializers.CharField(allow_null=True)
    receipt_url = serializers.CharField()
    failure_code = serializers.CharField()
    failure_message = serializers.CharField()
    created_at = serializers.DateTimeField()
    paid_at = serializers.DateTimeField(allow_null=True)

    def get_amount_usd(self, payment: Any) -> str:
        return usd(payment.amount_cents)

    def get_refunded_usd(self, payment: Any) -> str:
        return usd(payment.refunded_cents)

    def get_credits(self, payment: Any) -> str:
        return format_credits(payment.credits_nano)


class PaymentListApi(APIView):
    pagination_class = PaymentCursor

    @extend_schema(
        parameters=[OpenApiParameter("cursor", str), OpenApiParameter("limit", int)],
        responses={200: PaymentOutputSerializer(many=True)},
        summary="The team's payments, newest first (cursor pagination)",
    )
    def get(self, request: Request) -> Response:
        ctx = team_context(request, scope="usage:read")
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(payment_list(team_id=ctx.team_id), request, view=self)
        return paginator.get_paginated_response(PaymentOutputSerializer(page, many=True).data)
