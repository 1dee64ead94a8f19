"""The raw baseline: the same usage-event and ledger-entry rows (plus the balance-row update)
written by a plain psycopg client, batched like the API batches them (all rows of a statement
as one JSON text of positional arrays, dumped by orjson: ledger/bulk.py), with no Django, no
validation, no rating and no HTTP. What the API reaches as a share of this is its overhead."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import psycopg

EVENT_SQL = """
INSERT INTO ledger_usageevent (team_id, api_key_id, event_id, request_id, body_hash, provider,
  model_id, occurred_at, received_at, status_code, input_tokens, output_tokens,
  cache_read_tokens, cache_write_tokens, images, megapixels, video_seconds, videos, requests,
  gpu_seconds, gpu_type, usage_format, raw_usage, metadata, state, unrated_reason, price_id,
  cost_usd, credits_nano)
SELECT (r->>0)::bigint, (r->>1)::bigint, r->>2, '', r->>3, 'openai', (r->>4)::bigint, now(),
  now(), 200, (r->>5)::bigint, (r->>6)::bigint, (r->>7)::bigint, 0, 0, 0, 0, 0, 0, 0, '',
  'canonical', r->8, '{}'::jsonb, 'billed', '', (r->>9)::bigint, (r->>10)::numeric,
  (r->>11)::bigint
FROM jsonb_array_elements(%s::jsonb) AS r
ON CONFLICT (team_id, event_id) DO NOTHING
RETURNING id
"""
ENTRY_SQL = """
INSERT INTO ledger_ledgerentry (team_id, kind, amount_nano, balance_after_nano, buckets_after,
  allocations, reference, usage_event_id, price_id, credits_per_usd, reason, created_at)
SELECT (r->>0)::bigint, 'usage', (r->>1)::bigint, (r->>2)::bigint, r->3, r->4, r->>5, (r->>6)::bigint, (r->>7)::bigint, 180, '', now()
FROM jsonb_array_elements(%s::jsonb) AS r
"""


def _rows(*columns: list, json_at: tuple[int, ...] = ()) -> str:
    """Positional rows as one JSON text; the columns at `json_at` hold dumped JSON documents,
    embedded as JSON (as ledger/bulk.py does)."""
    rows = [list(row) for row in zip(*columns, strict=True)]
    for row in rows:
        for i in json_at:
            row[i] = orjson.Fragment(row[i])
    return orjson.dumps(rows, default=str).decode()


def _fixtures(dsn: str) -> tuple[list[tuple[int, int]], int, int]:
    with psycopg.connect(dsn) as conn:
        keys = conn.execute("SELECT team_id, id FROM accounts_apikey ORDER BY id").fetchall()
        model_id, price_id = conn.execute(
            "SELECT m.id, p.id FROM pricing_model m JOIN pricing_price p ON p.model_id = m.id "
            "WHERE m.name = 'gpt-5'"
        ).fetchone()
    return keys, model_id, price_id


def _write(conn: psycopg.Connection, team_key: tuple[int, int], model_id: int, price_id: int,
           prefix: str, n: int) -> None:  # fmt: skip
    team, key = team_key
    ids = [f"{prefix}-{i}" for i in range(n)]
    raw = json.dumps({"input_tokens": 700, "output_tokens": 300, "cache_read_tokens": 64})
    with conn.transaction():
        rows = conn.execute(
            EVENT_SQL,
            [_rows([team] * n, [key] * n, ids, ["0" * 32] * n, [model_id] * n, [700] * n,
                   [300] * n, [64] * n, [raw] * n, [price_id] * n, [Decimal("0.003883")] * n,
                   [698_940_000] * n, json_at=(8,))],
        ).fetchall()  # fmt: skip
        (balance,) = conn.execute(
            "SELECT balance_nano FROM ledger_teambalance WHERE team_id = %s FOR UPDATE", [team]
        ).fetchone()
        after = [balance - 698_940_000 * (i + 1) for i in range(len(rows))]
        buckets = json.dumps({"monthly": 0, "addon": 0, "promotional": 0, "overdraft": 0})
        conn.execute(
            ENTRY_SQL,
            [_rows([team] * n, [-698_940_000] * n, after, [buckets] * n,
                   ['[{"lot": 1, "nano": -1}]'] * n, [f"usage:{r[0]}" for r in rows],
                   [r[0] for r in rows], [price_id] * n, json_at=(3, 4))],
        )  # fmt: skip
        conn.execute(
            "UPDATE ledger_teambalance SET balance_nano = %s WHERE team_id = %s", [after[-1], team]
        )


def run(dsn: str, *, concurrency: int, batch: int, seconds: float, hot: bool) -> dict:
    """Events per second written by `concurrency` clients, `batch` events per transaction."""
    keys, model_id, price_id = _fixtures(dsn)
    stop = time.monotonic() + seconds
    counts = [0] * concurrency
    latencies: list[float] = []
    lock = threading.Lock()
    tag = datetime.now(UTC).strftime("%H%M%S%f")

    def client(c: int) -> None:
        with psycopg.connect(dsn) as conn:
            conn.autocommit = True
            n = 0
            local: list[float] = []
            while time.monotonic() < stop:
                team_key = keys[0] if hot else keys[(c + n) % len(keys)]
                start = time.perf_counter()
                _write(conn, team_key, model_id, price_id, f"raw-{tag}-{c}-{n}", batch)
                local.append(time.perf_counter() - start)
                n += 1
                counts[c] += batch
            with lock:
                latencies.extend(local)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    return {
        "events_per_s": sum(counts) / elapsed,
        "p99_ms": p99 * 1000,
        "transactions": len(latencies),
    }
