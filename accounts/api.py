"""Accounts API: who am I (for an API key); the audit log (for a logged-in owner or finance
member)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import exceptions, serializers
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway_billing.permissions import session_membership

from . import selectors
from .authentication import ApiPrincipal
from .decorators import AUDITORS
from .models import Membership


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Documents `Authorization: Bearer <key>` for every API view (registered on import; the
    URLconf imports this module)."""

    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A team API key (`gbk_…`), created on the team's API keys page.",
        }


class MeTeamSerializer(serializers.Serializer):
    slug = serializers.CharField(source="team_slug")
    name = serializers.CharField(source="team_name")


class MeGetApi(APIView):
    @extend_schema_serializer(component_name="Me")
    class OutputSerializer(serializers.Serializer):
        team = MeTeamSerializer(source="*")
        project = serializers.CharField(allow_null=True, help_text="The key's project slug.")
        scopes = serializers.ListField(child=serializers.CharField())
        key_prefix = serializers.CharField(help_text="The visible start of the key.")

    @extend_schema(
        operation_id="me_get",
        summary="The calling API key: its team, project and scopes",
        description="Any valid API key may call it (no scope needed); a browser session gets 403.",
        responses={200: OutputSerializer},
        tags=["accounts"],
    )
    def get(self, request: Request) -> Response:
        principal = request.user
        if not isinstance(principal, ApiPrincipal):
            raise exceptions.PermissionDenied("This endpoint describes an API key; send one.")
        identity = selectors.api_key_identity(team_id=principal.team_id, key_id=principal.key_id)
        if identity is None:  # revoked since its lookup was cached
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        return Response(self.OutputSerializer(identity).data)


def audit_membership(request: Request) -> Membership:
    """The caller's membership for reading the audit log: a browser session of an owner or a
    finance member, team from ?team=<slug> (or the only team). Roles live on memberships,
    which an API key does not have, so keys are refused."""
    user = request.user
    if isinstance(user, ApiPrincipal):
        raise exceptions.PermissionDenied(
            "The audit log is read by a logged-in owner or finance member, not with an API key."
        )
    if user is None or not getattr(user, "is_authenticated", False):
        raise exceptions.NotAuthenticated("Log in as an owner or finance member of the team.")
    membership = session_membership(request)
    if membership.role not in AUDITORS:
        raise exceptions.PermissionDenied("The audit log is for the team's owners and finance.")
    return membership


class AuditCursor(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500


class AuditListApi(APIView):
    pagination_class = AuditCursor  # documents the page shape (next, previous, results)

    @extend_schema_serializer(component_name="AuditEntry")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        created_at = serializers.DateTimeField()
        actor = serializers.EmailField(source="actor.email", default=None, allow_null=True)
        action = serializers.CharField()
        target = serializers.CharField()
        before = serializers.JSONField(allow_null=True)
        after = serializers.JSONField(allow_null=True)
        ip = serializers.IPAddressField(allow_null=True)

    @extend_schema(
        operation_id="audit_list",
        summary="The team's audit log, newest first (cursor pagination)",
        description="A logged-in owner or finance member (browser session); API keys get 403.",
        parameters=[
            OpenApiParameter("team", str, description="The team's slug"),
            OpenApiParameter("action", str, description="Only this action"),
            OpenApiParameter("cursor", str),
            OpenApiParameter("limit", OpenApiTypes.INT),
        ],
        responses={200: OutputSerializer(many=True)},
        tags=["accounts"],
    )
    def get(self, request: Request) -> Response:
        membership = audit_membership(request)
        entries = selectors.audit_entry_list(
            team=membership.team, action=request.query_params.get("action")
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)
