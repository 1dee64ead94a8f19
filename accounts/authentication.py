"""`Authorization: Bearer <key>` for the API, resolved once per request from process memory.

The principal carries the team (and optional project and member) the key belongs to, and what
the gate needs (plan, hard-capped budgets, auto recharge); views take the team from it and never
from the request body.

Each process keeps the principals it has resolved, stamped with the team's **epoch** (a counter
in the gate's store, bumped after commit by anything that changes what a key carries:
revocation, plan, budgets, auto recharge). A request checks the stamp against the current epoch:
ingest with one small GET, authorize inside the gate's own script (no extra round trip). When
the epoch moved, the key is loaded again from the database, so a revoked key's next request is
refused. Without the store (Redis down) every ingest request reads the key from the database,
and so does every authorize answered in degraded mode.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from django.db.models import Case, DateTimeField, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from rest_framework import authentication, exceptions

from ledger.models import Budget

from .keys import hash_secret
from .models import ApiKey

logger = logging.getLogger(__name__)

# A backstop: the epoch check is what makes a change visible at once. It bounds the one case the
# epoch misses: a change committed while Redis was unreachable (its bump lost) is seen by the
# other processes within this long after Redis answers again.
LOCAL_SECONDS = 60
LOCAL_MAX_KEYS = 50_000
LAST_USED_EVERY_SECONDS = 60


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
    epoch: str = "*"  # the team epoch it was loaded at ("*": unknown, never trusted from memory)
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


_local: dict[str, tuple[ApiPrincipal, float]] = {}  # key hash -> (principal, loaded at)
_team_of: dict[str, int] = {}  # key hash -> team id (a key never changes team)


def _gate():
    from ratelimits.services import gate

    return gate()


_loading = threading.Lock()  # one load at a time per process: racing threads wait and share it


def _resolve(key_hash: str, *, stale: ApiPrincipal | None = None) -> ApiPrincipal | None:
    """Load a key from the database, stamped with the epoch read *before* the load: a change
    committed after the load bumps the epoch past the stamp, so it is never missed. `stale`:
    the remembered principal the caller found out of date (another thread may have replaced
    it meanwhile; that one is used)."""
    with _loading:
        hit = _local.get(key_hash)
        if hit is not None and hit[0] is not stale and time.monotonic() - hit[1] < LOCAL_SECONDS:
            return hit[0]
        team_id = _team_of.get(key_hash)
        if team_id is None:
            team_id = (
                ApiKey.objects.filter(key_hash=key_hash).values_list("team_id", flat=True).first()
            )
            if team_id is None:
                return None
            _team_of[key_hash] = team_id
        try:
            epoch = _gate().epoch(team_id=team_id)
        except Exception:  # the store is down: this answer is not kept
            logger.warning("api key epoch unavailable", exc_info=True)
            return _load(key_hash)
        principal = _load(key_hash)
        if principal is not None:
            principal = replace(principal, epoch=epoch)
            if len(_local) >= LOCAL_MAX_KEYS:
                _local.clear()
            _local[key_hash] = (principal, time.monotonic())
        else:
            _local.pop(key_hash, None)
        return principal


def principal_for_key(
    raw_key: str, *, epoch_checked_by_caller: bool = False
) -> ApiPrincipal | None:
    """The key's principal, or None for an unknown or revoked key. With
    `epoch_checked_by_caller` a remembered principal is returned unchecked: the caller passes
    its epoch to the gate, which answers `stale` when it moved (then call `principal_reload`)."""
    key_hash = hash_secret(raw_key)
    hit = _local.get(key_hash)
    principal, stale = None, None
    if hit is not None and time.monotonic() - hit[1] < LOCAL_SECONDS:
        principal = hit[0]
        if not epoch_checked_by_caller:
            try:
                current = _gate().epoch(team_id=principal.team_id)
            except Exception:  # the store is down: the database answers (a key still works)
                logger.warning("api key epoch unavailable", exc_info=True)
                current = None
            if current != principal.epoch:
                principal, stale = None, principal
    if principal is None:
        principal = _resolve(key_hash, stale=stale)
        if principal is None:
            return None
    _touch(principal.key_id)
    return principal


def principal_reload(raw_key: str, stale: ApiPrincipal) -> ApiPrincipal | None:
    """Load a key again: the gate found its team's epoch moved since `stale` was remembered."""
    return _resolve(hash_secret(raw_key), stale=stale)


def keys_forget_all() -> None:
    """Forget every key this process remembers (tests; nothing else needs it)."""
    _local.clear()
    _team_of.clear()
    _touched.clear()


def team_keys_forget(team_id: int) -> None:
    """Every process drops what it remembers of the team's keys (call after commit)."""
    for key_hash, (principal, _) in list(_local.items()):
        if principal.team_id == team_id:
            _local.pop(key_hash, None)
    try:
        _gate().epoch_bump(team_id=team_id)
    except Exception:  # other processes see it within LOCAL_SECONDS
        logger.warning("api key epoch not bumped for team %s", team_id, exc_info=True)


_touched: dict[int, float] = {}  # key id -> when this process last recorded its use


def _touch(key_id: int) -> None:
    """Record last use at most once a minute per key and process, off the database: into the
    gate's store, which the `api_keys_last_used_flush` beat job writes to the keys every minute.
    The embedded store (or a store that is down) has no such job: the row is updated here."""
    now = time.monotonic()
    if now - _touched.get(key_id, -LAST_USED_EVERY_SECONDS) < LAST_USED_EVERY_SECONDS:
        return
    _touched[key_id] = now
    try:
        if _gate().key_used(key_id=key_id, at_ms=int(time.time() * 1000)):
            return
    except Exception:
        logger.warning("api key use not recorded in the store", exc_info=True)
    ApiKey.objects.filter(pk=key_id).update(last_used_at=timezone.now())


FLUSH_CHUNK = 500  # keys per UPDATE


def keys_last_used_flush() -> int:
    """Write the uses recorded in the gate's store to the keys (the beat job), one UPDATE per
    500 keys; a key's last use never moves back. Returns how many keys were recorded."""
    used = list(_gate().keys_used_take().items())
    for start in range(0, len(used), FLUSH_CHUNK):
        chunk = used[start : start + FLUSH_CHUNK]
        at = Case(
            *(When(pk=key_id, then=Value(datetime.fromtimestamp(ms / 1000, tz=UTC)))
              for key_id, ms in chunk),
            output_field=DateTimeField(),
        )  # fmt: skip
        ApiKey.objects.filter(pk__in=[key_id for key_id, _ in chunk]).update(
            last_used_at=Greatest(Coalesce("last_used_at", at), at)
        )
    return len(used)


def bearer_key(header: str) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, or None for any other shape."""
    parts = header.split()
    return parts[1] if len(parts) == 2 and parts[0] == ApiKeyAuthentication.keyword else None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        raw_key = bearer_key(header)
        if raw_key is None:
            raise exceptions.AuthenticationFailed(
                "Send the API key as `Authorization: Bearer <key>`."
            )
        principal = principal_for_key(raw_key)
        if principal is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        return principal, principal

    def authenticate_header(self, request) -> str:
        return self.keyword
