"""The hot API endpoints (authorize, usage ingest) without DRF's per-request machinery.

DRF wraps every request (a new Request, negotiation, authentication classes, permission
classes, the renderer): a few hundred microseconds that the endpoints a gateway calls on every
model call can do without. A view class opts in with ``FastJsonPost``: a POST with a JSON body
and a Bearer key that resolves and carries the scope goes straight to the class's
``fast_post(principal, data, raw_key)``; its answer (or the ApplicationError it raises, in the
API's one error shape) is written with orjson. Anything else (no key, an unknown key, a missing
scope, malformed JSON, another method or content type) is answered by the DRF view itself,
exactly as every other endpoint answers it. The DRF view also documents the endpoint.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse
from rest_framework.response import Response
from rest_framework.views import set_rollback

from accounts.authentication import ApiPrincipal, bearer_key, principal_for_key

from .errors import ApplicationError, error_body
from .permissions import TeamContext, key_context, team_context


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    response = HttpResponse(orjson.dumps(body), status=status, content_type="application/json",
                            headers=headers)  # fmt: skip
    error = body.get("error") if status >= 400 and isinstance(body, dict) else None
    response.error_code = error.get("code") if isinstance(error, dict) else None
    return response


class FastJsonPost:
    """Mixin for an APIView. ``scope``: the key scope required; ``record(ctx, data)``: the
    endpoint's work, shared by both paths (the view's ``post`` returns ``self.drf_post(request)``
    under its schema); ``fast_post`` may be overridden instead (authorize: it hands the key's
    epoch to the gate, ``epoch_checked_by_caller``)."""

    scope: str = ""
    epoch_checked_by_caller = False

    def record(self, ctx: TeamContext, data: Any) -> tuple[Any, int]:
        """The endpoint's work for the key's team: (body, status). Raises ApplicationError."""
        raise NotImplementedError

    def fast_post(self, principal: ApiPrincipal, data: Any, raw_key: str) -> tuple[Any, int]:
        return self.record(key_context(principal), data)

    def drf_post(self, request: Any) -> Response:
        """The same work through DRF (the view's `post` calls it, under its schema)."""
        body, status = self.record(team_context(request, scope=self.scope), request.data)
        return Response(body, status=status)

    @classmethod
    def fast(cls, request: HttpRequest) -> HttpResponse | None:
        """The common case without DRF, or None to let the DRF view answer."""
        if request.method != "POST" or request.content_type != "application/json":
            return None
        raw_key = bearer_key(request.META.get("HTTP_AUTHORIZATION", ""))
        if raw_key is None:
            return None
        principal = principal_for_key(raw_key, epoch_checked_by_caller=cls.epoch_checked_by_caller)
        if principal is None or cls.scope not in principal.scopes:
            return None
        try:
            # read(), not .body: a batch of 1,000 events may pass Django's 2.5 MB cap on .body
            # (DRF's parsers read the stream the same way)
            data = orjson.loads(request.read())
        except orjson.JSONDecodeError as exc:
            return json_response(error_body("malformed_json", f"The body is not valid JSON: {exc}"),
                                 400)  # fmt: skip
        try:
            body, status = cls().fast_post(principal, data, raw_key)
        except ApplicationError as exc:
            set_rollback()  # as DRF's handler does (only under ATOMIC_REQUESTS)
            return json_response(error_body(exc.code, exc.message, exc.fields, **exc.extra),
                                 exc.status_code, exc.headers)  # fmt: skip
        return json_response(body, status)

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        drf_view = super().as_view(**initkwargs)  # type: ignore[misc]

        def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            return cls.fast(request) or drf_view(request, *args, **kwargs)

        view.__dict__.update(drf_view.__dict__)  # cls, initkwargs, csrf_exempt: schema and URLs
        return view
