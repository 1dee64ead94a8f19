"""A test-local URLconf: tiny views that ask `team_context` for a scope."""

from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway_billing.permissions import team_context


class ScopeProbe(APIView):
    scope = "usage:write"

    def get(self, request: Request) -> Response:
        return Response({"team_id": team_context(request, scope=self.scope).team_id})

    def post(self, request: Request) -> Response:
        context = team_context(request, scope=self.scope)
        return Response({"team_id": context.team_id, "echo": request.data}, status=201)


urlpatterns = [
    path("probe/write", ScopeProbe.as_view(scope="usage:write")),
    path("probe/read", ScopeProbe.as_view(scope="usage:read")),
]
