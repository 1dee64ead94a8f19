"""Fixtures for cycles, plan changes, webhooks and the audit log: teams whose cycle has
ended, spending, logged-in clients, and real Celery workers on a Redis broker of their own."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from django.db import connection, transaction
from django.test import Client

from accounts.models import Subscription, Team
from accounts.services import cycle_bounds
from gateway_billing.celery import app as celery_app
from ledger.models import CreditLot, EntryKind, LotSource
from ledger.services.book import Book
from ledger.services.credits import credits_grant
from pricing.money import NANO

ROOT = Path(__file__).resolve().parents[2]
BROKER_URL = os.environ.get("CELERY_TEST_BROKER_URL", "redis://127.0.0.1:6379/11")

_counter = {"n": 0}


def _next() -> int:
    _counter["n"] += 1
    return _counter["n"]


# ---- the ledger --------------------------------------------------------------------------


def rewind_cycle(team: Team, *, days: int = 35) -> Subscription:
    """Make the team's current cycle one that started `days` ago (so it has ended): the
    subscription and the monthly lot granted for it move back together."""
    subscription = Subscription.objects.get(team=team)
    start, end = cycle_bounds(subscription.current_cycle_start - timedelta(days=days))
    CreditLot.objects.filter(team_id=team.id, source=LotSource.PLAN).update(expires_at=end)
    subscription.current_cycle_start, subscription.current_cycle_end = start, end
    subscription.save(update_fields=["current_cycle_start", "current_cycle_end"])
    return subscription


def add_on(team: Team, credits: int) -> int:
    """A purchased add-on lot (no expiry); returns its id."""
    entry = credits_grant(
        team_id=team.id,
        kind=EntryKind.TOPUP,
        source=LotSource.ADDON,
        amount_nano=credits * NANO,
        reference=f"test-addon:{team.id}:{_next()}",
    )
    return entry.allocations[0]["lot"]


def spend(team: Team, nano: int) -> list[dict[str, int]]:
    """Usage through the book, as the ingest path posts it; returns the allocations."""
    with transaction.atomic():
        book = Book.open(team.id)
        allocations = book.spend(nano)
        book.post(EntryKind.USAGE, -nano, allocations, f"test-usage:{team.id}:{_next()}")
        book.close()
    return allocations


def wait_for(predicate: Callable[[], object], *, timeout: float = 30, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


@pytest.fixture
def login_as() -> Callable[..., Client]:
    def make(persona_or_user, **kwargs) -> Client:
        client = Client(**kwargs)
        client.force_login(getattr(persona_or_user, "user", persona_or_user))
        return client

    return make


# ---- real Celery workers -----------------------------------------------------------------


def _test_database_url() -> str:
    db = connection.settings_dict
    user = quote(db["USER"] or "", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or "5432"
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


class Worker:
    """`celery worker --pool=solo` in a subprocess, on the test database and our broker."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> Worker:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
        }
        env.update(
            DJANGO_SETTINGS_MODULE="gateway_billing.settings.main",
            DATABASE_URL=_test_database_url(),
            CELERY_BROKER_URL=BROKER_URL,
            DEBUG="false",
            SECRET_KEY="x",
            DB_CONN_MAX_AGE="0",
            WEBHOOK_ALLOW_PRIVATE_URLS="true",  # the receiver listens on 127.0.0.1
        )
        command = [
            str(ROOT / ".venv/bin/celery"), "-A", "gateway_billing", "worker",
            "--pool=solo", "-c", "1", "--without-heartbeat", "--without-mingle",
            "--without-gossip", "--loglevel=INFO", "-n", f"lifecycle-{uuid.uuid4().hex[:8]}@%h",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for(
            lambda: " ready." in self.log() or self.process.poll() is not None,
            timeout=60,
            what="the Celery worker to start",
        )
        assert self.process.poll() is None, self.log()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def kill9(self) -> None:
        self.process.kill()  # SIGKILL: no warm shutdown, no ack, no message restored
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.kill(self.process.pid, signal.SIGCONT)  # a paused worker cannot handle TERM
            self.process.terminate()
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """The test process publishes tasks to our Redis broker db (not eagerly) for the test."""
    client = redis.Redis.from_url(BROKER_URL)
    client.flushdb()  # our own db: nothing left over from an earlier run
    conf = celery_app.conf
    saved = conf.task_always_eager, conf.broker_url
    conf.task_always_eager, conf.broker_url = False, BROKER_URL
    celery_app._pool = None  # pools are cached per broker URL on first use
    celery_app.amqp._producer_pool = None
    try:
        yield client
    finally:
        conf.task_always_eager, conf.broker_url = saved
        celery_app._pool = None
        celery_app.amqp._producer_pool = None
        client.flushdb()
        client.close()


@pytest.fixture
def celery_workers(broker, tmp_path) -> Iterator[Callable[[], Worker]]:
    """Start workers with `celery_workers()`; every one is stopped at the end, pass or fail."""
    started: list[Worker] = []

    def start() -> Worker:
        worker = Worker(tmp_path / f"worker-{len(started) + 1}.log")
        started.append(worker)
        return worker.start()

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()
