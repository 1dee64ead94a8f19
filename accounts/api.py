"""Accounts API: who am I (for an API key)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import exceptions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import selectors
from .authentication import ApiPrincipal


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
