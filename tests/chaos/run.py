"""The chaos suite: the production shape on private PostgreSQL and Redis, a retrying client
load, faults on a seeded schedule, then proof from the database that nothing was lost, nothing
billed twice, no balance drifted, no hold left live and every webhook event delivered.

    .venv/bin/python tests/chaos/run.py --profile full     # make chaos (several minutes)
    .venv/bin/python tests/chaos/run.py --profile ci       # the pytest wrapper (about 90 s)

Prints a table and exits 1 on any loss, double billing, drift, live hold or undelivered event.
Never touches the shared PostgreSQL or Redis: it starts, restarts and stops its own.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.chaos import stripe_hook
from tests.chaos.faults import PROFILES, Injector, schedule
from tests.chaos.load import Client, LoadThread, Record, Tenant
from tests.chaos.receiver import WebhookReceiver
from tests.chaos.stack import Stack
from tests.chaos.verify import (
    Proof,
    prove_balances,
    prove_billing,
    prove_holds,
    prove_processes,
    prove_webhooks,
    wait_for_webhooks,
)

GUNICORN_WORKERS = 3


def say(text: str) -> None:
    print(f"chaos: {text}", flush=True)


def _check(result, what: str) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def prepare(
    stack: Stack, receiver: WebhookReceiver, teams: int, topups: int
) -> tuple[list[Tenant], list[dict]]:
    began = time.monotonic()
    stack.start_data_services()
    assert stack.pg is not None and stack.redis is not None
    say(f"private postgres :{stack.pg.port}, redis :{stack.redis.port}, dir {stack.base}")
    _check(stack.manage("migrate", "--noinput", "-v0"), "migrate")
    # Beat first: its first outbox sweep (every 60 s) then comes as early in the load as it can.
    stack.start_beat()
    _check(stack.manage("loadcatalog", "-v0"), "loadcatalog")
    out = stack.base / "tenants.json"
    _check(
        stack.python("tests/chaos/setup_data.py", str(teams), receiver.url, str(out), str(topups)),
        "setup",
    )
    setup = json.loads(out.read_text())
    data = setup["teams"]
    receiver.secrets.update({team["slug"]: team["secret"] for team in data})
    stack.start_worker()
    stack.start_gunicorn(workers=GUNICORN_WORKERS)
    say(f"gunicorn x{GUNICORN_WORKERS} :{stack.web_port}, celery worker, beat up; "
        f"{teams} teams ({time.monotonic() - began:.0f} s)")  # fmt: skip
    return [Tenant(team["id"], team["slug"], team["key"]) for team in data], setup["topups"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--seed", type=int, default=None, help="replay a run's fault schedule")
    parser.add_argument("--seconds", type=float, default=None, help="override the load time")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    if args.seconds:
        profile = profile.__class__(**{**profile.__dict__, "seconds": args.seconds})
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    run_id = f"c{seed}"
    plan = schedule(profile, seed)
    say(f"profile {profile.name}: {profile.seconds:.0f} s of load, {profile.threads} clients, "
        f"seed {seed}")  # fmt: skip

    # SIGTERM (a CI timeout, Ctrl-C) still tears the private services down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stack = Stack(keep=args.keep)
    receiver = WebhookReceiver().start()
    stripe_api = stripe_hook.StripeApi()  # the app's Stripe: top-ups open real sessions here
    stack.extra_env.update(stripe_api.env)
    proof = Proof()
    try:
        tenants, topups = prepare(stack, receiver, profile.teams, profile.topups)
        record = Record()
        client = Client(stack.web_port, record)
        stop = threading.Event()
        threads = [
            LoadThread(n, client=client, tenants=tenants, record=record, run_id=run_id,
                       stop=stop, seed=seed)
            for n in range(profile.threads)
        ]  # fmt: skip
        stripe = stripe_hook.StripeDeliveries(
            port=stack.web_port, topups=topups, seconds=profile.seconds, seed=seed
        )
        injector = Injector(stack=stack, receiver=receiver, plan=plan, seed=seed)
        began = time.monotonic()
        for thread in [*threads, stripe, injector]:
            thread.start()
        time.sleep(profile.seconds)
        injector.join()
        stop.set()
        say(f"load stopped after {time.monotonic() - began:.0f} s; waiting for clients' retries")
        for thread in threads:
            thread.join()
        stripe.join()
        say(f"{record.counts['events_sent']} events, {record.counts['authorize_calls']} "
            f"authorize calls in {time.monotonic() - began:.0f} s; checking")  # fmt: skip

        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            if profile.await_redelivery:
                say("waiting for the deliveries cut by worker kills to be reclaimed and re-sent")
            waited = wait_for_webhooks(
                conn, receiver, timeout=480 if profile.await_redelivery else 150,
                redelivery=profile.await_redelivery,
            )  # fmt: skip
            waited += stripe.wait_processed(conn, timeout=150)
            say(f"webhooks settled after {waited:.0f} s more")
            prove_billing(proof, conn, record)
            errors = ", ".join(f"{k} {v}" for k, v in record.errors.most_common())
            proof.row("client retries (errors seen)", f"{record.counts['retries']} ({errors or 'none'})")  # fmt: skip
            proof.failures.extend(f"unexpected answer: {r}" for r in record.rejections[:20])
            proof.row("faults injected", sum(
                n for kind, n in injector.done.items() if kind != "celery worker killed mid-delivery"
            ), bad=bool(injector.failures), why="; ".join(injector.failures))  # fmt: skip
            for kind, n in sorted(injector.done.items()):
                proof.row(f"  {kind}", n)
            prove_balances(proof, conn, stack)
            prove_holds(proof, stack, record, tenants)
            prove_webhooks(proof, conn, receiver, redelivery=profile.await_redelivery)
            stripe.prove(proof, conn)
        prove_processes(proof, stack, GUNICORN_WORKERS)
        proof.row("seed / duration", f"{seed} / {time.monotonic() - began:.0f} s "
                  f"(load {profile.seconds:.0f} s)")  # fmt: skip
    except BaseException as exc:
        proof.failures.append(f"the run broke: {type(exc).__name__}: {exc}")
        for service in stack.services.values():
            print(f"---- {service.name} log (tail) ----\n{service.tail()}", flush=True)
        if not isinstance(exc, Exception):
            raise
    finally:
        receiver.close()
        stripe_api.close()
        stack.close(keep_logs=bool(proof.failures))
        if proof.failures or args.keep:
            say(f"logs are in {stack.base}")
    print()
    print(f"chaos suite, profile {profile.name}")
    print(proof.table(), flush=True)
    return 1 if proof.failures else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
