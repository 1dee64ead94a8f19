"""The gate: may this team spend now? Authorize places a hold (worst-case credits and the
estimated tokens); the usage event with the same request_id settles it; release frees it; a hold
nobody settles expires after 10 minutes.

No database query in the steady state: the key, the price book, the limits and the gate's state
(Redis, see gate.py) answer. The balance mirror is refreshed after every ledger commit and rebuilt
from the database on a cold start. When Redis is down: credits are checked against the database
balance (holds cannot be placed: the answer says `degraded`), and TPM follows
RATE_LIMIT_FAIL_OPEN (allow) or refuses with 503.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import caches
from django.utils import timezone
from rest_framework import status

from gateway_billing.errors import ApplicationError
from gateway_billing.permissions import TeamContext
from ledger.models import BudgetSpend, TeamBalance
from ledger.services.budgets import period_start
from ledger.services.recharge import recharge_kick
from ledger.services.usage import UsageCommit
from pricing.money import format_credits
from pricing.rating import UnpricedUsage, Usage, rate
from pricing.selectors import model_suggestions, price_book

from .gate import LocalGate, RedisGate
from .selectors import tpm_limit

logger = logging.getLogger(__name__)

MICRO = 1000  # nano-credits per micro-credit (the gate's unit)


def micro_up(nano: int) -> int:
    """Nano-credits in the gate's micro-credits, rounded up (spend and holds: never under)."""
    return -(-nano // MICRO)


_gate: RedisGate | LocalGate | None = None


def gate() -> RedisGate | LocalGate:
    """Redis when the cache is Redis (shared by every process), else this process's state."""
    global _gate
    if _gate is None:
        backend = caches["default"]
        client = getattr(getattr(backend, "_cache", None), "get_client", None)
        _gate = RedisGate(client(write=True)) if settings.REDIS_URL and client else LocalGate()
    return _gate


def gate_reset() -> None:
    global _gate
    _gate = None


def tpm_tokens(*, provider: str, tokens: tuple[int, int, int, int]) -> int:
    """Tokens that count toward TPM: input + output (+ cache writes); cached input (cache
    reads) counts for every provider except Anthropic."""
    input_tokens, output_tokens, cache_read, cache_write = tokens
    counted = input_tokens + output_tokens + cache_write
    return counted if provider == "anthropic" else counted + cache_read


@dataclass(frozen=True)
class AuthorizeRequest:
    model: str
    estimated_input_tokens: int
    max_output_tokens: int
    provider: str | None = None
    project: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Decision:
    request_id: str
    hold_micro: int
    hold_expires_ms: int
    balance_micro: int
    held_micro: int
    tpm_limit: int | None
    tpm_used: int
    degraded: bool = False
    budgets: tuple = ()

    def render(self) -> dict:
        def credits(micro: int) -> str:
            return format_credits(micro * MICRO)

        expires = (
            datetime.fromtimestamp(self.hold_expires_ms / 1000, tz=UTC).isoformat()
            if self.hold_expires_ms
            else None
        )
        remaining = None if self.tpm_limit is None else max(self.tpm_limit - self.tpm_used, 0)
        return {
            "allowed": True,
            "request_id": self.request_id,
            "hold": {"credits": credits(self.hold_micro), "expires_at": expires},
            "tpm": {"limit": self.tpm_limit, "used": self.tpm_used, "remaining": remaining},
            "balance": {
                "total": credits(self.balance_micro),
                "held": credits(self.held_micro),
                "spendable": credits(self.balance_micro - self.held_micro),
            },
            "budgets": list(self.budgets),
            "degraded": self.degraded,
        }


def _now_ms(now: datetime | None) -> int:
    return int((now.timestamp() if now else time.time()) * 1000)


def balance_cold_load(*, team_id: int) -> None:
    """Rebuild the gate's balance mirror of one team from the database."""
    row = TeamBalance.objects.filter(team_id=team_id).values_list("balance_nano", "version").first()
    balance, version = row or (0, 0)
    gate().set_balance(team_id=team_id, balance=balance // MICRO, version=version)


def _budget_applies(budget: dict, ctx: TeamContext, project: str | None) -> bool:
    scope = budget["scope"]
    if scope == "team":
        return True
    if scope == "project":
        return (ctx.project_id is not None and ctx.project_id == budget["project_id"]) or (
            project is not None and project == budget["project__slug"]
        )
    if scope == "member":
        return ctx.member_id is not None and ctx.member_id == budget["member_id"]
    return ctx.key_id is not None and ctx.key_id == budget["api_key_id"]


def budget_tag(budget_id: int, start: datetime) -> str:
    """A budget period's name in the gate: "<budget id>:<period start, ms>"."""
    return f"{budget_id}:{int(start.timestamp() * 1000)}"


@dataclass(frozen=True, slots=True)
class _HeldBudget:
    budget: dict
    start: datetime
    tag: str
    limit_micro: int  # rounded down: rounding only ever makes the gate stricter


def _held_budgets(
    *, ctx: TeamContext, budgets: tuple, cycle_start: datetime | None, project: str | None,
    at: datetime,
) -> list[_HeldBudget]:  # fmt: skip
    """The hard-capped budget periods this request falls under."""
    held = []
    for b in budgets:
        if _budget_applies(b, ctx, project):
            start = period_start(period=b["period"], at=at, time_zone=b["team__time_zone"],
                                 cycle_start=cycle_start)  # fmt: skip
            held.append(_HeldBudget(b, start, budget_tag(b["id"], start), b["limit_nano"] // MICRO))
    return held


def _committed_spend(held: _HeldBudget) -> int:
    """A budget period's committed spend in the database (nano-credits)."""
    return (
        BudgetSpend.objects.filter(budget_id=held.budget["id"], period_start=held.start)
        .values_list("spent_nano", flat=True)
        .first()
        or 0
    )


def _budget_cold_load(*, team_id: int, held: _HeldBudget) -> None:
    """Mirror a budget period's committed spend from the database (rounded up)."""
    spent = _committed_spend(held)
    gate().budget_spent_set(team_id=team_id, tag=held.tag, spent=micro_up(spent))


def _budget_exceeded(
    held: _HeldBudget, *, spent_nano: int, held_nano: int, cost_nano: int
) -> ApplicationError:
    b = held.budget
    left = max(b["limit_nano"] - spent_nano - held_nano, 0)
    holding = f" (running requests hold {format_credits(held_nano)})" if held_nano else ""
    return ApplicationError(
        "budget_exceeded",
        f"The {b['scope']} budget {b['name']!r} has {format_credits(left)} of "
        f"{format_credits(b['limit_nano'])} credits left this {b['period']}{holding}; this "
        f"request may cost up to {format_credits(cost_nano)}.",
        status_code=status.HTTP_402_PAYMENT_REQUIRED,
        extra={"budget": {"id": b["id"], "name": b["name"], "scope": b["scope"],
                          "limit": format_credits(b["limit_nano"]),
                          "spent": format_credits(spent_nano), "held": format_credits(held_nano)}},
    )  # fmt: skip


def _render_budgets(held: list[_HeldBudget], state: tuple) -> tuple:
    rendered = []
    for h, (spent, reserved) in zip(held, state, strict=True):
        b = h.budget
        rendered.append({"id": b["id"], "name": b["name"], "scope": b["scope"],
                         "period": b["period"], "limit": format_credits(b["limit_nano"]),
                         "spent": format_credits(spent * MICRO),
                         "held": format_credits(reserved * MICRO),
                         "remaining": format_credits(max(h.limit_micro - spent - reserved, 0) * MICRO)})  # fmt: skip
    return tuple(rendered)


class StaleKey(Exception):
    """The team's keys changed since the caller's key was resolved: resolve it again."""


def authorize(
    *,
    ctx: TeamContext,
    plan_id: int | None,
    request: AuthorizeRequest,
    now: datetime | None = None,
    budgets: tuple = (),
    cycle_start: datetime | None = None,
    recharge: tuple[int, int] | None = None,
    epoch: str = "*",
) -> Decision:
    """`recharge`: the team's auto recharge is pending or can start (refill, threshold in
    nano-credits): the refill counts as spendable, and a team short of credits starts one.
    `epoch`: the team epoch the caller's key was resolved at; raises StaleKey when it moved."""
    book = price_book()
    model = book.model(name=request.model)
    if model is None:
        suggestions = model_suggestions(name=request.model)
        hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
        raise ApplicationError(
            "unknown_model", f"Unknown model {request.model!r}.{hint}",
            fields={"model": ["Unknown model."]}, status_code=422,
            extra={"suggestions": suggestions},
        )  # fmt: skip
    if request.provider is not None and request.provider != model.provider:
        raise ApplicationError(
            "provider_mismatch", f"Model {model.name} is a {model.provider} model.",
            fields={"provider": ["Does not match the model."]}, status_code=422,
        )  # fmt: skip
    at = now or timezone.now()
    price = book.price_at(model=model.id, at=at)
    try:
        if price is None:
            raise UnpricedUsage("tokens")
        usage = Usage(request.estimated_input_tokens, request.max_output_tokens)
        cost = rate(usage, price.terms, settings.CREDITS_PER_USD)
    except UnpricedUsage:
        raise ApplicationError(
            "model_unpriced", f"{model.name} has no price yet, so it cannot be authorized.",
            fields={"model": ["No price."]}, status_code=422,
        ) from None  # fmt: skip
    cost_micro = micro_up(cost.nano_credits)  # a hold never under-reserves
    held_budgets = _held_budgets(ctx=ctx, budgets=budgets, cycle_start=cycle_start,
                                 project=request.project, at=at)  # fmt: skip
    tokens = request.estimated_input_tokens + request.max_output_tokens
    limit = tpm_limit(team_id=ctx.team_id, plan_id=plan_id, model_id=model.id)
    request_id = request.request_id or uuid.uuid4().hex
    now_ms = _now_ms(now)
    allowance = recharge[0] // MICRO if recharge else 0
    try:
        for _ in range(2 + len(held_budgets)):  # each cold part is loaded once, then retried
            answer = gate().authorize(
                team_id=ctx.team_id, model_id=model.id, request_id=request_id, cost=cost_micro,
                tokens=tokens, limit=limit, now_ms=now_ms, allowance=allowance, epoch=epoch,
                budgets=[(h.tag, h.limit_micro) for h in held_budgets],
            )  # fmt: skip
            if answer.outcome == "cold":
                balance_cold_load(team_id=ctx.team_id)
            elif answer.outcome == "budget_cold":
                _budget_cold_load(team_id=ctx.team_id, held=held_budgets[answer.budget_index])
            else:
                break
        if answer.outcome in {"cold", "budget_cold"}:
            raise RuntimeError("the gate's state did not load")
    except Exception:  # the shared state is unreachable: the documented fallback
        logger.warning("gate unavailable; answering from the fallback policy", exc_info=True)
        return _fallback(ctx=ctx, request_id=request_id, cost_micro=cost_micro, limit=limit,
                         held_budgets=held_budgets)  # fmt: skip
    if answer.outcome == "stale":
        raise StaleKey
    if answer.outcome == "budget_exceeded":
        spent, reserved = answer.budgets[answer.budget_index]
        raise _budget_exceeded(held_budgets[answer.budget_index], spent_nano=spent * MICRO,
                               held_nano=reserved * MICRO, cost_nano=cost_micro * MICRO)  # fmt: skip
    if recharge and (answer.balance - answer.held) * MICRO < recharge[1]:
        recharge_kick(ctx.team_id)  # short of credits, or about to be: start the refill
    if answer.outcome == "insufficient":
        spendable = answer.balance - answer.held
        raise ApplicationError(
            "insufficient_credits",
            f"This request may cost up to {format_credits(cost_micro * MICRO)} credits; the "
            f"team can spend {format_credits(spendable * MICRO)} now. Top up or wait for "
            "running requests to settle.",
            status_code=status.HTTP_402_PAYMENT_REQUIRED,
            extra={"balance": format_credits(answer.balance * MICRO),
                   "held": format_credits(answer.held * MICRO)},
        )  # fmt: skip
    if answer.outcome == "rate_limited":
        retry = max(1, math.ceil(answer.retry_after_ms / 1000))
        too_big = limit is not None and tokens > limit
        message = (
            f"This request ({tokens} tokens) is larger than the team's limit of {limit} "
            f"tokens per minute for {model.name}; ask for fewer tokens."
            if too_big
            else f"{model.name} is at the team's limit of {limit} tokens per minute "
            f"({answer.used} used in the last 60 s); retry in {retry} s."
        )
        raise ApplicationError(
            "rate_limited", message, status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(retry)},
            extra={"tpm": {"limit": limit, "used": answer.used}, "retry_after": retry},
        )  # fmt: skip
    return Decision(
        request_id=request_id,
        hold_micro=answer.hold_credits,
        hold_expires_ms=answer.hold_expires_ms,
        balance_micro=answer.balance,
        held_micro=answer.held,
        tpm_limit=limit,
        tpm_used=answer.used,
        budgets=_render_budgets(held_budgets, answer.budgets),
    )


def _fallback(
    *, ctx: TeamContext, request_id: str, cost_micro: int, limit: int | None,
    held_budgets: list[_HeldBudget],
) -> Decision:  # fmt: skip
    """Redis is down: TPM follows RATE_LIMIT_FAIL_OPEN; credits and hard caps are checked
    against the database's committed figures (no hold can be placed)."""
    if limit is not None and not settings.RATE_LIMIT_FAIL_OPEN:
        raise ApplicationError(
            "rate_limiter_unavailable",
            "The rate limiter is unavailable; retry shortly.",
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    for h in held_budgets:
        spent = _committed_spend(h)
        if spent + cost_micro * MICRO > h.budget["limit_nano"]:
            raise _budget_exceeded(h, spent_nano=spent, held_nano=0, cost_nano=cost_micro * MICRO)
    balance = (
        TeamBalance.objects.filter(team_id=ctx.team_id)
        .values_list("balance_nano", flat=True)
        .first()
        or 0
    )
    if balance // MICRO < cost_micro:
        raise ApplicationError(
            "insufficient_credits",
            f"This request may cost up to {format_credits(cost_micro * MICRO)} credits; the "
            f"team has {format_credits(balance)}.",
            status_code=status.HTTP_402_PAYMENT_REQUIRED,
        )
    return Decision(
        request_id=request_id, hold_micro=0, hold_expires_ms=0, balance_micro=balance // MICRO,
        held_micro=0, tpm_limit=limit, tpm_used=0, degraded=True,
    )  # fmt: skip


def hold_release(*, ctx: TeamContext, request_id: str, now: datetime | None = None) -> None:
    """Free a hold early (the model call was not made). 404 when no live hold has that id."""
    found = False
    hold = gate().hold_get(team_id=ctx.team_id, request_id=request_id)
    if hold is not None:
        found = gate().settle(
            team_id=ctx.team_id, model_id=hold[4], request_id=request_id, tokens=0, member="",
            event_ms=0, now_ms=_now_ms(now), recount=False,
        )  # fmt: skip
    if not found:
        raise ApplicationError(
            "not_found", f"No live hold {request_id!r} in this team (settled, released or expired).",
            status_code=404,
        )  # fmt: skip


# ---- after-commit hooks (registered in apps.py) ----------------------------------------------


def on_book_commit(team_id: int, balance_nano: int, version: int) -> None:
    try:
        gate().set_balance(team_id=team_id, balance=balance_nano // MICRO, version=version)
    except Exception:  # the mirror is rebuilt from the database on the next cold read
        logger.warning("gate: balance mirror not updated", exc_info=True)


def on_budget_commit(team_id: int, spends: list) -> None:
    try:
        for budget_id, start, spent in spends:
            gate().budget_spent_set(team_id=team_id, tag=budget_tag(budget_id, start),
                                    spent=micro_up(spent))  # fmt: skip
    except Exception:  # rebuilt from the database on the next cold read
        logger.warning("gate: budget mirror not updated", exc_info=True)


def on_usage_replay(team_id: int, results: list) -> None:
    """A replayed event settles its hold if that hold is still live: the attempt that billed
    the event may have died between its commit and its settle, and the client retried because
    it never got the answer. Nothing else changes (the usage was counted when it settled)."""
    items = [
        {"model_id": r.model_id, "request_id": r.request_id,
         "tokens": tpm_tokens(provider=r.provider, tokens=r.tokens),
         "member": f"u:{r.usage_event_id}", "event_ms": _now_ms(r.occurred_at)}
        for r in results
        if r.request_id and r.model_id is not None
    ]  # fmt: skip
    if not items:
        return
    try:
        gate().settle_many(team_id=team_id, items=items, now_ms=_now_ms(None), only_held=True)
    except Exception:  # the hold then expires on its own
        logger.warning("gate: replayed usage not settled", exc_info=True)


def on_usage_commit(team_id: int, results: list, change: UsageCommit | None = None) -> None:
    """Mirror the new balance and budget spend, then settle holds (actual amounts replace the
    estimate) and count tokens in the window: one round trip. Usage without a request_id is
    summed per model into one window member per batch, timed at its latest event (it then
    leaves the window last: never early)."""
    items: list[dict] = []
    plain: dict[int, dict] = {}
    for r in results:
        tokens = tpm_tokens(provider=r.provider, tokens=r.tokens)
        event_ms = _now_ms(r.occurred_at)
        if r.request_id:
            items.append({"model_id": r.model_id, "request_id": r.request_id, "tokens": tokens,
                          "member": f"u:{r.usage_event_id}", "event_ms": event_ms})  # fmt: skip
            continue
        group = plain.setdefault(
            r.model_id, {"tokens": 0, "event_ms": 0, "first": r.usage_event_id}
        )
        group["tokens"] += tokens
        group["event_ms"] = max(group["event_ms"], event_ms)
    for model_id, group in plain.items():
        items.append({"model_id": model_id, "request_id": "", "tokens": group["tokens"],
                      "member": f"u:{group['first']}:{model_id}", "event_ms": group["event_ms"]})  # fmt: skip
    change = change or UsageCommit()
    balance = None
    if change.balance is not None:
        balance = (change.balance[0] // MICRO, change.balance[1])
    spends = [(budget_tag(budget_id, start), micro_up(spent))
              for budget_id, start, spent in change.budget_spends]  # fmt: skip
    try:
        gate().usage_commit(team_id=team_id, balance=balance, budget_spends=spends, items=items,
                            now_ms=_now_ms(None))  # fmt: skip
    except Exception:  # usage is recorded regardless; holds expire, mirrors rebuild when cold
        logger.warning("gate: usage not settled", exc_info=True)
