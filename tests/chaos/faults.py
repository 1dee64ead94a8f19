"""Faults injected while the load runs, on a schedule drawn from a seed (printed, so a failing
run can be replayed): SIGKILL of gunicorn workers (the master respawns them), SIGKILL of the
Celery worker in the middle of a webhook delivery (then a restart), an immediate restart of
PostgreSQL, and Redis stopped for 10 seconds (its data is lost: no persistence)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass

from .receiver import WebhookReceiver
from .stack import Stack, wait_until

GUNICORN_WORKER = "gunicorn worker SIGKILL"
CELERY_WORKER = "celery worker SIGKILL + restart"
POSTGRES_RESTART = "postgres restart (immediate)"
REDIS_OUTAGE = "redis stopped 10 s"
REDIS_DOWN_SECONDS = 10.0


@dataclass(frozen=True)
class Profile:
    name: str
    seconds: float  # of load
    threads: int
    teams: int
    topups: int  # per team, paid by signed Stripe webhook events during the load
    gunicorn_kills: int
    celery_kills: int
    redis_at: float  # share of the load time at which Redis goes down
    postgres_at: float
    celery_span: float  # Celery kills fall in this first share of the load
    # Wait for the deliveries a killed worker left `sending` to be reclaimed (after 5 min)
    # and sent again, and see the receiver absorb the redelivery.
    await_redelivery: bool


PROFILES = {
    # make test: about 90 s with start-up and the checks
    "ci": Profile("ci", seconds=35, threads=6, teams=4, topups=3, gunicorn_kills=3, celery_kills=2,
                  redis_at=0.1, postgres_at=0.6, celery_span=0.8, await_redelivery=False),
    # make chaos: about 9 minutes, most of it waiting for the reclaimed deliveries
    "full": Profile("full", seconds=240, threads=8, teams=6, topups=8, gunicorn_kills=15, celery_kills=5,
                    redis_at=0.3, postgres_at=0.7, celery_span=0.4, await_redelivery=True),
}  # fmt: skip


def schedule(profile: Profile, seed: int) -> list[tuple[float, str]]:
    """When each fault strikes (seconds into the load)."""
    rnd = random.Random(seed)
    span = profile.seconds
    plan = [(profile.redis_at * span, REDIS_OUTAGE), (profile.postgres_at * span, POSTGRES_RESTART)]
    plan += [
        (rnd.uniform(0.05, 0.9) * span, GUNICORN_WORKER) for _ in range(profile.gunicorn_kills)
    ]
    # Celery kills spread over their span, each one jittered (a restart and a caught delivery
    # take a few seconds).
    for i in range(profile.celery_kills):
        slot = span * profile.celery_span / profile.celery_kills
        plan.append((span * 0.05 + slot * i + rnd.uniform(0, slot * 0.8), CELERY_WORKER))
    return sorted(plan)


class Injector(threading.Thread):
    def __init__(
        self, *, stack: Stack, receiver: WebhookReceiver, plan: list[tuple[float, str]], seed: int
    ) -> None:
        super().__init__(name="faults", daemon=True)
        self.stack = stack
        self.receiver = receiver
        self.plan = plan
        self.random = random.Random(seed + 1)
        self.started = 0.0
        self.done: Counter[str] = Counter()  # faults injected, by kind
        self.log: list[str] = []
        self.failures: list[str] = []  # faults that could not be injected

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self.started:7.1f}s  {text}"
        self.log.append(line)
        print(f"chaos: {line}", flush=True)

    def run(self) -> None:
        self.started = time.monotonic()
        threads = []
        for at, kind in self.plan:
            delay = self.started + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                if kind == REDIS_OUTAGE:  # long: run it beside the others
                    thread = threading.Thread(target=self.redis_outage, daemon=True)
                    thread.start()
                    threads.append(thread)
                elif kind == GUNICORN_WORKER:
                    self.kill_gunicorn_worker()
                elif kind == CELERY_WORKER:
                    self.kill_celery_worker()
                elif kind == POSTGRES_RESTART:
                    self.restart_postgres()
            except Exception as exc:  # a fault that could not be injected is a failed run
                self.failures.append(f"{kind}: {type(exc).__name__}: {exc}")
                self.note(f"FAILED {kind}: {exc}")
        for thread in threads:
            thread.join()

    def kill_gunicorn_worker(self) -> None:
        workers = self.stack.gunicorn_workers()
        if not workers:
            raise RuntimeError("no gunicorn worker to kill")
        pid = self.random.choice(workers)
        os.kill(pid, signal.SIGKILL)
        self.done[GUNICORN_WORKER] += 1
        self.note(f"{GUNICORN_WORKER}: pid {pid}")
        # The next kill picks among live workers: wait for the master to reap and replace it.
        wait_until(
            lambda: pid not in (now := self.stack.gunicorn_workers()) and len(now) >= len(workers),
            timeout=30, what="gunicorn to replace the killed worker",
        )  # fmt: skip

    def kill_celery_worker(self) -> None:
        worker = self.stack.services["worker"]
        caught = self.receiver.trap(timeout=20)
        try:
            pid = worker.pid
            worker.kill()
        finally:
            self.receiver.release()
        self.done[CELERY_WORKER] += 1
        if caught:
            self.done["celery worker killed mid-delivery"] += 1
        where = "mid-delivery (its webhook POST was held open)" if caught else "no delivery seen"
        self.note(f"{CELERY_WORKER}: pid {pid}, {where}")
        time.sleep(1)
        self.stack.start_worker()
        self.note(f"celery worker restarted: pid {worker.pid}")

    def restart_postgres(self) -> None:
        assert self.stack.pg is not None
        began = time.monotonic()
        self.stack.pg.restart_immediate()
        self.done[POSTGRES_RESTART] += 1
        self.note(f"{POSTGRES_RESTART}: back after {time.monotonic() - began:.1f} s")

    def redis_outage(self) -> None:
        assert self.stack.redis is not None
        self.stack.redis.stop()
        self.note("redis stopped (SIGKILL, no persistence: its data is gone)")
        time.sleep(REDIS_DOWN_SECONDS)
        self.stack.redis.start()
        self.done[REDIS_OUTAGE] += 1
        self.note(f"{REDIS_OUTAGE}: back")
