"""The gate's shared state: per team, a mirror of the balance, the live credit holds, and a
60-second sliding window of tokens per model. Every decision is one atomic step.

Two stores with the same semantics:

- ``RedisGate`` (production, tests): each operation is one Lua script, so every gunicorn
  process and every machine sees one state, and a check-and-reserve cannot interleave with
  another. All keys of a team share a hash tag (``{team}``), so they live on one Redis Cluster
  slot.
- ``LocalGate`` (the embedded default without Redis): the same operations on dictionaries under
  a lock; correct for one process (``runserver``), which is what the embedded default runs.

Amounts here are **micro-credits** (10^-6): Lua numbers are doubles, exact to 2^53, which in
micro-credits is 9 billion credits. Balances are mirrored rounded down and holds rounded up, so
rounding can only make the gate stricter, never let spending through. The ledger itself stays in
exact nano-credits.

The window is a true sliding window: every reservation or usage is a member of a sorted set
scored by its time in milliseconds, with a running sum; members older than 60 s are dropped (and
subtracted) before each decision. No fixed minute boundary exists to burst across.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

WINDOW_MS = 60_000
HOLD_TTL_MS = 10 * 60_000


@dataclass(frozen=True, slots=True)
class GateAnswer:
    outcome: str  # ok | existing | insufficient | rate_limited | cold
    balance: int = 0  # micro-credits
    held: int = 0  # micro-credits held by live holds, after this decision
    used: int = 0  # tokens in the window, after this decision
    retry_after_ms: int = 0
    hold_credits: int = 0  # micro-credits of this request's hold
    hold_expires_ms: int = 0


Hold = tuple[int, int, int, int, int]  # credits, expires_ms, at_ms, tokens, model_id


def _parse_hold(record: str) -> Hold:
    credits, expires_ms, at_ms, tokens, model_id = record.split("|")
    return int(credits), int(expires_ms), int(at_ms), int(tokens), int(model_id)


_LUA_COMMON = """
local function expire_holds(held, holds, hexp, now)
  local gone = redis.call('ZRANGEBYSCORE', hexp, '-inf', now)
  for _, rid in ipairs(gone) do
    local h = redis.call('HGET', holds, rid)
    if h then
      redis.call('DECRBY', held, tonumber(string.match(h, '^(%d+)|')))
      redis.call('HDEL', holds, rid)
    end
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', hexp, '-inf', now) end
end
local function trim_window(z, s, cutoff)
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff)
  if #old > 0 then
    local freed = 0
    for _, m in ipairs(old) do freed = freed + tonumber(string.match(m, '|(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', cutoff)
    redis.call('DECRBY', s, freed)
  end
  return tonumber(redis.call('GET', s) or '0')
end
"""

# KEYS: bal, held, holds, hexp, tpmz, tpms
# ARGV: now_ms, cost, request_id, hold_expires_ms, tokens, limit (-1: none), window_ms, ttl_ms,
#       model_id, allowance (credits a pending auto recharge adds: spendable beyond the balance)
_AUTHORIZE = (
    _LUA_COMMON
    + """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[7])
expire_holds(KEYS[2], KEYS[3], KEYS[4], now)
local bal = redis.call('HGET', KEYS[1], 'b')
if not bal then return {'cold', 0, 0, 0, 0, 0, 0} end
bal = tonumber(bal)
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
local used = trim_window(KEYS[5], KEYS[6], now - window)
local existing = redis.call('HGET', KEYS[3], ARGV[3])
if existing then
  local c, e = string.match(existing, '^(%d+)|(%d+)|')
  return {'existing', bal, held, used, 0, tonumber(c), tonumber(e)}
end
local cost = tonumber(ARGV[2])
if bal - held + tonumber(ARGV[10]) < cost then return {'insufficient', bal, held, used, 0, 0, 0} end
local tokens = tonumber(ARGV[5])
local limit = tonumber(ARGV[6])
if limit >= 0 and used + tokens > limit then
  local retry = window
  if tokens <= limit then
    local need = used + tokens - limit
    local entries = redis.call('ZRANGE', KEYS[5], 0, -1, 'WITHSCORES')
    local freed = 0
    for i = 1, #entries, 2 do
      freed = freed + tonumber(string.match(entries[i], '|(%d+)$'))
      if freed >= need then retry = tonumber(entries[i + 1]) + window - now; break end
    end
  end
  return {'rate_limited', bal, held, used, retry, 0, 0}
end
local ttl = tonumber(ARGV[8])
redis.call('INCRBY', KEYS[2], cost)
redis.call('HSET', KEYS[3], ARGV[3], cost .. '|' .. ARGV[4] .. '|' .. ARGV[1] .. '|' .. ARGV[5] .. '|' .. ARGV[9])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('PEXPIRE', KEYS[4], ttl)
if tokens > 0 then
  redis.call('ZADD', KEYS[5], now, ARGV[3] .. '|' .. ARGV[5])
  redis.call('INCRBY', KEYS[6], tokens)
  redis.call('PEXPIRE', KEYS[5], window)
  redis.call('PEXPIRE', KEYS[6], window)
end
return {'ok', bal, held + cost, used + tokens, 0, cost, tonumber(ARGV[4])}
"""
)

# KEYS: held, holds, hexp, tpmz, tpms
# ARGV: now_ms, request_id ('' = none), actual_tokens, member, window_ms, event_ms, recount
#   recount = 1: put the actual tokens in the window (settle); 0: only free the hold (release);
#   2: settle only if the hold is still live, else change nothing (a replayed event)
_SETTLE = (
    _LUA_COMMON
    + """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[5])
local cutoff = now - window
local h = false
if ARGV[2] ~= '' then h = redis.call('HGET', KEYS[2], ARGV[2]) end
if h then
  local credits, _, at, est = string.match(h, '^(%d+)|(%d+)|(%d+)|(%d+)|')
  redis.call('DECRBY', KEYS[1], tonumber(credits))
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
  if redis.call('ZREM', KEYS[4], ARGV[2] .. '|' .. est) == 1 then
    redis.call('DECRBY', KEYS[5], tonumber(est))
  end
  at = tonumber(at)
  local actual = tonumber(ARGV[3])
  if ARGV[7] ~= '0' and at > cutoff and actual > 0 then
    redis.call('ZADD', KEYS[4], at, ARGV[2] .. '|' .. ARGV[3])
    redis.call('INCRBY', KEYS[5], actual)
    redis.call('PEXPIRE', KEYS[4], window)
    redis.call('PEXPIRE', KEYS[5], window)
  end
  return 1
end
local at = tonumber(ARGV[6])
local actual = tonumber(ARGV[3])
if ARGV[7] == '1' and at > cutoff and actual > 0 then
  if redis.call('ZADD', KEYS[4], 'NX', at, ARGV[4] .. '|' .. ARGV[3]) == 1 then
    redis.call('INCRBY', KEYS[5], actual)
    redis.call('PEXPIRE', KEYS[4], window)
    redis.call('PEXPIRE', KEYS[5], window)
  end
end
return 0
"""
)

# KEYS: bal.  ARGV: balance, version, ttl_ms.  Keeps only the newest version.
_SET_BALANCE = """
local v = redis.call('HGET', KEYS[1], 'v')
if v and tonumber(v) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'b', ARGV[1], 'v', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: held, holds, hexp.  ARGV: now_ms.  Returns the live held amount.
_HELD = (
    _LUA_COMMON
    + """
expire_holds(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1]))
return tonumber(redis.call('GET', KEYS[1]) or '0')
"""
)

BALANCE_TTL_MS = 24 * 3600 * 1000
BUDGET_TTL_MS = 40 * 24 * 3600 * 1000  # longer than any budget period

# KEYS: spent.  ARGV: spent, ttl_ms.  Spend only grows within a period: keep the largest.
_SET_MAX = """
local v = redis.call('GET', KEYS[1])
if v and tonumber(v) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class RedisGate:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._authorize = client.register_script(_AUTHORIZE)
        self._settle = client.register_script(_SETTLE)
        self._set_balance = client.register_script(_SET_BALANCE)
        self._held = client.register_script(_HELD)
        self._set_max = client.register_script(_SET_MAX)

    @staticmethod
    def _team_keys(team_id: int) -> list[str]:
        tag = f"gb:gate:{{{team_id}}}"
        return [f"{tag}:bal", f"{tag}:held", f"{tag}:holds", f"{tag}:hexp"]

    @staticmethod
    def _window_keys(team_id: int, model_id: int) -> list[str]:
        tag = f"gb:gate:{{{team_id}}}"
        return [f"{tag}:tpmz:{model_id}", f"{tag}:tpms:{model_id}"]

    def authorize(
        self,
        *,
        team_id: int,
        model_id: int,
        request_id: str,
        cost: int,
        tokens: int,
        limit: int | None,
        now_ms: int,
        allowance: int = 0,
    ) -> GateAnswer:
        expires = now_ms + HOLD_TTL_MS
        keys = self._team_keys(team_id) + self._window_keys(team_id, model_id)
        args = [now_ms, cost, request_id, expires, tokens, -1 if limit is None else limit,
                WINDOW_MS, HOLD_TTL_MS + WINDOW_MS, model_id, allowance]  # fmt: skip
        outcome, bal, held, used, retry, hold, hold_exp = self._authorize(keys=keys, args=args)
        outcome = outcome.decode() if isinstance(outcome, bytes) else outcome
        return GateAnswer(
            outcome, int(bal), int(held), int(used), int(retry), int(hold), int(hold_exp)
        )

    def settle(
        self,
        *,
        team_id: int,
        model_id: int,
        request_id: str,
        tokens: int,
        member: str,
        event_ms: int,
        now_ms: int,
        recount: bool = True,
    ) -> bool:
        keys = self._team_keys(team_id)[1:] + self._window_keys(team_id, model_id)
        args = [now_ms, request_id, tokens, member, WINDOW_MS, event_ms, "1" if recount else "0"]
        return bool(self._settle(keys=keys, args=args))

    def settle_many(
        self, *, team_id: int, items: list[dict], now_ms: int, only_held: bool = False
    ) -> None:
        """Settle a batch in one round trip (a pipeline of the settle script). `only_held`:
        touch only holds still live (replays: the window counted their usage already)."""
        pipe = self.client.pipeline(transaction=False)
        mode = "2" if only_held else "1"
        for item in items:
            keys = self._team_keys(team_id)[1:] + self._window_keys(team_id, item["model_id"])
            args = [now_ms, item["request_id"], item["tokens"], item["member"], WINDOW_MS,
                    item["event_ms"], mode]  # fmt: skip
            self._settle(keys=keys, args=args, client=pipe)
        pipe.execute()

    def hold_get(self, *, team_id: int, request_id: str) -> Hold | None:
        record = self.client.hget(self._team_keys(team_id)[2], request_id)
        return _parse_hold(record.decode()) if record else None

    def set_balance(self, *, team_id: int, balance: int, version: int) -> None:
        self._set_balance(
            keys=self._team_keys(team_id)[:1], args=[balance, version, BALANCE_TTL_MS]
        )

    @staticmethod
    def _budget_key(team_id: int, budget_id: int, period_ms: int) -> str:
        return f"gb:gate:{{{team_id}}}:budget:{budget_id}:{period_ms}"

    def budget_spent(self, *, team_id: int, periods: list[tuple[int, int]]) -> list[int | None]:
        keys = [self._budget_key(team_id, b, p) for b, p in periods]
        return [None if v is None else int(v) for v in self.client.mget(keys)] if keys else []

    def budget_spent_set(self, *, team_id: int, budget_id: int, period_ms: int, spent: int) -> None:
        key = self._budget_key(team_id, budget_id, period_ms)
        self._set_max(keys=[key], args=[spent, BUDGET_TTL_MS])

    def held(self, *, team_id: int, now_ms: int) -> int:
        return int(self._held(keys=self._team_keys(team_id)[1:4], args=[now_ms]))

    def window_used(self, *, team_id: int, model_id: int, now_ms: int) -> int:
        z = self._window_keys(team_id, model_id)[0]
        members = self.client.zrangebyscore(z, now_ms - WINDOW_MS + 1, "+inf")
        return sum(int(m.decode().rsplit("|", 1)[1]) for m in members)


class LocalGate:
    """The same operations for one process, on dictionaries under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.balances: dict[int, tuple[int, int]] = {}  # team -> (balance, version)
        self.holds: dict[int, dict[str, Hold]] = {}
        self.windows: dict[tuple[int, int], dict[str, tuple[int, int]]] = {}  # member -> (ms, n)
        self.budgets: dict[tuple[int, int, int], int] = {}  # (team, budget, period) -> spent

    def _expire_holds(self, team_id: int, now_ms: int) -> dict[str, Hold]:
        holds = self.holds.setdefault(team_id, {})
        for rid in [rid for rid, h in holds.items() if h[1] <= now_ms]:
            del holds[rid]
        return holds

    def _window(self, team_id: int, model_id: int, now_ms: int) -> dict[str, tuple[int, int]]:
        window = self.windows.setdefault((team_id, model_id), {})
        cutoff = now_ms - WINDOW_MS
        for member in [m for m, (at, _) in window.items() if at <= cutoff]:
            del window[member]
        return window

    def authorize(
        self,
        *,
        team_id: int,
        model_id: int,
        request_id: str,
        cost: int,
        tokens: int,
        limit: int | None,
        now_ms: int,
        allowance: int = 0,
    ) -> GateAnswer:
        with self._lock:
            holds = self._expire_holds(team_id, now_ms)
            if team_id not in self.balances:
                return GateAnswer("cold")
            balance = self.balances[team_id][0]
            held = sum(h[0] for h in holds.values())
            window = self._window(team_id, model_id, now_ms)
            used = sum(n for _, n in window.values())
            if request_id in holds:
                h = holds[request_id]
                return GateAnswer("existing", balance, held, used, 0, h[0], h[1])
            if balance - held + allowance < cost:
                return GateAnswer("insufficient", balance, held, used)
            if limit is not None and used + tokens > limit:
                retry = WINDOW_MS
                if tokens <= limit:
                    need, freed = used + tokens - limit, 0
                    for at, n in sorted(window.values()):
                        freed += n
                        if freed >= need:
                            retry = at + WINDOW_MS - now_ms
                            break
                return GateAnswer("rate_limited", balance, held, used, retry)
            expires = now_ms + HOLD_TTL_MS
            holds[request_id] = (cost, expires, now_ms, tokens, model_id)
            if tokens > 0:
                window[f"{request_id}|{tokens}"] = (now_ms, tokens)
            return GateAnswer("ok", balance, held + cost, used + tokens, 0, cost, expires)

    def settle(
        self,
        *,
        team_id: int,
        model_id: int,
        request_id: str,
        tokens: int,
        member: str,
        event_ms: int,
        now_ms: int,
        recount: bool = True,
        only_held: bool = False,
    ) -> bool:
        with self._lock:
            holds = self.holds.setdefault(team_id, {})
            window = self._window(team_id, model_id, now_ms)
            cutoff = now_ms - WINDOW_MS
            hold = holds.pop(request_id, None) if request_id else None
            if hold is not None:
                window.pop(f"{request_id}|{hold[3]}", None)
                if recount and hold[2] > cutoff and tokens > 0:
                    window[f"{request_id}|{tokens}"] = (hold[2], tokens)
                return True
            if recount and not only_held and event_ms > cutoff and tokens > 0:
                window.setdefault(f"{member}|{tokens}", (event_ms, tokens))
            return False

    def settle_many(
        self, *, team_id: int, items: list[dict], now_ms: int, only_held: bool = False
    ) -> None:
        for item in items:
            self.settle(team_id=team_id, now_ms=now_ms, only_held=only_held, **item)

    def hold_get(self, *, team_id: int, request_id: str) -> Hold | None:
        with self._lock:
            return self.holds.get(team_id, {}).get(request_id)

    def set_balance(self, *, team_id: int, balance: int, version: int) -> None:
        with self._lock:
            current = self.balances.get(team_id)
            if current is None or current[1] < version:
                self.balances[team_id] = (balance, version)

    def budget_spent(self, *, team_id: int, periods: list[tuple[int, int]]) -> list[int | None]:
        with self._lock:
            return [self.budgets.get((team_id, b, p)) for b, p in periods]

    def budget_spent_set(self, *, team_id: int, budget_id: int, period_ms: int, spent: int) -> None:
        with self._lock:
            key = (team_id, budget_id, period_ms)
            self.budgets[key] = max(spent, self.budgets.get(key, 0))

    def held(self, *, team_id: int, now_ms: int) -> int:
        with self._lock:
            return sum(h[0] for h in self._expire_holds(team_id, now_ms).values())

    def window_used(self, *, team_id: int, model_id: int, now_ms: int) -> int:
        with self._lock:
            return sum(n for _, n in self._window(team_id, model_id, now_ms).values())
