"""Recording usage: validate, rate, store the events and their ledger entries in one
transaction, exactly once per (team, event id). Also re-rating of unrated usage.

The hot path is written for 1,000-event batches: one INSERT for the events (unnest arrays on
PostgreSQL, ON CONFLICT for idempotency), one lock of the team's balance row, one INSERT for
the entries. Nothing is lost: an event is either stored with its result, or its error is
returned; nothing is double-counted: a replay returns the stored result and bills nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Project
from gateway_billing.permissions import TeamContext
from ledger.bulk import BulkInsert
from ledger.ingest.validate import UNIT_FIELDS, EventError, ParsedEvent, parse_event
from ledger.models import EntryKind, LedgerEntry, UsageEvent, UsageState
from pricing.rating import UnpricedUsage, Usage, rate
from pricing.selectors import PriceBook, model_suggestions, price_book

from .alerts import alerts_after_debit
from .book import Book
from .budgets import budgets_after_debit

MAX_BATCH = 1000
ZERO = Decimal(0)
NO_UNITS = (0,) * len(UNIT_FIELDS)  # the unit columns of a tokens-only event (ints: JSON as-is)

# Hooks run after commit with (team_id, newly recorded results, UsageCommit): the gate settles
# holds, counts tokens and mirrors the balance and budget spend, all in one round trip.
after_usage_commit: list[Callable[[int, list[EventResult], UsageCommit], None]] = []
# Hooks run with (team_id, replayed results of events stored by an earlier request): the gate
# settles a hold the first request committed but never settled (it died in between).
after_usage_replay: list[Callable[[int, list[EventResult]], None]] = []


@dataclass(slots=True)
class EventResult:
    index: int
    status: int  # 201 new, 200 replay, 4xx error
    event_id: str | None = None
    state: str | None = None
    cost_usd: Decimal | None = None
    credits_nano: int | None = None
    price_id: int | None = None
    balance: dict[str, int] | None = None
    error: dict[str, Any] | None = None
    usage_event_id: int | None = None
    model_id: int | None = None
    request_id: str = ""
    tokens: tuple[int, int, int, int] = (0, 0, 0, 0)
    project_id: int | None = None
    replayed: bool = False
    provider: str = ""
    occurred_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class UsageCommit:
    """What a usage transaction changed besides its events: the team's balance (None when
    nothing was billed) and its budget periods' spend: (budget id, period start, spent)."""

    balance: tuple[int, int] | None = None  # (balance nano-credits, version)
    budget_spends: tuple[tuple[int, datetime, int], ...] = ()


@dataclass(slots=True)
class _Pending:
    result: EventResult
    event: ParsedEvent
    row: tuple


_EVENT_COLUMNS = [
    "team_id",
    "project_id",
    "api_key_id",
    "member_id",
    "event_id",
    "request_id",
    "body_hash",
    "provider",
    "model_id",
    "occurred_at",
    "received_at",
    "status_code",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "images",
    "megapixels",
    "video_seconds",
    "videos",
    "requests",
    "gpu_seconds",
    "gpu_type",
    "usage_format",
    "raw_usage",
    "metadata",
    "state",
    "unrated_reason",
    "price_id",
    "cost_usd",
    "credits_nano",
]
_insert_events = BulkInsert(
    UsageEvent, _EVENT_COLUMNS, conflict=["team_id", "event_id"], returning=("id", "event_id")
)


def _check_constraints_now(rows: int) -> None:
    """Foreign keys are checked as rows are written, not at COMMIT (Django declares them
    deferred): the events' checks then run before the team's lock is taken, and the lock is
    not held through thousands of checks at commit. (For one event the round trip costs more
    than the checks it moves.)"""
    if rows > 1 and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def _error(index: int, exc: EventError, event_id: str | None = None) -> EventResult:
    return EventResult(
        index=index,
        status=exc.status,
        event_id=event_id,
        error={"code": exc.code, "message": exc.message, "fields": exc.fields},
    )


def _usage(event: ParsedEvent) -> Usage:
    units = event.units
    if not units:  # tokens only (the common case)
        return Usage(*event.tokens)
    return Usage(
        *event.tokens,
        images=units.get("images", ZERO),
        megapixels=units.get("megapixels", ZERO),
        video_seconds=units.get("video_seconds", ZERO),
        videos=units.get("videos", ZERO),
        requests=units.get("requests", ZERO),
        gpu_seconds=units.get("gpu_seconds", ZERO),
        gpu_type=event.gpu_type,
    )


def _projects(ctx: TeamContext, events: Sequence[ParsedEvent]) -> dict[str, int]:
    slugs = {e.project_slug for e in events if e.project_slug}
    if not slugs:
        return {}
    return dict(
        Project.objects.filter(team_id=ctx.team_id, slug__in=slugs).values_list("slug", "id")
    )


def _prepare(
    ctx: TeamContext,
    index: int,
    event: ParsedEvent,
    prices: PriceBook,
    projects: dict[str, int],
    now: datetime,
    credits_per_usd: Decimal,
) -> _Pending | EventResult:
    model = prices.model(name=event.model_name)
    if model is None:
        suggestions = model_suggestions(name=event.model_name)
        hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
        exc = EventError(
            "model", f"Unknown model {event.model_name!r}.{hint}", code="unknown_model", status=422
        )
        result = _error(index, exc, event.event_id)
        result.error["suggestions"] = suggestions  # type: ignore[index]
        return result
    if event.provider is not None and event.provider != model.provider:
        exc = EventError(
            "provider",
            f"Model {model.name} is a {model.provider} model, not {event.provider}.",
            code="provider_mismatch",
            status=422,
        )
        return _error(index, exc, event.event_id)
    project_id = ctx.project_id
    if event.project_slug:
        found = projects.get(event.project_slug)
        if found is None:
            exc = EventError(
                "project",
                f"No project {event.project_slug!r} in this team; create it first or omit project.",
                code="unknown_project",
            )
            return _error(index, exc, event.event_id)
        if ctx.project_id is not None and found != ctx.project_id:
            exc = EventError(
                "project",
                "This API key is bound to another project.",
                code="project_forbidden",
                status=403,
            )
            return _error(index, exc, event.event_id)
        project_id = found

    state, reason, price_id, cost_usd, credits_nano = UsageState.BILLED, "", None, None, None
    if event.status_code >= 500:
        state, credits_nano = UsageState.NOT_BILLED, 0
    else:
        price = prices.price_at(model=model.id, at=event.occurred_at)
        if price is None:
            state, reason = UsageState.UNRATED, f"no price for {model.name} at that time"
        else:
            try:
                cost = rate(_usage(event), price.terms, credits_per_usd)
            except UnpricedUsage as exc:
                state, reason = UsageState.UNRATED, f"no price for {exc.component}"
            else:
                price_id, cost_usd, credits_nano = price.id, cost.usd, cost.nano_credits
    units = event.units
    row = (
        ctx.team_id,
        project_id,
        ctx.key_id,
        ctx.member_id,
        event.event_id,
        event.request_id,
        event.body_hash,
        model.provider,
        model.id,
        event.occurred_at,
        now,
        event.status_code,
        *event.tokens,
        *((units.get(name, ZERO) for name in UNIT_FIELDS) if units else NO_UNITS),
        event.gpu_type,
        event.usage_format,
        orjson.dumps(event.raw_usage).decode() if event.raw_usage is not None else None,
        orjson.dumps(event.metadata).decode(),
        state,
        reason,
        price_id,
        cost_usd,
        credits_nano,
    )
    result = EventResult(
        index=index,
        status=201,
        event_id=event.event_id,
        state=state,
        cost_usd=cost_usd,
        credits_nano=credits_nano,
        price_id=price_id,
        model_id=model.id,
        request_id=event.request_id,
        tokens=event.tokens,
        project_id=project_id,
        provider=model.provider,
        occurred_at=event.occurred_at,
    )
    return _Pending(result, event, row)


def _stored_results(team_id: int, event_ids: list[str]) -> dict[str, tuple[str, EventResult]]:
    """Results of events stored earlier, by event id: (body hash, result) for replies."""
    rows = UsageEvent.objects.filter(team_id=team_id, event_id__in=event_ids).values_list(
        "id",
        "event_id",
        "body_hash",
        "state",
        "cost_usd",
        "credits_nano",
        "price_id",
        "model_id",
        "request_id",
        "project_id",
        "provider",
        "occurred_at",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
    )
    stored: dict[str, tuple[str, EventResult]] = {}
    by_pk: dict[int, EventResult] = {}
    for (pk, event_id, digest, state, cost, credits, price_id, model_id, req, project, provider,
         occurred_at, *tokens) in rows:  # fmt: skip
        result = EventResult(
            index=-1,
            status=200,
            event_id=event_id,
            state=state,
            cost_usd=cost,
            credits_nano=credits,
            price_id=price_id,
            usage_event_id=pk,
            model_id=model_id,
            request_id=req,
            project_id=project,
            replayed=True,
            provider=provider,
            occurred_at=occurred_at,
            tokens=tuple(tokens),  # type: ignore[arg-type]
        )
        stored[event_id] = (digest, result)
        by_pk[pk] = result
    entries = LedgerEntry.objects.filter(
        usage_event_id__in=list(by_pk), kind=EntryKind.USAGE
    ).values_list("usage_event_id", "buckets_after", "balance_after_nano")
    for pk, buckets, balance in entries:
        by_pk[pk].balance = {"total": balance, **buckets}
    return stored


def _replay(index: int, stored: EventResult, digest: str, body_hash: str) -> EventResult:
    if digest != body_hash:
        return EventResult(
            index=index,
            status=409,
            event_id=stored.event_id,
            error={
                "code": "idempotency_conflict",
                "message": f"Event {stored.event_id!r} was already recorded with a different "
                "body; send a new id for a new event.",
                "fields": {"id": ["Already used with a different body."]},
            },
        )
    replay = EventResult(**{f: getattr(stored, f) for f in EventResult.__slots__})
    replay.index, replay.status, replay.replayed = index, 200, True
    return replay


def usage_record(
    *, ctx: TeamContext, events: Sequence[Any], now: datetime | None = None
) -> list[EventResult]:
    """Record a batch of raw usage events for the caller's team; one result per event."""
    now = now or timezone.now()
    credits_per_usd = settings.CREDITS_PER_USD
    results: list[EventResult | None] = [None] * len(events)
    parsed: list[tuple[int, ParsedEvent]] = []
    for index, raw in enumerate(events):
        try:
            parsed.append((index, parse_event(raw, now=now)))
        except EventError as exc:
            event_id = raw.get("id") if isinstance(raw, dict) else None
            results[index] = _error(index, exc, event_id if isinstance(event_id, str) else None)

    prices = price_book()
    projects = _projects(ctx, [e for _, e in parsed])
    pending: dict[str, _Pending] = {}
    duplicates: list[tuple[int, ParsedEvent]] = []
    for index, event in parsed:
        if event.event_id in pending:
            duplicates.append((index, event))  # the same id twice in one batch
            continue
        prepared = _prepare(ctx, index, event, prices, projects, now, credits_per_usd)
        if isinstance(prepared, EventResult):
            results[index] = prepared
        else:
            pending[event.event_id] = prepared

    created: list[EventResult] = []
    replayed: list[EventResult] = []
    with transaction.atomic():
        _check_constraints_now(len(pending))
        inserted = dict((eid, pk) for pk, eid in _insert_events([p.row for p in pending.values()]))
        conflicts = [eid for eid in pending if eid not in inserted]
        stored = _stored_results(ctx.team_id, conflicts) if conflicts else {}
        book: Book | None = None
        for eid, item in pending.items():
            result = item.result
            if eid not in inserted:
                digest, earlier = stored[eid]
                results[result.index] = _replay(result.index, earlier, digest, item.event.body_hash)
                pending[eid].result = results[result.index]  # type: ignore[assignment]
                if results[result.index].replayed and earlier.request_id:  # type: ignore[union-attr]
                    replayed.append(results[result.index])  # type: ignore[arg-type]
                continue
            result.usage_event_id = inserted[eid]
            results[result.index] = result
            created.append(result)
            if result.state == UsageState.BILLED:
                if book is None:
                    book = Book.open(ctx.team_id, now=now)
                allocations = book.spend(result.credits_nano)  # type: ignore[arg-type]
                entry = book.post(
                    EntryKind.USAGE,
                    -result.credits_nano,
                    allocations,  # type: ignore[operator]
                    f"usage:{result.usage_event_id}",
                    usage_event_id=result.usage_event_id,
                    price_id=result.price_id,
                    credits_per_usd=credits_per_usd,
                )
                result.balance = {"total": entry.balance_after, **entry.buckets_after}
        change = UsageCommit()
        if book is not None:
            alerts_after_debit(book=book)
            spends = budgets_after_debit(book=book, results=created, member_id=ctx.member_id,
                                         key_id=ctx.key_id, notify=False)  # fmt: skip
            book.close(notify=False)  # the usage hooks carry the balance
            change = UsageCommit((book.balance, book.version), tuple(spends))
        if created and after_usage_commit:
            team_id = ctx.team_id
            transaction.on_commit(
                lambda: [hook(team_id, created, change) for hook in after_usage_commit]
            )

    if replayed:  # stored and committed by an earlier request: no transaction to wait for
        for hook in after_usage_replay:
            hook(ctx.team_id, replayed)

    for index, event in duplicates:
        first = pending[event.event_id].result
        if first.error is not None and first.status != 200:
            results[index] = EventResult(
                index=index, status=first.status, event_id=event.event_id, error=first.error
            )
        else:
            results[index] = _replay(
                index, first, pending[event.event_id].event.body_hash, event.body_hash
            )
    return results  # type: ignore[return-value]


def usage_rerate(*, team_id: int | None = None, limit: int = 10_000) -> int:
    """Bill unrated usage whose price now exists. Idempotent: each event is billed once
    (its entry reference is unique and the event row is locked). Returns the count billed."""
    credits_per_usd = settings.CREDITS_PER_USD
    prices = price_book()
    candidates = UsageEvent.objects.filter(state=UsageState.UNRATED)
    if team_id is not None:
        candidates = candidates.filter(team_id=team_id)
    team_ids = list(candidates.values_list("team_id", flat=True).distinct()[:limit])
    count = 0
    for tid in team_ids:
        with transaction.atomic():
            book = Book.open(tid)
            events = list(
                UsageEvent.objects.select_for_update()
                .filter(team_id=tid, state=UsageState.UNRATED)
                .order_by("id")[:limit]
            )
            for event in events:
                price = prices.price_at(model=event.model_id, at=event.occurred_at)
                if price is None:
                    continue
                usage = Usage(
                    event.input_tokens,
                    event.output_tokens,
                    event.cache_read_tokens,
                    event.cache_write_tokens,
                    images=event.images,
                    megapixels=event.megapixels,
                    video_seconds=event.video_seconds,
                    videos=event.videos,
                    requests=event.requests,
                    gpu_seconds=event.gpu_seconds,
                    gpu_type=event.gpu_type,
                )
                try:
                    cost = rate(usage, price.terms, credits_per_usd)
                except UnpricedUsage as exc:
                    event.unrated_reason = f"no price for {exc.component}"
                    event.save(update_fields=["unrated_reason"])
                    continue
                allocations = book.spend(cost.nano_credits)
                book.post(
                    EntryKind.USAGE,
                    -cost.nano_credits,
                    allocations,
                    f"usage:{event.id}",
                    usage_event_id=event.id,
                    price_id=price.id,
                    credits_per_usd=credits_per_usd,
                    reason="rated after a price was added",
                )
                event.state, event.unrated_reason = UsageState.BILLED, ""
                event.price_id, event.cost_usd = price.id, cost.usd
                event.credits_nano = cost.nano_credits
                event.save(
                    update_fields=["state", "unrated_reason", "price", "cost_usd", "credits_nano"]
                )
                count += 1
            book.close()
    return count
