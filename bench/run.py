"""`make bench`: ingest throughput and latency of the real API (gunicorn, PostgreSQL, Redis)
next to the raw PostgreSQL rate of the same rows, printed side by side with the targets.

A benchmark, not a test: it prints figures and writes bench/results/ingest.json. It needs
wrk (apt-get install wrk) and the local PostgreSQL and Redis; it uses its own database.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import raw_pg  # noqa: E402

PY = str(ROOT / ".venv/bin/python")
DB = "gateway_billing_bench"
ROLE_URL = f"postgres://gateway_billing:gateway_billing@127.0.0.1:5432/{DB}"
PORT = 8011


def sh(*args: str, env: dict | None = None) -> None:
    subprocess.run(args, check=True, cwd=ROOT, env=env)


def fresh_database(admin_url: str) -> None:
    sh(
        PY,
        "scripts/ensure_db.py",
        "--admin-url",
        admin_url,
        "--url",
        ROLE_URL.rsplit("/", 1)[0] + "/gateway_billing",
    )
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB} OWNER gateway_billing")


def server_env(redis: str) -> dict:
    return {
        **os.environ,
        "DATABASE_URL": ROLE_URL,
        "REDIS_URL": f"{redis}/2",
        "CELERY_BROKER_URL": f"{redis}/3",
        "DEBUG": "false",
        "SECRET_KEY": "bench-only",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server not ready at {url}")


def settle(admin_url: str) -> None:
    """Write out what the previous scenario dirtied (a CHECKPOINT) before the next one starts,
    so a scenario is not charged for its predecessor's flushing."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    time.sleep(1)


def wrk(label: str, keys: str, *, mode: str, connections: int, seconds: int, out: str,
        think_ms: int = 0) -> dict:  # fmt: skip
    env = {
        **os.environ,
        "KEYS_FILE": keys,
        "MODE": mode,
        "OUT": out,
        "LABEL": label,
        "BATCH": "1000",
        "THINK_MS": str(think_ms),
    }
    threads = min(2, connections)
    subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "20s",
         "-s", str(ROOT / "bench/wrk/usage.lua"), f"http://127.0.0.1:{PORT}"],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    rows = [json.loads(line) for line in Path(out).read_text().splitlines()]
    row = next(r for r in reversed(rows) if r["label"] == label)
    per_request = 1000 if mode == "batch" else 1  # events (or requests) per request
    seconds_run = row["duration_us"] / 1e6
    errors = sum(row[k] for k in row if k.startswith("errors_"))
    return {
        "events_per_s": row["requests"] * per_request / seconds_run,
        "p50_ms": row["p50_us"] / 1000,
        "p99_ms": row["p99_us"] / 1000,
        "requests": row["requests"],
        "errors": errors,
    }


def median_of(runs: list[dict]) -> dict:
    """The median round by rate, and the median p50 and p99 (each round's figures kept)."""

    def mid(key: str) -> float:
        return sorted(r[key] for r in runs)[len(runs) // 2]

    return {
        "events_per_s": mid("events_per_s"), "p50_ms": mid("p50_ms"), "p99_ms": mid("p99_ms"),
        "requests": sum(r["requests"] for r in runs), "errors": sum(r["errors"] for r in runs),
        "rounds": [{k: r[k] for k in ("events_per_s", "p50_ms", "p99_ms")} for r in runs],
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--teams", type=int, default=64)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="authorize / empty view rounds")
    parser.add_argument("--only", default="", help="run only scenarios whose label contains this")
    parser.add_argument(
        "--think-ms", type=int, default=0,
        help="authorize / empty view below saturation: each connection pauses this long after "
        "each answer (latency at a given load; the targets are checked saturated)",
    )  # fmt: skip
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--redis", default=os.environ.get("REDIS_BASE", "redis://127.0.0.1:6379"))
    args = parser.parse_args()

    env = server_env(args.redis)
    print(
        f"bench: fresh database {DB}, migrate, catalog, {args.teams} teams + 1 hot team", flush=True
    )
    fresh_database(args.admin_url)
    sh(PY, "manage.py", "migrate", "-v0", env=env)
    sh(PY, "manage.py", "loadcatalog", "-v0", env=env)
    tmp = Path(tempfile.mkdtemp(prefix="gb-bench-"))
    keys, hot = str(tmp / "keys.txt"), str(tmp / "hot.txt")
    sh(PY, "bench/setup_data.py", str(args.teams), keys, hot, env=env)
    subprocess.run(
        ["redis-cli", "-u", f"{args.redis}/2", "flushdb"], check=True, stdout=subprocess.DEVNULL
    )

    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "gateway_billing.wsgi", "-k", "gthread",
         "-w", str(args.workers), "--threads", str(args.threads), "-b", f"127.0.0.1:{PORT}",
         "--no-control-socket", "--log-level", "warning", "--backlog", "2048"],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    out = str(tmp / "wrk.jsonl")
    results: dict[str, dict] = {}
    try:
        wait_ready(f"http://127.0.0.1:{PORT}/healthz")
        print(f"bench: gunicorn gthread {args.workers}x{args.threads} up; warming up", flush=True)
        wrk("warmup", keys, mode="single", connections=8, seconds=3, out=out)
        wrk("warmup-batch", keys, mode="batch", connections=2, seconds=3, out=out)
        wrk("warmup-authorize", keys, mode="authorize", connections=4, seconds=2, out=out)
        for label, keyfile, mode, conns in [
            ("api batch, spread", keys, "batch", 4),
            ("api batch, one team", hot, "batch", 4),
            ("api single x32, spread", keys, "single", 32),
            ("api single x32, one team", hot, "single", 32),
        ]:
            if args.only not in label:
                continue
            print(f"bench: {label} ...", flush=True)
            settle(args.admin_url)
            results[label] = wrk(
                label, keyfile, mode=mode, connections=conns, seconds=args.seconds, out=out
            )
        # The authorize target is a ratio to the empty view measured in the same run: on a
        # shared VM whose speed drifts over seconds, alternate short rounds and take medians.
        paced = f", {args.think_ms} ms think" if args.think_ms else ""
        pair = [(f"empty json view x8{paced}", "empty"), (f"api authorize x8{paced}", "authorize")]
        if any(args.only in label for label, _ in pair):
            settle(args.admin_url)
            rounds: dict[str, list[dict]] = {label: [] for label, _ in pair}
            for n in range(args.rounds):
                for label, mode in pair:
                    print(f"bench: {label} (round {n + 1} of {args.rounds}) ...", flush=True)
                    run = wrk(label, keys, mode=mode, connections=8, seconds=args.seconds,
                              out=out, think_ms=args.think_ms)  # fmt: skip
                    rounds[label].append(run)
            for label, runs in rounds.items():
                results[label] = median_of(runs)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    for label, conc, batch, hot_team in [
        ("raw batch, spread", 4, 1000, False),
        ("raw batch, one team", 4, 1000, True),
        ("raw single x32, spread", 32, 1, False),
        ("raw single x32, one team", 32, 1, True),
    ]:
        if args.only not in label:
            continue
        print(f"bench: {label} ...", flush=True)
        settle(args.admin_url)
        results[label] = raw_pg.run(
            ROLE_URL, concurrency=conc, batch=batch, seconds=args.seconds / 2, hot=hot_team
        )

    if args.only or args.think_ms:  # a partial run: the figures, not the target checks
        table(results)
        return 0
    report(results)
    results_dir = ROOT / "bench/results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "ingest.json").write_text(json.dumps(results, indent=2))
    return 0


def table(r: dict[str, dict]) -> None:
    width = max(28, *(len(label) + 2 for label in r))
    print()
    print(f"{'scenario':<{width}}{'events/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for label, row in r.items():
        p50 = f"{row['p50_ms']:.1f}" if "p50_ms" in row else "-"
        print(
            f"{label:<{width}}{row['events_per_s']:>12,.0f}{p50:>10}{row['p99_ms']:>10.1f}"
            f"{row.get('errors', 0):>8}"
        )
    for label, row in r.items():
        for n, one in enumerate(row.get("rounds", []), 1):
            print(f"  {label}, round {n}: {one['events_per_s']:,.0f}/s, p99 {one['p99_ms']:.1f} ms")


def report(r: dict[str, dict]) -> None:
    def rate(label: str) -> float:
        return r[label]["events_per_s"]

    table(r)
    checks = [
        ("batch >= 10,000 events/s", rate("api batch, spread") >= 10_000, f"{rate('api batch, spread'):,.0f}"),
        ("batch >= 50% of raw batch", rate("api batch, spread") >= 0.5 * rate("raw batch, spread"),
         f"{rate('api batch, spread') / rate('raw batch, spread'):.0%}"),
        ("single p99 <= 25 ms", r["api single x32, spread"]["p99_ms"] <= 25, f"{r['api single x32, spread']['p99_ms']:.1f} ms"),
        ("single >= 50% of raw single", rate("api single x32, spread") >= 0.5 * rate("raw single x32, spread"),
         f"{rate('api single x32, spread') / rate('raw single x32, spread'):.0%}"),
        ("one-team batch >= 70% of spread", rate("api batch, one team") >= 0.7 * rate("api batch, spread"),
         f"{rate('api batch, one team') / rate('api batch, spread'):.0%}"),
        ("one-team single >= 70% of spread", rate("api single x32, one team") >= 0.7 * rate("api single x32, spread"),
         f"{rate('api single x32, one team') / rate('api single x32, spread'):.0%}"),
        ("authorize p99 <= 5 ms", r["api authorize x8"]["p99_ms"] <= 5, f"{r['api authorize x8']['p99_ms']:.1f} ms"),
        ("authorize >= 70% of empty view", rate("api authorize x8") >= 0.7 * rate("empty json view x8"),
         f"{rate('api authorize x8') / rate('empty json view x8'):.0%}"),
        ("no errors", all(row.get("errors", 0) == 0 for row in r.values()), ""),
    ]  # fmt: skip
    print()
    for name, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<36}{value}")


if __name__ == "__main__":
    sys.exit(main())
