"""Structured logs: one JSON object per line, each carrying the id of the request it belongs to.

`RequestIdMiddleware` takes the client's `X-Request-ID` when it is sane (else makes one), keeps it
in a context variable for the request, and returns it in the response header; `RequestIdFilter`
copies it onto every log record; `JsonFormatter` writes the record as JSON (time, level, logger,
message, request_id, then the record's extras). Celery tasks log under `task:<task id>`.

Nothing here touches the database or the cache: the middleware sits on the ingest and authorize
hot path. This module imports no Django settings, so gunicorn's master can load the formatter.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

HEADER = "X-Request-ID"
_META_KEY = "HTTP_X_REQUEST_ID"
# What we accept from a client: short, printable, no spaces or quotes (it goes into logs and
# back into a header). Anything else is replaced, not trusted.
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    return _request_id.get()


# A new id is this process's random prefix and a counter: unique across processes and
# machines (64 random bits each), and no system call per request (uuid4 reads urandom).
_prefix = os.urandom(8).hex()
_counter = itertools.count(1)


def _new_process() -> None:
    global _prefix, _counter
    _prefix, _counter = os.urandom(8).hex(), itertools.count(1)


os.register_at_fork(after_in_child=_new_process)  # gunicorn --preload forks after import


def new_request_id() -> str:
    return f"{_prefix}{next(_counter):016x}"


def sane_request_id(value: str | None) -> str | None:
    return value if value and _SANE.fullmatch(value) else None


class RequestIdMiddleware:
    """First in the middleware list, so every later log line of the request carries the id."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        request_id = sane_request_id(request.META.get(_META_KEY)) or new_request_id()
        request.request_id = request_id
        # Kept until the response is closed (`request_done`), so Django's own log line for an
        # error response, written after the middleware returns, carries the id too.
        _request_id.set(request_id)
        response = self.get_response(request)
        response[HEADER] = request_id
        return response


def request_done(**_: Any) -> None:
    """Django's request_finished signal: the lines that follow belong to no request."""
    _request_id.set(None)


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (or None outside a request) on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        return True


# Attributes every LogRecord has: anything else on a record is an extra and is written out.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
}


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """gunicorn's access log passes its atoms (a dict) as the record's args."""
    atoms = record.args if isinstance(record.args, dict) else {}
    fields = {
        "remote_addr": atoms.get("h"),
        "method": atoms.get("m"),
        "path": atoms.get("U"),
        "status": atoms.get("s"),
        "bytes": atoms.get("B"),
        "duration_ms": round(atoms["D"] / 1000, 3) if isinstance(atoms.get("D"), int) else None,
    }
    request_id = atoms.get("{x-request-id}o")
    if request_id and request_id != "-":
        fields["request_id"] = request_id
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            key: value
            for key, value in vars(record).items()
            if key not in _RECORD_FIELDS and not key.startswith("_")
        }
        if record.name == "gunicorn.access":
            doc.update(_access_fields(record))
        doc.update(
            time=datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            level=record.levelname,
            logger=record.name,
            message=record.getMessage(),
            request_id=doc.get("request_id") or getattr(record, "request_id", None),
        )
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


# ---- Celery: a task's log lines carry its task id ------------------------------------------

_task_tokens: dict[str, Any] = {}


def task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _task_tokens[task_id] = _request_id.set(f"task:{task_id}")


def task_finished(task_id: str | None = None, **_: Any) -> None:
    token = _task_tokens.pop(task_id, None) if task_id else None
    if token is not None:
        _request_id.reset(token)


def logging_config(*, level: str, json: bool) -> dict[str, Any]:
    """Django's LOGGING: JSON lines on stderr in production, plain text in development."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "gateway_billing.logs.RequestIdFilter"}},
        "formatters": {
            "json": {"()": "gateway_billing.logs.JsonFormatter"},
            "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "filters": ["request_id"],
                "formatter": "json" if json else "text",
            }
        },
        "root": {"handlers": ["console"], "level": level},
    }
