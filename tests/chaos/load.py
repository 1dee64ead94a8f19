"""The chaos suite's load generator: client threads that send usage (single and batch),
authorize calls whose holds the usage then settles (or a release frees), and deliberate
duplicates, retrying every request on any error or timeout with the same ids (so a retry is
idempotent), and remembering every event the server acknowledged.

A well-behaved client, as the README asks: it resends the exact same body for an event id;
an authorize refused after a retry is released (an earlier attempt may have placed the hold).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Models with prices (nothing unrated), mixed across providers and price levels.
MODELS = ("gpt-5", "gpt-5-mini", "gpt-4o-mini", "claude-sonnet-4-5-20250929", "gemini-2.5-flash")
REQUEST_TIMEOUT = 10.0
RETRY_DEADLINE = 180.0  # a client gives up on a request after this long (then: unacknowledged)
DUPLICATE_SHARE = 0.10


@dataclass(frozen=True)
class Tenant:
    id: int
    slug: str
    key: str


@dataclass
class Event:
    tenant: Tenant
    body: dict[str, Any]
    acked: bool = False
    first_status: int = 0  # the status of the first acknowledgement: 201 new, 200 replay
    credits: str | None = None  # the credits the acknowledgement said were billed


@dataclass
class Authorization:
    tenant: Tenant
    request_id: str
    outcome: str = ""  # allowed | degraded | refused:<code> | unanswered
    hold_credits: str = ""
    settled_by: str = ""  # usage:<event id> | released | released:404 | ""


@dataclass
class Record:
    """Everything the clients saw. Mutated under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    events: dict[tuple[int, str], Event] = field(default_factory=dict)
    authorizations: dict[str, Authorization] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # transport errors and 5xx, by kind
    rejections: list[str] = field(default_factory=list)  # 4xx answers a correct client never gets

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n


class Client:
    """One connection per request (gunicorn's sync workers close them anyway); retries every
    transport error, timeout and 5xx with capped backoff until RETRY_DEADLINE."""

    def __init__(self, port: int, record: Record) -> None:
        self.port = port
        self.record = record

    def call(self, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any, int]:
        """(status, parsed body, attempts); status 0 when the deadline passed unanswered."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        deadline = time.monotonic() + RETRY_DEADLINE
        attempts, backoff = 0, 0.1
        while time.monotonic() < deadline:
            attempts += 1
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                self.record.count("retries")
                with self.record.lock:
                    self.record.errors[type(exc).__name__] += 1
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            finally:
                conn.close()
            if status >= 500:
                self.record.count("retries")
                with self.record.lock:
                    self.record.errors[f"HTTP {status}"] += 1
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            return status, json.loads(raw) if raw else None, attempts
        return 0, None, attempts


class LoadThread(threading.Thread):
    def __init__(
        self, n: int, *, client: Client, tenants: list[Tenant], record: Record, run_id: str,
        stop: threading.Event, seed: int,
    ) -> None:  # fmt: skip
        super().__init__(name=f"load-{n}", daemon=True)
        self.n = n
        self.client = client
        self.tenants = tenants
        self.record = record
        self.run_id = run_id
        self.stop = stop
        self.random = random.Random(seed * 1000 + n)
        self.counter = 0
        # This thread's acknowledged events by team: duplicates are drawn from here.
        self.mine: dict[int, list[Event]] = {}

    # ---- event bodies -------------------------------------------------------------------------

    def _new_event(
        self, tenant: Tenant, request_id: str | None = None, model: str | None = None
    ) -> Event:
        self.counter += 1
        rnd = self.random
        body: dict[str, Any] = {
            "id": f"{self.run_id}-{self.n}-{self.counter}",
            "model": model or rnd.choice(MODELS),
            "usage": {
                "input_tokens": rnd.randint(100, 4000),
                "output_tokens": rnd.randint(10, 1200),
                "cache_read_tokens": rnd.choice((0, 0, 64, 512)),
            },
            "metadata": {"chaos": self.run_id},
        }
        if request_id:
            body["request_id"] = request_id
        event = Event(tenant, body)
        with self.record.lock:
            self.record.events[(tenant.id, body["id"])] = event
            self.record.counts["events_sent"] += 1
        return event

    def _duplicate(self, tenant: Tenant | None = None) -> Event | None:
        if tenant is None:
            pool = [e for events in self.mine.values() for e in events[-200:]]
        else:
            pool = self.mine.get(tenant.id, [])
        return self.random.choice(pool) if pool else None

    # ---- acknowledgements ---------------------------------------------------------------------

    def _ack(self, event: Event, result: dict, *, duplicate: bool) -> None:
        status = result.get("status")
        if status not in (200, 201) or result.get("state") != "billed":
            with self.record.lock:
                self.record.rejections.append(
                    f"{event.body['id']}: {status} {result.get('error') or result.get('state')}"
                )
            return
        with self.record.lock:
            counts = self.record.counts
            if status == 201:
                counts["acked_created"] += 1
            elif duplicate:
                counts["duplicates_absorbed"] += 1
            else:
                counts["retries_absorbed"] += 1  # an earlier attempt committed; its answer was lost
            if duplicate:
                if status == 201:
                    counts["duplicate_billed_as_new"] += 1  # never: the first one was acked
                if result.get("credits") != event.credits:
                    self.record.rejections.append(
                        f"{event.body['id']}: replay says {result.get('credits')} credits, "
                        f"first answer {event.credits}"
                    )
                return
            if not event.acked:
                event.acked, event.first_status = True, status
                event.credits = result.get("credits")
        if not duplicate:
            self.mine.setdefault(event.tenant.id, []).append(event)

    def _rejected(self, what: str, status: int, body: Any) -> None:
        with self.record.lock:
            if status == 0:
                self.record.counts["gave_up"] += 1
            self.record.rejections.append(f"{what}: HTTP {status} {body}")

    # ---- operations ---------------------------------------------------------------------------

    def send_single(self, event: Event, *, duplicate: bool = False) -> None:
        if duplicate:
            self.record.count("duplicates_sent")
        status, body, _ = self.client.call("POST", "/api/v1/usage", event.tenant.key, event.body)
        if status in (200, 201) and isinstance(body, dict):
            self._ack(event, body, duplicate=duplicate)
        else:
            self._rejected(f"usage {event.body['id']}", status, body)

    def send_batch(self) -> None:
        tenant = self.random.choice(self.tenants)
        size = self.random.randint(5, 20)
        batch: list[tuple[Event, bool]] = []
        taken: set[str] = set()
        for _ in range(size):
            old = self._duplicate(tenant) if self.random.random() < DUPLICATE_SHARE else None
            if old is not None and old.body["id"] not in taken:
                batch.append((old, True))
                self.record.count("duplicates_sent")
            else:
                batch.append((self._new_event(tenant), False))
            taken.add(batch[-1][0].body["id"])
        status, body, _ = self.client.call(
            "POST", "/api/v1/usage/batch", tenant.key, {"events": [e.body for e, _ in batch]}
        )
        self.record.count("batches")
        if status != 200 or not isinstance(body, dict):
            self._rejected(f"batch of {len(batch)}", status, body)
            return
        for (event, duplicate), result in zip(batch, body["results"], strict=True):
            self._ack(event, result, duplicate=duplicate)

    def authorize_then_settle(self) -> None:
        tenant = self.random.choice(self.tenants)
        self.counter += 1
        auth = Authorization(tenant, f"{self.run_id}-r{self.n}-{self.counter}")
        with self.record.lock:
            self.record.authorizations[auth.request_id] = auth
        model = self.random.choice(MODELS)
        estimate_in, max_out = self.random.randint(500, 4000), self.random.randint(100, 1200)
        status, body, attempts = self.client.call(
            "POST", "/api/v1/authorize", tenant.key,
            {"model": model, "estimated_input_tokens": estimate_in,
             "max_output_tokens": max_out, "request_id": auth.request_id},
        )  # fmt: skip
        self.record.count("authorize_calls")
        if status == 200:
            auth.outcome = "degraded" if body.get("degraded") else "allowed"
            auth.hold_credits = body["hold"]["credits"]
            self.record.count(f"authorize_{auth.outcome}")
        else:
            code = (body or {}).get("error", {}).get("code", "") if status else "no answer"
            auth.outcome = f"refused:{code}"
            self.record.count(f"authorize_refused_{code}")
            if attempts > 1:  # an earlier attempt may have placed the hold: free it
                self.release(auth)
            return
        if self.random.random() < 0.15:  # the model call was not made after all
            self.release(auth)
            return
        event = self._new_event(tenant, request_id=auth.request_id, model=model)
        usage = event.body["usage"]
        usage["input_tokens"] = min(usage["input_tokens"], estimate_in)
        usage["output_tokens"] = min(usage["output_tokens"], max_out)
        self.send_single(event)
        if event.acked:
            auth.settled_by = f"usage:{event.body['id']}"

    def release(self, auth: Authorization) -> None:
        status, body, _ = self.client.call(
            "POST", f"/api/v1/authorize/{auth.request_id}/release", auth.tenant.key
        )
        self.record.count("releases")
        if status == 204:
            auth.settled_by = "released"
        elif status == 404:  # no live hold: degraded, lost with Redis, or a retried release
            auth.settled_by = "released:404"
        else:
            self._rejected(f"release {auth.request_id}", status, body)

    def run(self) -> None:
        while not self.stop.is_set():
            roll = self.random.random()
            if roll < 0.35:
                self.send_single(self._new_event(self.random.choice(self.tenants)))
            elif roll < 0.50:
                self.send_batch()
            elif roll < 0.90:
                self.authorize_then_settle()
            else:
                old = self._duplicate()
                if old is not None:
                    self.send_single(old, duplicate=True)
