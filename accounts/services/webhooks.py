"""Outbound webhooks: endpoints, the transactional outbox, signed delivery with retries.

1. ``webhook_event_emit`` writes an ``OutboxEvent`` in the caller's transaction and, after
   commit, enqueues its dispatch: a change that rolls back leaves neither row nor task.
2. ``outbox_event_dispatch`` schedules attempt 1 for every active endpoint of the team that
   subscribes to the event's type, and marks the event dispatched (once, under a row lock).
3. ``webhook_delivery_attempt`` claims a scheduled attempt with a conditional UPDATE (one
   worker wins; a delivered attempt is never sent again), POSTs the signed body outside any
   transaction, and records the outcome: a 2xx is delivered; anything else schedules the next
   attempt after ``BACKOFF``; after the last attempt an endpoint that has delivered nothing
   since is disabled and its owners are emailed.
4. ``outbox_pump`` (the beat job, every minute) is the safety net: it dispatches events whose
   dispatch never ran (the process died between commit and enqueue, or the message was lost
   with its worker), re-schedules attempts whose worker died mid-request, and enqueues every
   due attempt (retries are only ever enqueued by it: no long Celery countdowns, which Redis
   would redeliver after the visibility timeout).

Delivery is at least once: receivers de-duplicate on ``Webhook-Id``.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import logging
import secrets
import socket
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone

from gateway_billing.errors import ApplicationError
from pricing.money import format_usd

from ..models import (
    DeliveryState,
    EventType,
    Membership,
    OutboxEvent,
    Role,
    Team,
    WebhookDelivery,
    WebhookEndpoint,
)
from .audit import audit_record

logger = logging.getLogger(__name__)

# Waits before attempts 2..9: 9 attempts over 23 h 21 min.
BACKOFF: tuple[timedelta, ...] = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=4),
    timedelta(hours=8),
    timedelta(hours=8),
)
MAX_ATTEMPTS = len(BACKOFF) + 1
# An attempt still "sending" this long after it started lost its worker (the request itself
# times out after WEBHOOK_TIMEOUT_SECONDS).
SENDING_STALE_AFTER = timedelta(minutes=5)
MAX_ENDPOINTS_PER_TEAM = 10
EXCERPT_CHARS = 500
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
USER_AGENT = "gateway_billing-webhooks/1"
MANAGER_ROLES = frozenset({Role.OWNER, Role.ADMIN})


# ---- signing -------------------------------------------------------------------------------


def webhook_sign(*, secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """`v1=<hex HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`."""
    message = f"{event_id}.{timestamp}.".encode() + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def event_body(event: OutboxEvent) -> bytes:
    """The exact bytes sent (and signed). Keys sorted: PostgreSQL's jsonb does not keep the
    order they were written in, and a re-send must send the same body."""
    return orjson.dumps(event.payload, option=orjson.OPT_SORT_KEYS)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---- URLs ----------------------------------------------------------------------------------


def _private_address(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return False


def webhook_url_problem(url: str, *, resolve: bool) -> str | None:
    """Why we will not POST to `url`, or None. Outside development only public https URLs:
    a webhook must not become a way to reach our own network. `resolve` checks every address
    the host resolves to (done at send time; at creation only literal addresses are checked)."""
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE_URLS
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        return "Use an absolute https:// URL."
    if parts.scheme == "http" and not allow_private:
        return "Use an https:// URL."
    if parts.username or parts.password:
        return "Put no credentials in the URL; verify our signature instead."
    if allow_private:
        return None
    if _private_address(parts.hostname) or parts.hostname == "localhost":
        return "The URL points at a private address."
    if resolve:
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
        except OSError:
            return f"Cannot resolve {parts.hostname}."
        if any(_private_address(str(info[4][0])) for info in infos):
            return f"{parts.hostname} resolves to a private address."
    return None


def _check_event_types(event_types: list[str]) -> list[str]:
    unknown = sorted(set(event_types) - set(EventType.values))
    if unknown:
        raise ApplicationError(
            "invalid_event_types",
            f"Unknown event types {unknown}.",
            fields={"event_types": [f"Unknown: {', '.join(unknown)}"]},
        )
    if not event_types:
        raise ApplicationError(
            "invalid_event_types",
            "Choose at least one event type.",
            fields={"event_types": ["Required."]},
        )
    return sorted(set(event_types))


def _check_url(url: str) -> str:
    url = url.strip()
    problem = webhook_url_problem(url, resolve=False)
    if problem:
        raise ApplicationError("invalid_url", problem, fields={"url": [problem]})
    return url


def _require_manager(team: Team, actor: AbstractBaseUser) -> None:
    role = Membership.objects.filter(team=team, user=actor).values_list("role", flat=True).first()
    if role not in MANAGER_ROLES:
        raise ApplicationError(
            "forbidden", "Only owners and admins manage webhooks.", status_code=403
        )


# ---- endpoints -----------------------------------------------------------------------------


@transaction.atomic
def webhook_endpoint_create(
    *,
    team: Team,
    url: str,
    event_types: list[str],
    actor: AbstractBaseUser,
    ip: str | None = None,
) -> WebhookEndpoint:
    """A new endpoint with a generated signing secret (owners and admins)."""
    Team.objects.select_for_update().only("pk").get(pk=team.pk)  # the per-team limit holds
    _require_manager(team, actor)
    url = _check_url(url)
    event_types = _check_event_types(event_types)
    if WebhookEndpoint.objects.filter(team=team).count() >= MAX_ENDPOINTS_PER_TEAM:
        raise ApplicationError(
            "endpoint_limit", f"A team has at most {MAX_ENDPOINTS_PER_TEAM} webhook endpoints."
        )
    endpoint = WebhookEndpoint.objects.create(
        team=team,
        url=url,
        event_types=event_types,
        secret=SECRET_PREFIX + secrets.token_urlsafe(32),
    )
    audit_record(
        actor=actor,
        team=team,
        action="webhook.endpoint_create",
        target=f"webhook_endpoint:{endpoint.pk} {url}",
        after={"url": url, "event_types": event_types},  # never the secret
        ip=ip,
    )
    return endpoint


@transaction.atomic
def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    actor: AbstractBaseUser,
    url: str | None = None,
    event_types: list[str] | None = None,
    is_active: bool | None = None,
    ip: str | None = None,
) -> WebhookEndpoint:
    """Change the URL or event types, or disable / re-enable (owners and admins). Re-enabling
    clears the failure count; attempts scheduled before the endpoint was disabled resume."""
    locked = WebhookEndpoint.objects.select_for_update().select_related("team").get(pk=endpoint.pk)
    _require_manager(locked.team, actor)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    if url is not None and (url := _check_url(url)) != locked.url:
        before["url"], after["url"] = locked.url, url
        locked.url = url
    if event_types is not None:
        event_types = _check_event_types(event_types)
        if event_types != locked.event_types:
            before["event_types"], after["event_types"] = locked.event_types, event_types
            locked.event_types = event_types
    if is_active is not None and is_active != locked.is_active:
        before["is_active"], after["is_active"] = locked.is_active, is_active
        locked.is_active = is_active
        locked.disabled_at = None if is_active else timezone.now()
        if is_active:
            locked.failure_count = 0
    if after:
        locked.save()
        action = "webhook.endpoint_update"
        if set(after) == {"is_active"}:
            action = "webhook.endpoint_enable" if is_active else "webhook.endpoint_disable"
        audit_record(
            actor=actor,
            team=locked.team,
            action=action,
            target=f"webhook_endpoint:{locked.pk} {locked.url}",
            before=before,
            after=after,
            ip=ip,
        )
    return locked


# ---- the outbox ----------------------------------------------------------------------------


def _enqueue_dispatch(event_pk: int) -> None:
    from accounts.tasks import webhook_event_dispatch  # tasks import this module

    webhook_event_dispatch.delay(event_pk)


def _enqueue_deliveries(delivery_pks: list[int]) -> None:
    from accounts.tasks import webhook_deliver

    for pk in delivery_pks:
        webhook_deliver.delay(pk)


@transaction.atomic
def webhook_event_emit(*, team_id: int, type: str, data: dict[str, Any]) -> OutboxEvent:
    """Record an event for the team's webhooks in the caller's transaction; its dispatch is
    enqueued after commit (and the beat job finds it if that enqueue never happens). `data`
    must be JSON: money as decimal strings, never floats."""
    if type not in EventType.values:
        raise ValueError(f"unknown webhook event type {type!r}")
    if any(isinstance(v, float) for v in _leaves(data)):
        raise ValueError("webhook data carries money as decimal strings, never floats")
    orjson.dumps(data)  # fails now, in the caller's transaction, rather than in a worker
    now = timezone.now()
    event_id = f"evt_{uuid.uuid4().hex}"
    slug = Team.objects.values_list("slug", flat=True).get(pk=team_id)
    payload = {"id": event_id, "type": type, "created": _rfc3339(now), "team": slug, "data": data}
    event = OutboxEvent.objects.create(
        team_id=team_id, event_id=event_id, type=type, payload=payload, created_at=now
    )
    # robust: a broker outage must not fail a request whose change already committed; the
    # beat job dispatches the event a minute later.
    transaction.on_commit(lambda: _enqueue_dispatch(event.pk), robust=True)
    return event


def _leaves(value: Any):
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


@transaction.atomic
def webhook_event_broadcast(*, type: str, data: dict[str, Any]) -> list[OutboxEvent]:
    """A global event (a price change) for every team with an active endpoint subscribed to
    it: one outbox row per such team."""
    team_ids = sorted(
        {
            endpoint.team_id
            for endpoint in WebhookEndpoint.objects.filter(is_active=True).only(
                "team_id", "event_types"
            )
            if type in endpoint.event_types
        }
    )
    return [webhook_event_emit(team_id=team_id, type=type, data=data) for team_id in team_ids]


@transaction.atomic
def outbox_event_dispatch(*, event_id: int) -> list[WebhookDelivery]:
    """Schedule attempt 1 of the event for each subscribed active endpoint; once per event
    (a concurrent dispatcher holding the row skips it, a later one finds it dispatched)."""
    event = (
        OutboxEvent.objects.select_for_update(skip_locked=True)
        .filter(pk=event_id, dispatched_at__isnull=True)
        .first()
    )
    if event is None:
        return []
    now = timezone.now()
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(team_id=event.team_id, is_active=True)
        if event.type in endpoint.event_types  # in Python: SQLite has no JSON containment
    ]
    deliveries = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                endpoint=endpoint, event=event, attempt=1, next_attempt_at=now, created_at=now
            )
            for endpoint in sorted(endpoints, key=lambda e: e.pk)
        ]
    )
    event.dispatched_at = now
    event.save(update_fields=["dispatched_at"])
    pks = [delivery.pk for delivery in deliveries]
    transaction.on_commit(lambda: _enqueue_deliveries(pks), robust=True)
    return deliveries


# ---- delivery ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptOutcome:
    status_code: int | None
    excerpt: str = ""
    error: str = ""

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a delivery: never follow one (nor leak the body to it)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        return None


# Direct connections only: the address checked is the address connected to.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)


def _excerpt(response: Any) -> str:
    try:
        return response.read(EXCERPT_CHARS * 4).decode("utf-8", "replace")[:EXCERPT_CHARS]
    except (OSError, http.client.HTTPException):
        return ""


def webhook_post(
    *, url: str, secret: str, event_id: str, body: bytes, at: datetime
) -> AttemptOutcome:
    """One signed POST with a short timeout. Never raises for the receiver's failures."""
    problem = webhook_url_problem(url, resolve=True)
    if problem:
        return AttemptOutcome(None, error=problem)
    timestamp = int(at.timestamp())
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Webhook-Id": event_id,
            "Webhook-Timestamp": str(timestamp),
            "Webhook-Signature": webhook_sign(
                secret=secret, event_id=event_id, timestamp=timestamp, body=body
            ),
        },
    )
    try:
        with _opener.open(request, timeout=settings.WEBHOOK_TIMEOUT_SECONDS) as response:
            return AttemptOutcome(response.status, _excerpt(response))
    except urllib.error.HTTPError as exc:  # a non-2xx answer (redirects included)
        outcome = AttemptOutcome(exc.code, _excerpt(exc), f"HTTP {exc.code}")
        exc.close()
        return outcome
    except urllib.error.URLError as exc:
        return AttemptOutcome(None, error=f"connection failed: {exc.reason}")
    except TimeoutError:
        return AttemptOutcome(None, error=f"timed out after {settings.WEBHOOK_TIMEOUT_SECONDS} s")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return AttemptOutcome(None, error=f"{type(exc).__name__}: {exc}"[:EXCERPT_CHARS])


def _claim(delivery_id: int, now: datetime) -> bool:
    """scheduled -> sending, for exactly one caller: a plain UPDATE on the row's own columns,
    which PostgreSQL re-checks after waiting for a concurrent claimer."""
    return bool(
        WebhookDelivery.objects.filter(
            pk=delivery_id, state=DeliveryState.SCHEDULED, next_attempt_at__lte=now
        ).update(state=DeliveryState.SENDING, attempted_at=now)
    )


def webhook_delivery_attempt(
    *, delivery_id: int, now: datetime | None = None
) -> WebhookDelivery | None:
    """Make one scheduled attempt, if it is due and its endpoint is active; a second call
    (a duplicate task) changes nothing. Not one transaction on purpose: the claim commits,
    the POST runs holding no lock, the outcome commits."""
    now = now or timezone.now()
    delivery = (
        WebhookDelivery.objects.select_related("endpoint", "event").filter(pk=delivery_id).first()
    )
    if delivery is None or not delivery.endpoint.is_active or not _claim(delivery_id, now):
        return delivery
    endpoint, event = delivery.endpoint, delivery.event
    outcome = webhook_post(
        url=endpoint.url,
        secret=endpoint.secret,
        event_id=event.event_id,
        body=event_body(event),
        at=now,
    )
    return webhook_attempt_record(delivery_id=delivery_id, outcome=outcome, now=now)


@transaction.atomic
def webhook_attempt_record(
    *, delivery_id: int, outcome: AttemptOutcome, now: datetime | None = None
) -> WebhookDelivery:
    """The outcome of a claimed attempt: delivered, or failed with the next attempt scheduled
    (or, after the last one, the endpoint disabled if it has delivered nothing since)."""
    now = now or timezone.now()
    endpoint_id = WebhookDelivery.objects.values_list("endpoint_id", flat=True).get(pk=delivery_id)
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)  # endpoint first
    delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
    if delivery.state != DeliveryState.SENDING:  # recorded already (reclaimed as lost)
        return delivery
    delivery.status_code = outcome.status_code
    delivery.response_excerpt = outcome.excerpt
    delivery.error = outcome.error
    if outcome.delivered:
        delivery.state = DeliveryState.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        endpoint.failure_count = 0
    else:
        delivery.state = DeliveryState.FAILED
        endpoint.failure_count += 1
        _after_failure(delivery, endpoint, now)
    delivery.save()
    endpoint.save(update_fields=["failure_count", "is_active", "disabled_at"])
    return delivery


def _after_failure(delivery: WebhookDelivery, endpoint: WebhookEndpoint, now: datetime) -> None:
    if delivery.attempt < MAX_ATTEMPTS:
        due = now + BACKOFF[delivery.attempt - 1]
        delivery.next_attempt_at = due
        _schedule(endpoint, delivery.event_id, due, now)
        return
    delivery.next_attempt_at = None
    if endpoint.is_active and endpoint.failure_count >= MAX_ATTEMPTS:
        _disable_failing(endpoint, now)


def _schedule(
    endpoint: WebhookEndpoint, event_id: int, due: datetime, now: datetime
) -> WebhookDelivery:
    """The next attempt of (endpoint, event), unless one is already scheduled (a re-send)."""
    rows = WebhookDelivery.objects.filter(endpoint=endpoint, event_id=event_id)
    scheduled = rows.filter(state=DeliveryState.SCHEDULED).first()
    if scheduled is not None:
        return scheduled
    last = rows.aggregate(last=Max("attempt"))["last"] or 0
    return WebhookDelivery.objects.create(
        endpoint=endpoint, event_id=event_id, attempt=last + 1, next_attempt_at=due, created_at=now
    )


def _disable_failing(endpoint: WebhookEndpoint, now: datetime) -> None:
    endpoint.is_active = False
    endpoint.disabled_at = now
    team = Team.objects.get(pk=endpoint.team_id)
    audit_record(
        actor=None,
        team=team,
        action="webhook.endpoint_disable",
        target=f"webhook_endpoint:{endpoint.pk} {endpoint.url}",
        before={"is_active": True},
        after={
            "is_active": False,
            "reason": f"{endpoint.failure_count} failed attempts in a row",
        },
    )
    owners = list(
        Membership.objects.filter(team=team, role=Role.OWNER).values_list("user__email", flat=True)
    )
    page = settings.SITE_URL.rstrip("/") + reverse("accounts:webhooks", args=[team.slug])
    subject = f"Webhook endpoint disabled for {team.name}"
    message = (
        f"We disabled the webhook endpoint {endpoint.url} of {team.name} after "
        f"{endpoint.failure_count} failed delivery attempts in a row over about a day.\n\n"
        f"Fix the receiver, then enable the endpoint and re-send what it missed: {page}\n"
    )
    recipients = [email for email in owners if email]
    if recipients:
        transaction.on_commit(
            lambda: send_mail(subject, message, settings.DEFAULT_FROM_EMAIL, recipients),
            robust=True,
        )


@transaction.atomic
def webhook_delivery_resend(
    *, delivery: WebhookDelivery, actor: AbstractBaseUser, ip: str | None = None
) -> WebhookDelivery:
    """Send the delivery's event to its endpoint again, now (owners and admins). When a retry
    is already scheduled it is brought forward instead of adding another attempt."""
    endpoint = (
        WebhookEndpoint.objects.select_for_update()
        .select_related("team")
        .get(pk=delivery.endpoint_id)
    )
    _require_manager(endpoint.team, actor)
    if not endpoint.is_active:
        raise ApplicationError(
            "endpoint_disabled", "Enable the endpoint before re-sending to it.", status_code=409
        )
    now = timezone.now()
    rows = WebhookDelivery.objects.filter(endpoint=endpoint, event_id=delivery.event_id)
    scheduled = rows.filter(state=DeliveryState.SCHEDULED).first()
    if scheduled is not None:
        scheduled.next_attempt_at = now
        scheduled.save(update_fields=["next_attempt_at"])
    else:
        scheduled = _schedule(endpoint, delivery.event_id, now, now)
    audit_record(
        actor=actor,
        team=endpoint.team,
        action="webhook.delivery_resend",
        target=f"webhook_endpoint:{endpoint.pk} {delivery.event.event_id}",
        after={"attempt": scheduled.attempt},
        ip=ip,
    )
    pk = scheduled.pk
    transaction.on_commit(lambda: _enqueue_deliveries([pk]), robust=True)
    return scheduled


# ---- the beat job --------------------------------------------------------------------------


@dataclass(frozen=True)
class PumpResult:
    dispatched: int
    reclaimed: int
    enqueued: int


def delivery_due_ids(*, now: datetime, limit: int = 500) -> list[int]:
    return list(
        WebhookDelivery.objects.filter(
            state=DeliveryState.SCHEDULED, next_attempt_at__lte=now, endpoint__is_active=True
        )
        .order_by("next_attempt_at", "id")
        .values_list("id", flat=True)[:limit]
    )


@transaction.atomic
def webhook_attempt_reclaim(*, delivery_id: int, now: datetime | None = None) -> bool:
    """An attempt still `sending` long after it started lost its worker: record it as failed
    (the receiver may or may not have got it) so the next attempt is scheduled."""
    now = now or timezone.now()
    stale = WebhookDelivery.objects.filter(
        pk=delivery_id,
        state=DeliveryState.SENDING,
        attempted_at__lt=now - SENDING_STALE_AFTER,
    ).exists()
    if not stale:
        return False
    record = webhook_attempt_record(
        delivery_id=delivery_id,
        outcome=AttemptOutcome(None, error="no outcome: the worker stopped during the attempt"),
        now=now,
    )
    return record.state == DeliveryState.FAILED


def outbox_pump(*, now: datetime | None = None, limit: int = 500) -> PumpResult:
    """Dispatch undispatched events, reclaim lost attempts, enqueue due attempts. Each step
    is idempotent, so overlapping runs and the on-commit path only duplicate harmless work."""
    now = now or timezone.now()
    fresh: set[int] = set()
    pending = (
        OutboxEvent.objects.filter(dispatched_at__isnull=True)
        .order_by("id")
        .values_list("id", flat=True)[:limit]
    )
    dispatched = 0
    for event_pk in list(pending):
        deliveries = outbox_event_dispatch(event_id=event_pk)  # enqueues them on commit
        fresh.update(delivery.pk for delivery in deliveries)
        dispatched += 1
    lost = WebhookDelivery.objects.filter(
        state=DeliveryState.SENDING, attempted_at__lt=now - SENDING_STALE_AFTER
    ).values_list("id", flat=True)[:limit]
    reclaimed = sum(webhook_attempt_reclaim(delivery_id=pk, now=now) for pk in list(lost))
    due = [pk for pk in delivery_due_ids(now=now, limit=limit) if pk not in fresh]
    _enqueue_deliveries(due)
    return PumpResult(dispatched=dispatched, reclaimed=reclaimed, enqueued=len(due))


# ---- global events -------------------------------------------------------------------------


def price_change_publish(*, price: Any, actor: AbstractBaseUser | None) -> list[OutboxEvent]:
    """The hook pricing calls in the transaction that creates a price version: an audit entry
    (a global action) and a `price.changed` event for every subscribed team."""
    prices = {
        field: None if getattr(price, field) is None else format_usd(getattr(price, field))
        for field in (
            "input_per_1m",
            "cache_read_per_1m",
            "output_per_1m",
            "cache_write_per_1m",
            "per_image",
            "per_megapixel",
            "per_video_second",
            "per_video",
            "per_request",
        )
    }
    data = {
        "model": price.model.name,
        "provider": price.model.provider.slug,
        "version": price.pk,
        "effective_from": _rfc3339(price.effective_from),
        "usd": prices,
        "gpu_second_prices": dict(price.gpu_second_prices or {}),
    }
    audit_record(
        actor=actor,
        team=None,
        action="price.version_create",
        target=f"price:{price.pk} {price.model.name}",
        after={k: v for k, v in data.items() if k != "provider"},
    )
    return webhook_event_broadcast(type=EventType.PRICE_CHANGED, data=data)
