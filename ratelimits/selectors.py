"""Reads for the gate: TPM limits, from a per-process table.

Every TpmLimit and TeamTpmOverride row is held in memory (one query each; a few hundred rows)
and reloaded when the shared version key moves (``limits_changed`` bumps it; the admin calls
it) or after LIMITS_MAX_AGE_SECONDS. The key is read at most once a second, so the authorize
path makes no query and usually no round trip for limits.
"""

from __future__ import annotations

import threading
import time

from django.core.cache import cache

from .models import TeamTpmOverride, TpmLimit

VERSION_KEY = "ratelimits:version"
CHECK_SECONDS = 1.0
LIMITS_MAX_AGE_SECONDS = 60.0


class _Limits:
    def __init__(self, version: object) -> None:
        self.version = version
        self.loaded_at = time.monotonic()
        self.plan = {
            (plan_id, model_id): tpm
            for plan_id, model_id, tpm in TpmLimit.objects.values_list(
                "plan_id", "model_id", "tokens_per_minute"
            )
        }
        self.team = {
            (team_id, model_id): tpm
            for team_id, model_id, tpm in TeamTpmOverride.objects.values_list(
                "team_id", "model_id", "tokens_per_minute"
            )
        }


_limits: _Limits | None = None
_checked_at = 0.0
_lock = threading.Lock()


def _version() -> object:
    try:
        return cache.get(VERSION_KEY)
    except Exception:  # a cache outage: the max age bounds staleness
        return None


def _current() -> _Limits:
    global _limits, _checked_at
    now = time.monotonic()
    checked, limits = _checked_at, _limits
    if limits is not None and now - checked < CHECK_SECONDS:
        return limits
    version = _version()
    if (
        limits is None
        or limits.version != version
        or now - limits.loaded_at > LIMITS_MAX_AGE_SECONDS
    ):
        with _lock:
            limits = _limits = _Limits(version)
    _checked_at = now
    return limits


def limits_changed() -> None:
    """Every process re-reads the limits within a second (called after an admin edit)."""
    try:
        cache.incr(VERSION_KEY)
    except ValueError:
        cache.set(VERSION_KEY, time.time_ns(), timeout=None)
    limits_forget()


def limits_forget() -> None:
    """This process re-reads the limits on its next decision (tests, a change made here)."""
    global _limits
    _limits = None


def tpm_limit(*, team_id: int, plan_id: int | None, model_id: int) -> int | None:
    """The team's tokens-per-minute limit for a model: its override, else its plan's limit;
    None when neither is configured (no TPM limit)."""
    limits = _current()
    override = limits.team.get((team_id, model_id))
    if override is not None:
        return override
    return limits.plan.get((plan_id, model_id))
