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

Hard-capped budgets are held like the balance: a hold reserves its worst case against every
budget it falls under (a per-budget, per-period held counter beside the mirror of committed
spend), and settle, release and expiry free it there too. So racing requests cannot overspend
a budget any more than the balance.

Each team also has an **epoch**, a counter bumped after any change to what its API keys carry
(revocation, plan, budgets, auto recharge). A process keeps the keys it has resolved in memory
and the authorize script checks the key's epoch in the same round trip (``stale`` when it moved),
so a revoked key or a new budget takes effect on the next request without a lookup per request.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hiredis import pack_command
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

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
    budget_index: int = -1  # budget_exceeded / budget_cold: which budget (0-based)
    budgets: tuple[tuple[int, int], ...] = ()  # per budget asked about: (spent, held) after


# credits, expires_ms, at_ms, tokens, model_id, budget tags ("<budget id>:<period ms>")
Hold = tuple[int, int, int, int, int, tuple[str, ...]]


def _parse_hold(record: str) -> Hold:
    credits, expires_ms, at_ms, tokens, model_id, *rest = record.split("|")
    tags = tuple(rest[0].split(",")) if rest and rest[0] else ()
    return int(credits), int(expires_ms), int(at_ms), int(tokens), int(model_id), tags


_LUA_COMMON = """
-- A hold's record: credits|expires|at|tokens|model|tags; tags name the budget periods it holds
-- ("<budget>:<period ms>", comma-separated). Its budget counters sit beside the team's `held`
-- key (same hash tag, so the same Redis Cluster slot).
local function free_budgets(held, record, credits)
  local tags = string.match(record, '^[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|(.+)$')
  if not tags then return end
  local prefix = string.sub(held, 1, -5) .. 'bheld:'
  for tag in string.gmatch(tags, '[^,]+') do redis.call('DECRBY', prefix .. tag, credits) end
end
local function expire_holds(held, holds, hexp, now)
  local gone = redis.call('ZRANGEBYSCORE', hexp, '-inf', now)
  for _, rid in ipairs(gone) do
    local h = redis.call('HGET', holds, rid)
    if h then
      local credits = tonumber(string.match(h, '^(%d+)|'))
      redis.call('DECRBY', held, credits)
      free_budgets(held, h, credits)
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

# KEYS: bal, held, holds, hexp, tpmz, tpms, epoch, then per budget: spent, held
# ARGV: now_ms, cost, request_id, hold_expires_ms, tokens, limit (-1: none), window_ms, ttl_ms,
#       model_id, allowance (credits a pending auto recharge adds: spendable beyond the balance),
#       epoch ('*': do not check), then per budget: limit, tag
# Returns {outcome, balance, held, used, retry_ms, hold, hold_expires, budget index,
#          then per budget: spent, held}
_AUTHORIZE = (
    _LUA_COMMON
    + """
if ARGV[11] ~= '*' and (redis.call('GET', KEYS[7]) or '') ~= ARGV[11] then return {'stale'} end
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[7])
expire_holds(KEYS[2], KEYS[3], KEYS[4], now)
local bal = redis.call('HGET', KEYS[1], 'b')
if not bal then return {'cold', 0, 0, 0, 0, 0, 0, -1} end
bal = tonumber(bal)
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
local used = trim_window(KEYS[5], KEYS[6], now - window)
local nb = (#KEYS - 7) / 2
local budgets = {}
for i = 1, nb do
  local spent = redis.call('GET', KEYS[6 + 2 * i])
  if not spent then return {'budget_cold', bal, held, used, 0, 0, 0, i - 1} end
  budgets[2 * i - 1] = tonumber(spent)
  budgets[2 * i] = math.max(tonumber(redis.call('GET', KEYS[7 + 2 * i]) or '0'), 0)
end
local function answer(outcome, retry, hold, expires, index)
  local out = {outcome, bal, held, used, retry, hold, expires, index}
  for i = 1, #budgets do out[8 + i] = budgets[i] end
  return out
end
local existing = redis.call('HGET', KEYS[3], ARGV[3])
if existing then
  local c, e = string.match(existing, '^(%d+)|(%d+)|')
  return answer('existing', 0, tonumber(c), tonumber(e), -1)
end
local cost = tonumber(ARGV[2])
for i = 1, nb do
  if budgets[2 * i - 1] + budgets[2 * i] + cost > tonumber(ARGV[10 + 2 * i]) then
    return answer('budget_exceeded', 0, 0, 0, i - 1)
  end
end
if bal - held + tonumber(ARGV[10]) < cost then return answer('insufficient', 0, 0, 0, -1) end
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
  return answer('rate_limited', retry, 0, 0, -1)
end
local ttl = tonumber(ARGV[8])
local tags = {}
for i = 1, nb do
  redis.call('INCRBY', KEYS[7 + 2 * i], cost)
  redis.call('PEXPIRE', KEYS[7 + 2 * i], ttl)
  budgets[2 * i] = budgets[2 * i] + cost
  tags[i] = ARGV[11 + 2 * i]
end
redis.call('INCRBY', KEYS[2], cost)
redis.call('HSET', KEYS[3], ARGV[3], cost .. '|' .. ARGV[4] .. '|' .. ARGV[1] .. '|' .. ARGV[5]
  .. '|' .. ARGV[9] .. '|' .. table.concat(tags, ','))
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
held = held + cost
used = used + tokens
return answer('ok', 0, cost, tonumber(ARGV[4]), -1)
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
  free_budgets(KEYS[1], h, tonumber(credits))
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


class _Wire:
    """The gate's per-request commands (authorize, settle, the key's epoch) on a connection
    each thread keeps, through redis-py's Connection directly: pack, send, read. redis-py's
    per-command path (pool checkout and return, the retry wrapper, the observability hooks)
    costs more CPU than the round trip it wraps: a GET measured 84 us through the client and
    34 us this way on the 2-core bench VM (a raw socket: 25 us). Commands are packed by hiredis
    directly (redis-py's packer first copies every argument in Python: 6 us against 1.3 us for
    authorize's). The connection takes the client's pool settings (address, database,
    timeouts). A dropped connection (Redis restarted) is opened again and the command sent once
    more, as redis-py's retry does; every command sent here is safe to repeat. A timeout or a
    second failure reaches the caller, whose fallback applies."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._local = threading.local()

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.pid != os.getpid():  # a forked child opens its own
            conn = self._local.conn = self._pool.connection_class(**self._pool.connection_kwargs)
        return conn

    def execute(self, *args: Any) -> Any:
        """One command's reply; an error reply is raised (ResponseError, NoScriptError)."""
        (reply,) = self.pipeline([args])
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def pipeline(self, commands: list[tuple]) -> list[Any]:
        """The commands in one round trip; their replies in order, an error reply as its
        exception (the rest still run)."""
        try:
            return self._pipeline(commands)
        except RedisConnectionError:  # the failure disconnected it: the next send reconnects
            return self._pipeline(commands)

    def _pipeline(self, commands: list[tuple]) -> list[Any]:
        conn = self._connection()
        conn.send_packed_command([b"".join(map(pack_command, commands))], check_health=False)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies


class RedisGate:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._wire = _Wire(client.connection_pool)
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

    @staticmethod
    def _epoch_key(team_id: int) -> str:
        return f"gb:gate:{{{team_id}}}:epoch"

    @staticmethod
    def _budget_keys(team_id: int, tag: str) -> list[str]:
        prefix = f"gb:gate:{{{team_id}}}"
        return [f"{prefix}:bspent:{tag}", f"{prefix}:bheld:{tag}"]

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
        epoch: str = "*",
        budgets: Sequence[tuple[str, int]] = (),
    ) -> GateAnswer:
        """`budgets`: the hard-capped budget periods this request falls under, as (tag, limit in
        micro-credits); `epoch`: the team epoch the caller's key was resolved at ("*": any)."""
        expires = now_ms + HOLD_TTL_MS
        keys = self._team_keys(team_id) + self._window_keys(team_id, model_id)
        keys.append(self._epoch_key(team_id))
        args = [now_ms, cost, request_id, expires, tokens, -1 if limit is None else limit,
                WINDOW_MS, HOLD_TTL_MS + WINDOW_MS, model_id, allowance, epoch]  # fmt: skip
        for tag, budget_limit in budgets:
            keys.extend(self._budget_keys(team_id, tag))
            args.extend((budget_limit, tag))
        row = self._run(self._authorize, keys, args)
        outcome = row[0].decode() if isinstance(row[0], bytes) else row[0]
        if outcome == "stale":
            return GateAnswer("stale")
        spent_held = row[8:]
        return GateAnswer(
            outcome, *(int(v) for v in row[1:8]),
            budgets=tuple(zip(spent_held[::2], spent_held[1::2], strict=True)),
        )  # fmt: skip

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
        self._pipeline(self._settle_calls(team_id, items, now_ms, "2" if only_held else "1"))

    def _settle_calls(
        self, team_id: int, items: list[dict], now_ms: int, mode: str
    ) -> list[tuple[Any, list, list]]:
        calls = []
        for item in items:
            keys = self._team_keys(team_id)[1:] + self._window_keys(team_id, item["model_id"])
            args = [now_ms, item["request_id"], item["tokens"], item["member"], WINDOW_MS,
                    item["event_ms"], mode]  # fmt: skip
            calls.append((self._settle, keys, args))
        return calls

    def _pipeline(self, calls: list[tuple[Any, list, list]]) -> None:
        """Run scripts in one round trip. (redis-py's own pipelining of scripts first asks
        SCRIPT EXISTS, a second round trip on every call.) A script the server does not know
        (restarted, flushed) fails without running; it is loaded and that call alone re-run."""
        if not calls:
            return
        results = self._wire.pipeline(
            [("EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args in calls]
        )
        missing = [c for c, r in zip(calls, results, strict=True) if isinstance(r, NoScriptError)]
        for failed in (r for r in results if isinstance(r, Exception)):
            if not isinstance(failed, NoScriptError):
                raise failed
        for script, keys, args in missing:
            script(keys=keys, args=args)  # loads the script, then runs it

    def usage_commit(
        self, *, team_id: int, balance: tuple[int, int] | None,
        budget_spends: Sequence[tuple[str, int]], items: list[dict], now_ms: int,
    ) -> None:  # fmt: skip
        """After a usage commit, in one round trip and in this order: mirror the balance
        (micro-credits, version) and the budget spend, then settle (so a freed hold never
        leaves a moment where neither the hold nor the spend counts)."""
        calls: list[tuple[Any, list, list]] = []
        if balance is not None:
            calls.append((self._set_balance, self._team_keys(team_id)[:1],
                          [balance[0], balance[1], BALANCE_TTL_MS]))  # fmt: skip
        for tag, spent in budget_spends:
            calls.append((self._set_max, self._budget_keys(team_id, tag)[:1],
                          [spent, BUDGET_TTL_MS]))  # fmt: skip
        calls.extend(self._settle_calls(team_id, items, now_ms, "1"))
        self._pipeline(calls)

    def hold_get(self, *, team_id: int, request_id: str) -> Hold | None:
        record = self.client.hget(self._team_keys(team_id)[2], request_id)
        return _parse_hold(record.decode()) if record else None

    def set_balance(self, *, team_id: int, balance: int, version: int) -> None:
        self._set_balance(
            keys=self._team_keys(team_id)[:1], args=[balance, version, BALANCE_TTL_MS]
        )

    def budget_spent_set(self, *, team_id: int, tag: str, spent: int) -> None:
        """Mirror a budget period's committed spend (micro-credits; only ever grows)."""
        self._set_max(keys=self._budget_keys(team_id, tag)[:1], args=[spent, BUDGET_TTL_MS])

    def budget_held(self, *, team_id: int, tag: str, now_ms: int) -> int:
        self.held(team_id=team_id, now_ms=now_ms)  # expires what is due first
        return max(int(self.client.get(self._budget_keys(team_id, tag)[1]) or 0), 0)

    def _run(self, script: Any, keys: list, args: list) -> Any:
        """A script's reply; a script the server does not know (restarted, flushed) is loaded
        and run again."""
        try:
            return self._wire.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return script(keys=keys, args=args)

    def epoch(self, *, team_id: int) -> str:
        value = self._wire.execute("GET", self._epoch_key(team_id))
        return value.decode() if value is not None else ""

    def epoch_bump(self, *, team_id: int) -> None:
        self.client.incr(self._epoch_key(team_id))

    KEYS_USED = "gb:apikeys:used"

    def key_used(self, *, key_id: int, at_ms: int) -> bool:
        """Remember a key's last use until the flush job writes it (True: recorded)."""
        self.client.hset(self.KEYS_USED, str(key_id), at_ms)
        return True

    def keys_used_take(self) -> dict[int, int]:
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(self.KEYS_USED)
        pipe.delete(self.KEYS_USED)
        used, _ = pipe.execute()
        return {int(k): int(v) for k, v in used.items()}

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
        self.budgets: dict[tuple[int, str], int] = {}  # (team, budget tag) -> spent
        self.budget_holds: dict[tuple[int, str], int] = {}  # (team, budget tag) -> held
        self.epochs: dict[int, int] = {}

    def _free(self, team_id: int, hold: Hold) -> None:
        for tag in hold[5]:
            key = (team_id, tag)
            self.budget_holds[key] = self.budget_holds.get(key, 0) - hold[0]

    def _expire_holds(self, team_id: int, now_ms: int) -> dict[str, Hold]:
        holds = self.holds.setdefault(team_id, {})
        for rid in [rid for rid, h in holds.items() if h[1] <= now_ms]:
            self._free(team_id, holds.pop(rid))
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
        epoch: str = "*",
        budgets: Sequence[tuple[str, int]] = (),
    ) -> GateAnswer:
        with self._lock:
            if epoch != "*" and epoch != self._epoch(team_id):
                return GateAnswer("stale")
            holds = self._expire_holds(team_id, now_ms)
            if team_id not in self.balances:
                return GateAnswer("cold", budget_index=-1)
            balance = self.balances[team_id][0]
            held = sum(h[0] for h in holds.values())
            window = self._window(team_id, model_id, now_ms)
            used = sum(n for _, n in window.values())
            state: list[tuple[int, int]] = []
            for index, (tag, _) in enumerate(budgets):
                spent = self.budgets.get((team_id, tag))
                if spent is None:
                    return GateAnswer("budget_cold", balance, held, used, budget_index=index)
                state.append((spent, max(self.budget_holds.get((team_id, tag), 0), 0)))

            def answer(outcome: str, retry: int = 0, hold: int = 0, expires: int = 0,
                       index: int = -1) -> GateAnswer:  # fmt: skip
                return GateAnswer(outcome, balance, held, used, retry, hold, expires, index,
                                  tuple(state))  # fmt: skip

            if request_id in holds:
                h = holds[request_id]
                return answer("existing", hold=h[0], expires=h[1])
            for index, ((_, budget_limit), (spent, budget_held)) in enumerate(
                zip(budgets, state, strict=True)
            ):
                if spent + budget_held + cost > budget_limit:
                    return answer("budget_exceeded", index=index)
            if balance - held + allowance < cost:
                return answer("insufficient")
            if limit is not None and used + tokens > limit:
                retry = WINDOW_MS
                if tokens <= limit:
                    need, freed = used + tokens - limit, 0
                    for at, n in sorted(window.values()):
                        freed += n
                        if freed >= need:
                            retry = at + WINDOW_MS - now_ms
                            break
                return answer("rate_limited", retry=retry)
            expires = now_ms + HOLD_TTL_MS
            tags = tuple(tag for tag, _ in budgets)
            holds[request_id] = (cost, expires, now_ms, tokens, model_id, tags)
            for tag in tags:
                self.budget_holds[(team_id, tag)] = self.budget_holds.get((team_id, tag), 0) + cost
            state = [(spent, budget_held + cost) for spent, budget_held in state]
            if tokens > 0:
                window[f"{request_id}|{tokens}"] = (now_ms, tokens)
            held, used = held + cost, used + tokens
            return answer("ok", hold=cost, expires=expires)

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
                self._free(team_id, hold)
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

    def usage_commit(
        self, *, team_id: int, balance: tuple[int, int] | None,
        budget_spends: Sequence[tuple[str, int]], items: list[dict], now_ms: int,
    ) -> None:  # fmt: skip
        if balance is not None:
            self.set_balance(team_id=team_id, balance=balance[0], version=balance[1])
        for tag, spent in budget_spends:
            self.budget_spent_set(team_id=team_id, tag=tag, spent=spent)
        self.settle_many(team_id=team_id, items=items, now_ms=now_ms)

    def hold_get(self, *, team_id: int, request_id: str) -> Hold | None:
        with self._lock:
            return self.holds.get(team_id, {}).get(request_id)

    def set_balance(self, *, team_id: int, balance: int, version: int) -> None:
        with self._lock:
            current = self.balances.get(team_id)
            if current is None or current[1] < version:
                self.balances[team_id] = (balance, version)

    def budget_spent_set(self, *, team_id: int, tag: str, spent: int) -> None:
        with self._lock:
            key = (team_id, tag)
            self.budgets[key] = max(spent, self.budgets.get(key, 0))

    def budget_held(self, *, team_id: int, tag: str, now_ms: int) -> int:
        with self._lock:
            self._expire_holds(team_id, now_ms)
            return max(self.budget_holds.get((team_id, tag), 0), 0)

    def _epoch(self, team_id: int) -> str:
        value = self.epochs.get(team_id)
        return "" if value is None else str(value)

    def epoch(self, *, team_id: int) -> str:
        with self._lock:
            return self._epoch(team_id)

    def epoch_bump(self, *, team_id: int) -> None:
        with self._lock:
            self.epochs[team_id] = self.epochs.get(team_id, 0) + 1

    def key_used(self, *, key_id: int, at_ms: int) -> bool:
        return False  # nothing flushes this store: the caller writes the row itself

    def keys_used_take(self) -> dict[int, int]:
        return {}

    def held(self, *, team_id: int, now_ms: int) -> int:
        with self._lock:
            return sum(h[0] for h in self._expire_holds(team_id, now_ms).values())

    def window_used(self, *, team_id: int, model_id: int, now_ms: int) -> int:
        with self._lock:
            return sum(n for _, n in self._window(team_id, model_id, now_ms).values())
