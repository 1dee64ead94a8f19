"""`make soak`: ten minutes of `make bench` load (wrk with bench/wrk/usage.lua: single events,
batches, authorize calls, in rotation) against gunicorn, a Celery worker and beat on a private
PostgreSQL and Redis (tests/chaos/stack.py), sampling the resident memory (RSS) of every
gunicorn and Celery process at the start, after warm-up, every minute and at the end.

Fails (exit 1) when a process's RSS grows after warm-up by more than the bound (default: the
larger of 10 % and 16 MiB), when a process dies or is replaced, or when wrk saw errors. A
benchmark script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.chaos.receiver import WebhookReceiver  # noqa: E402
from tests.chaos.stack import Stack, children, rss_kib  # noqa: E402

# (mode, connections, seconds): one round of the rotation, repeated for the whole soak.
ROTATION = (("single", 16, 20), ("batch", 2, 10), ("authorize", 8, 10))
BATCH = 100  # events per batch request (bench uses 1,000; 100 keeps the database small)


@dataclass
class Samples:
    """RSS (KiB) per process, keyed by (role, pid), at labelled moments."""

    moments: list[str] = field(default_factory=list)
    rss: dict[tuple[str, int], dict[str, int | None]] = field(default_factory=dict)

    def take(self, label: str, processes: dict[tuple[str, int], None]) -> None:
        self.moments.append(label)
        for key in processes:
            self.rss.setdefault(key, {})[label] = rss_kib(key[1])


def processes(stack: Stack) -> dict[tuple[str, int], None]:
    """Every gunicorn and Celery process now (an ordered set)."""
    found: dict[tuple[str, int], None] = {}
    for name, role in (("gunicorn", "gunicorn master"), ("worker", "celery worker"),
                       ("beat", "celery beat")):  # fmt: skip
        service = stack.services[name]
        found[(role, service.pid)] = None
        child_role = "gunicorn worker" if name == "gunicorn" else f"{role} child"
        for pid in children(service.pid):
            found[(child_role, pid)] = None
    return found


def wrk(port: int, keys: Path, out: Path, mode: str, connections: int, seconds: int) -> None:
    env = {**os.environ, "KEYS_FILE": str(keys), "MODE": mode, "OUT": str(out), "LABEL": mode,
           "BATCH": str(BATCH)}  # fmt: skip
    subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--timeout",
         "20s", "-s", str(ROOT / "bench/wrk/usage.lua"), f"http://127.0.0.1:{port}"],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument(
        "--warmup", type=float, default=90, help="seconds of load before the baseline"
    )
    parser.add_argument("--sample-every", type=float, default=60)
    parser.add_argument("--workers", type=int, default=6, help="gunicorn gthread workers")
    parser.add_argument("--teams", type=int, default=16)
    parser.add_argument("--bound-percent", type=float, default=10.0)
    parser.add_argument("--bound-mib", type=float, default=16.0)
    args = parser.parse_args()

    stack = Stack()
    receiver = WebhookReceiver(delay=0).start()  # the teams' webhooks keep the worker busy
    samples = Samples()
    out = stack.base / "wrk.jsonl"
    try:
        stack.start_data_services()
        for command in (("migrate", "--noinput", "-v0"), ("loadcatalog", "-v0")):
            result = stack.manage(*command)
            if result.returncode:
                raise RuntimeError(result.stderr)
        tenants = stack.base / "tenants.json"
        result = stack.python(
            "tests/chaos/setup_data.py", str(args.teams), receiver.url, str(tenants)
        )
        if result.returncode:
            raise RuntimeError(result.stderr)
        teams = json.loads(tenants.read_text())["teams"]
        receiver.secrets.update({t["slug"]: t["secret"] for t in teams})
        keys = stack.base / "keys.txt"
        keys.write_text("\n".join(t["key"] for t in teams) + "\n")
        stack.start_beat()
        stack.start_worker(pool="prefork", concurrency=2)  # as scripts/serve.sh runs it
        stack.start_gunicorn(workers=args.workers, worker_class="gthread")
        time.sleep(2)
        watched = processes(stack)
        print(f"soak: {len(watched)} processes; {args.minutes:g} min of load, rotation "
              f"{', '.join(f'{m} x{c} {s}s' for m, c, s in ROTATION)}", flush=True)  # fmt: skip
        samples.take("start", watched)

        stop = threading.Event()

        def load() -> None:
            # The first round has a connection per worker and more, so every worker has run
            # every kind of request (lazy imports, caches, connections) before the baseline.
            boost = 2 * args.workers
            while not stop.is_set():
                for mode, connections, seconds in ROTATION:
                    if stop.is_set():
                        return
                    wrk(stack.web_port, keys, out, mode, max(connections, boost), seconds)
                boost = 0

        began = time.monotonic()
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        total = args.minutes * 60
        marks = [args.warmup]
        while marks[-1] + args.sample_every < total:
            marks.append(marks[-1] + args.sample_every)
        for n, mark in enumerate(marks):
            time.sleep(max(0.0, began + mark - time.monotonic()))
            label = "warm" if n == 0 else f"{mark:.0f}s"
            samples.take(label, watched)
            print(f"soak: {label}: " + ", ".join(
                f"{role} {pid} {mib(samples.rss[(role, pid)][label])}" for role, pid in watched
            ), flush=True)  # fmt: skip
        time.sleep(max(0.0, began + total - time.monotonic()))
        stop.set()
        loader.join()
        samples.take("end", watched)
        replaced = set(processes(stack)) ^ set(watched)
        reconcile = stack.manage("reconcile").stdout.strip().splitlines()[-1:]
        runs = [json.loads(line) for line in out.read_text().splitlines()]
    finally:
        receiver.close()
        stack.close()
    return report(samples, runs, replaced, reconcile, args)


def report(samples: Samples, runs: list[dict], replaced: set, reconcile: list[str], args) -> int:
    failures = []
    print()
    moments = samples.moments
    print(f"{'process':<22}{'pid':>8}" + "".join(f"{m:>10}" for m in moments) + f"{'growth':>16}")
    for (role, pid), values in samples.rss.items():
        warm, end = values.get("warm"), values.get("end")
        if warm is None or end is None:
            failures.append(f"{role} {pid} died during the soak")
            growth = "gone"
        else:
            delta = end - warm
            growth = f"{delta / 1024:+.1f} MiB {delta / warm:+.1%}"
            bound = max(args.bound_percent / 100 * warm, args.bound_mib * 1024)
            if delta > bound:
                failures.append(f"{role} {pid} grew {delta / 1024:.1f} MiB after warm-up")
        cells = "".join(f"{mib(values.get(m)):>10}" for m in moments)
        print(f"{role:<22}{pid:>8}{cells}{growth:>16}")
    print("(RSS in MiB; growth = end - warm)")
    if replaced:
        failures.append(f"processes replaced during the soak: {sorted(replaced)}")
    by_mode: dict[str, list[dict]] = {}
    for run in runs:
        by_mode.setdefault(run["label"], []).append(run)
    print()
    errors = 0
    for mode, rows in by_mode.items():
        requests = sum(r["requests"] for r in rows)
        seconds = sum(r["duration_us"] for r in rows) / 1e6
        failed = sum(r[k] for r in rows for k in r if k.startswith("errors_"))
        errors += failed
        per = BATCH if mode == "batch" else 1
        print(f"{mode:<10} {requests:>9,} requests {requests * per / seconds:>10,.0f} "
              f"{'events' if mode != 'authorize' else 'calls'}/s  errors {failed}")  # fmt: skip
    if errors:
        failures.append(f"wrk saw {errors} errors")
    print(f"reconcile: {' '.join(reconcile)}")
    if not reconcile or " 0 drift" not in reconcile[0]:
        failures.append(f"reconcile: {reconcile}")
    print(f"bound: growth after warm-up <= max({args.bound_percent:g} %, {args.bound_mib:g} MiB)")
    print("RESULT: " + ("PASS" if not failures else "FAIL"))
    for failure in failures:
        print(f"  - {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
