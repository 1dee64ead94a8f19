"""`Authorization: Bearer <key>` for the API, resolved once per request with a cached lookup.

The principal carries the team (and optional project and member) the key belongs to; views take
the team from it and never from the request body. A revoked key is dropped from the cache at
revocation, so its next request is refused.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from django.core.cache import cache
from django.utils import timezone
from rest_framework import authentication, exceptions

from ledger.models import Budget

from .keys import hash_secret
from .models import ApiKey

logger = logging.getLogger(__name__)

KEY_CACHE_SECONDS = 300
LAST_USED_EVERY_SECONDS = 60


def key_cache_key(key_hash: str) -> str:
    return f"apikey:{key_hash}"


@dataclass(frozen=True, slots=True)
class ApiPrincipal:
    key_id: int
    team_id: int
    project_id: int | None
    member_id: int | None
    scopes: frozenset[str]
    plan_id: int | None = None  # the team's plan, for the gate's limits
    # The team's hard-capped budgets as plain dicts (the gate checks them without a query) and
    # the start of its billing cycle (the period of cycle budgets).
    budgets: tuple = ()
    cycle_start: datetime | None = None
    # Auto recharge pending or able to start: (refill nano-credits, threshold nano-credits).
    recharge: tuple[int, int] | None = None
    is_authenticated: bool = True
    is_staff: bool = False

    @property
    def pk(self) -> int:  # DRF throttles and logging look for it
        return self.key_id


def _load(key_hash: str) -> ApiPrincipal | None:
    row = (
        ApiKey.objects.filter(key_hash=key_hash, revoked_at__isnull=True)
        .values(
            "id",
            "team_id",
            "project_id",
            "member_id",
            "scopes",
            "team__subscription__plan_id",
            "team__subscription__current_cycle_start",
        )
        .first()
    )
    if row is None:
        return None
    budgets = tuple(
        Budget.objects.filter(team_id=row["team_id"], hard_cap=True).values(
            "id", "name", "scope", "project_id", "project__slug", "member_id", "api_key_id",
            "period", "limit_nano", "team__time_zone",
        )
    )  # fmt: skip
    from ledger.services.recharge import recharge_allowance  # ledger imports this module

    return ApiPrincipal(
        budgets=budgets,
        recharge=recharge_allowance(team_id=row["team_id"]),
        cycle_start=row["team__subscription__current_cycle_start"],
        key_id=row["id"],
        team_id=row["team_id"],
        project_id=row["project_id"],
        member_id=row["member_id"],
        scopes=frozenset(row["scopes"]),
        plan_id=row["team__subscription__plan_id"],
    )


def principal_for_key(raw_key: str) -> ApiPrincipal | None:
    key_hash = hash_secret(raw_key)
    cache_key = key_cache_key(key_hash)
    try:
        principal = cache.get(cache_key)
    except Exception:  # the cache is down: the database answers (a key still works)
        logger.warning("api key cache unavailable", exc_info=True)
        return _load(key_hash)
    if principal is None:
        principal = _load(key_hash)
        if principal is None:
            return None
        cache.set(cache_key, principal, KEY_CACHE_SECONDS)
    _touch(principal.key_id)
    return principal


def team_keys_forget(team_id: int) -> None:
    """Drop the cached principals of a team's keys (after its plan changes)."""
    hashes = ApiKey.objects.filter(team_id=team_id).values_list("key_hash", flat=True)
    cache.delete_many([key_cache_key(h) for h in hashes])


_touched: dict[int, float] = {}  # key id -> when this process last recorded its use


def _touch(key_id: int) -> None:
    """Record last use at most once a minute per key, across processes (cache.add decides
    which one writes): no cache or database round trip on most hot-path requests."""
    now = time.monotonic()
    if now - _touched.get(key_id, -LAST_USED_EVERY_SECONDS) < LAST_USED_EVERY_SECONDS:
        return
    _touched[key_id] = now
    try:
        first = cache.add(f"apikey-touch:{key_id}", 1, LAST_USED_EVERY_SECONDS)
    except Exception:  # the cache is down: record the use anyway (once a minute per process)
        first = True
    if first:
        ApiKey.objects.filter(pk=key_id).update(last_used_at=timezone.now())


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0] != self.keyword:
            raise exceptions.AuthenticationFailed(
                "Send the API key as `Authorization: Bearer <key>`."
            )
        principal = principal_for_key(parts[1])
        if principal is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        return principal, principal

    def authenticate_header(self, request) -> str:
        return self.keyword
