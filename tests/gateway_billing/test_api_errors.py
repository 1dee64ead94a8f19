"""The one API error shape, pinned: every error body is exactly
{"error": {"code", "message", "fields"}}."""

import pytest
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from accounts import services
from accounts.models import Team
from gateway_billing.permissions import team_context


class EchoApi(APIView):
    """POST-only, needs the usage:write scope, reads the JSON body."""

    def post(self, request: Request) -> Response:
        team_context(request, scope="usage:write")
        return Response({"echo": request.data}, status=201)


urlpatterns = [path("api/v1/test/echo", EchoApi.as_view())]
URL = "/api/v1/test/echo"
pytestmark = pytest.mark.urls("tests.gateway_billing.test_api_errors")


@pytest.fixture
def keyed(db) -> APIClient:
    team = Team.objects.create(name="Shape", slug="shape")
    created = services.api_key_create(team=team, scopes=["usage:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {created.secret}")
    return client


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    assert sorted(body["error"]) == ["code", "fields", "message"]
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["fields"], dict)
    return body["error"]


def test_the_happy_path_echoes(keyed):
    response = keyed.post(URL, data='{"a": 1}', content_type="application/json")
    assert response.status_code == 201
    assert response.json() == {"echo": {"a": 1}}


def test_malformed_json_is_400_malformed_json(keyed):
    response = keyed.post(URL, data='{"a": 1', content_type="application/json")
    error = assert_error(response, 400, "malformed_json")
    assert error["message"].startswith("The body is not valid JSON")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_non_json_content_type_is_415(keyed, content_type):
    response = keyed.post(URL, data="a=1", content_type=content_type)
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_wrong_method_is_405(keyed, method):
    response = getattr(keyed, method)(URL)
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response["Allow"]


def test_no_credentials_is_401(db):
    assert_error(APIClient().post(URL, data={}, format="json"), 401, "unauthenticated")


def test_missing_scope_is_403(db):
    team = Team.objects.create(name="Read only", slug="ro")
    client = APIClient()
    created = services.api_key_create(team=team, scopes=["usage:read"])
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {created.secret}")
    error = assert_error(client.post(URL, data={}, format="json"), 403, "forbidden")
    assert "usage:write" in error["message"]


@pytest.mark.parametrize(
    "accept", ["application/json", "*/*", "application/*", "", "text/html, */*"]
)
def test_any_accept_that_takes_json_gets_json(keyed, accept):
    response = keyed.post(URL, data='{"a": 1}', content_type="application/json", HTTP_ACCEPT=accept)
    assert response.status_code == 201 and response["Content-Type"] == "application/json"


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "text/csv"])
def test_an_accept_without_json_is_406(keyed, accept):
    response = keyed.post(URL, data='{"a": 1}', content_type="application/json", HTTP_ACCEPT=accept)
    assert_error(response, 406, "not_acceptable")
