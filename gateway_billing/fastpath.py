"""The hot API endpoints (authorize, usage ingest) without DRF's per-request machinery.

DRF wraps every request (a new Request, negotiation, authentication classes, permission
classes, the renderer): a few hundred microseconds that the endpoints a gateway calls on every
model call can do without. A view class opts in with ``FastJsonPost``: a POST with a JSON body
and a Bearer key that resolves and carries the scope goes straight to the class's
``fast_post(principal, data, raw_key)``; its answer (or the ApplicationError it raises, in the
API's one error shape) is written with orjson. Anything else (no key, an unknown key, a missing
scope, malformed JSON, another method or content type) is answered by the DRF view itself,
exactly as every other endpoint answers it. The DRF view also documents the endpoint.

``MachineApiMiddleware`` takes that common case before the browser middleware runs (see its
docstring); without it the views still take their fast path inside the full stack.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from rest_framework.response import Response
from rest_framework.views import set_rollback

from accounts.authentication import ApiPrincipal, bearer_key, principal_for_key

from .errors import ApplicationError, error_body
from .permissions import TeamContext, key_context, team_context


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    content = orjson.dumps(body)
    response = HttpResponse(content, status=status, content_type="application/json",
                            headers=headers)  # fmt: skip
    response.headers["Content-Length"] = str(len(content))  # else HTTP/1.1 sends it chunked
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
            if getattr(request, "fast_path_tried", False):  # the middleware asked already
                return drf_view(request, *args, **kwargs)
            return cls.fast(request) or drf_view(request, *args, **kwargs)

        view.__dict__.update(drf_view.__dict__)  # cls, initkwargs, csrf_exempt: schema and URLs
        return view


class MachineApiMiddleware:
    """Answers the common case of the machine endpoints (views with ``FastJsonPost``:
    authorize and usage ingest) before the browser middleware below it in MIDDLEWARE. Static
    files, sessions, CSRF, user authentication, messages and frame options do nothing for a
    bearer-key JSON call, yet cost about a fifth of an authorize. What still applies: the
    middleware above this one (the request id, the security headers), the ALLOWED_HOSTS check
    and Django's exception handling and request signals. A request the fast path declines
    (``fast()`` answers None: no key, an unknown key, a missing scope, another content type)
    goes down the whole stack to the DRF view, as every other request does."""

    MAX_PATHS = 1024  # paths remembered (a client cannot grow the map without bound)

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self._views: dict[str, type[FastJsonPost] | None] = {}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.content_type == "application/json":
            view = self._view(request.path_info)
            if view is not None:
                request.get_host()  # the ALLOWED_HOSTS check (CommonMiddleware's, below)
                request.fast_path_tried = True  # type: ignore[attr-defined]
                response = view.fast(request)
                if response is not None:
                    return response
        return self.get_response(request)

    def _view(self, path: str) -> type[FastJsonPost] | None:
        """The FastJsonPost view class the URL conf routes `path` to (without arguments)."""
        try:
            return self._views[path]
        except KeyError:
            pass
        try:
            match = resolve(path)
        except Resolver404:
            view = None
        else:
            cls = getattr(match.func, "view_class", None)
            fast = isinstance(cls, type) and issubclass(cls, FastJsonPost)
            view = cls if fast and not match.args and not match.kwargs else None
        if len(self._views) < self.MAX_PATHS:
            self._views[path] = view
        return view
