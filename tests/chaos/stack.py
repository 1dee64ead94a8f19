"""A private copy of the production shape for the chaos suite and the soak: its own
PostgreSQL cluster and Redis server (so restarting or stopping them never touches the shared
ones other people and CI are using), gunicorn, a Celery worker and beat.

Everything lives under one temporary directory and is torn down by ``Stack.close()``, which
is safe to call twice and after a failure halfway through start-up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv/bin"


def _pg_bin() -> Path:
    """PG_BIN, else the newest /usr/lib/postgresql/<version>/bin (Debian's layout)."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parts[-3].isdigit()),
        key=lambda p: int(p.parts[-3]),
    )
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
PY = str(VENV_BIN / "python")

# Settings the parent environment may carry that must not leak into the private stack.
_INHERITED_OUT = {
    "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "DEBUG",
    "SECRET_KEY", "STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_BASE", "ALLOWED_HOSTS", "EMAIL_BACKEND",
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def children(pid: int) -> list[int]:
    """Direct children of a process, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def rss_kib(pid: int) -> int | None:
    """Resident set size of a live process in KiB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PrivatePostgres:
    """A throwaway cluster (initdb) on its own port with trust auth; run as the `postgres`
    OS user when we are root (the server refuses to run as root)."""

    def __init__(self, base: Path, port: int) -> None:
        self.base = base
        self.port = port
        self.data = base / "pg"
        self.log = base / "postgres.log"

    def _as_owner(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        # fsync off: the faults here are process crashes, not power cuts, and the page cache
        # survives them; an immediate restart still runs real WAL crash recovery.
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=100 -c shared_buffers=64MB"
        )
        command = self._as_owner(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", "60", *args,
        )  # fmt: skip
        return subprocess.run(command, check=check, capture_output=True, text=True)

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.base, user="postgres")
        if not self.data.exists():
            subprocess.run(
                self._as_owner(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                               "--auth=trust", "-E", "UTF8", "--no-sync"),
                check=True, capture_output=True,
            )  # fmt: skip
        self._ctl("start")

    def restart_immediate(self) -> None:
        """A crash of the server: no checkpoint, every connection cut, WAL recovery on start."""
        self._ctl("-m", "immediate", "restart")

    def stop(self) -> None:
        if self.data.exists() and (self.data / "postmaster.pid").exists():
            self._ctl("-m", "immediate", "stop", check=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


class PrivateRedis:
    """`redis-server` with no persistence: a stop loses everything, as a crash would."""

    def __init__(self, base: Path, port: int) -> None:
        self.base = base
        self.port = port
        self.log = base / "redis.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                 "--appendonly", "no", "--dir", str(self.base)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_until(self.ping, timeout=10, what="redis-server to answer")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server at once (SIGKILL): its data goes with it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@dataclass
class Service:
    """One long-running child (gunicorn master, Celery worker, beat) in its own session."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> Service:
        with self.log.open("ab") as log:
            log.write(f"\n==== start {self.starts + 1} at {time.strftime('%X')} ====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the process itself (not its children): no clean-up, no acknowledgement."""
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(timeout=10)  # type: ignore[union-attr]

    def stop(self, timeout: float = 15) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.process.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        # whatever is left of the group (orphaned children of a killed parent)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Stack:
    """Private PostgreSQL + Redis and the app's processes on them."""

    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gb-chaos-")))
    keep: bool = False
    pg: PrivatePostgres | None = None
    redis: PrivateRedis | None = None
    database_url: str = ""
    web_port: int = 0
    services: dict[str, Service] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    def start_data_services(self) -> None:
        self.base.chmod(0o755)
        self.pg = PrivatePostgres(self.base, free_port())
        self.pg.start()
        self.database_url = self.pg.create_database("gateway_billing")
        self.redis = PrivateRedis(self.base, free_port())
        self.redis.start()

    @property
    def env(self) -> dict[str, str]:
        assert self.redis is not None
        env = {k: v for k, v in os.environ.items() if k not in _INHERITED_OUT}
        env.update(
            DJANGO_SETTINGS_MODULE="gateway_billing.settings.main",
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis.url(0),
            CELERY_BROKER_URL=self.redis.url(1),
            DEBUG="false",
            SECRET_KEY="chaos-suite-only",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            LOG_LEVEL="WARNING",
            WEBHOOK_ALLOW_PRIVATE_URLS="true",  # our receiver listens on 127.0.0.1
            WEBHOOK_TIMEOUT_SECONDS="5",
            EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PY, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True
        )

    def python(self, script: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PY, script, *args], cwd=ROOT, env=self.env, capture_output=True, text=True
        )

    # ---- the app ---------------------------------------------------------------------------

    def start_gunicorn(self, *, workers: int, worker_class: str = "sync") -> Service:
        self.web_port = free_port()
        command = [
            str(VENV_BIN / "gunicorn"), "gateway_billing.wsgi", "-w", str(workers),
            "-k", worker_class, "-b", f"127.0.0.1:{self.web_port}", "--no-control-socket",
            "--log-level", "warning", "--timeout", "30", "--graceful-timeout", "5",
            "--backlog", "2048",
        ]  # fmt: skip
        web = self._service("gunicorn", command).start()
        wait_until(lambda: self._healthy() or not web.running(), timeout=60, what="gunicorn")
        if not web.running():
            raise RuntimeError(f"gunicorn exited:\n{web.tail()}")
        return web

    def _healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.web_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def gunicorn_workers(self) -> list[int]:
        web = self.services.get("gunicorn")
        return children(web.pid) if web and web.running() else []

    def start_worker(self, *, pool: str = "solo", concurrency: int = 1) -> Service:
        command = [
            str(VENV_BIN / "celery"), "-A", "gateway_billing", "worker", f"--pool={pool}",
            "-c", str(concurrency), "--without-heartbeat", "--without-mingle",
            "--without-gossip", "--loglevel=INFO", "-n", "chaos@%h",
        ]  # fmt: skip
        worker = self.services.get("worker") or self._service("worker", command)
        worker.start()
        wait_until(
            lambda: " ready." in worker.tail(20) or not worker.running(),
            timeout=60, what="the Celery worker",
        )  # fmt: skip
        if not worker.running():
            raise RuntimeError(f"the Celery worker exited:\n{worker.tail()}")
        return worker

    def start_beat(self) -> Service:
        command = [
            str(VENV_BIN / "celery"), "-A", "gateway_billing", "beat", "--loglevel=INFO",
            f"--schedule={self.base / 'beat-schedule'}", f"--pidfile={self.base / 'beat.pid'}",
        ]  # fmt: skip
        return self._service("beat", command).start()

    def _service(self, name: str, command: list[str]) -> Service:
        service = Service(name, command, self.env, self.base / f"{name}.log")
        self.services[name] = service
        return service

    def close(self, *, keep_logs: bool = False) -> None:
        """Stop everything; remove the directory (`keep`: all of it, `keep_logs`: the logs)."""
        for service in reversed(list(self.services.values())):
            service.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.pg is not None:
            self.pg.stop()
        if self.keep:
            return
        if keep_logs:
            shutil.rmtree(self.base / "pg", ignore_errors=True)
        else:
            shutil.rmtree(self.base, ignore_errors=True)
