"""Signed Stripe webhook deliveries during a chaos run.

The app talks to the project's local Stripe-compatible server (tests/payments/stripe_server.py,
through the real `stripe` library), so the top-ups are opened by the real service
(`topup_start`: a pending payment, then a Checkout Session). While the faults strike, this
thread plays Stripe: for each top-up it POSTs a signed `checkout.session.completed` to
`/webhooks/stripe`, retrying on any error or timeout (re-signed each time, as Stripe does),
sends some events twice on purpose and, for some payments, a `payment_intent.succeeded` too
(Stripe sends both; either may arrive first). Afterwards each top-up must have credited
exactly once and every acknowledged event must be processed.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import time
from collections import Counter
from typing import Any

import psycopg
from pytest_httpserver import HTTPServer

from tests.payments.stripe_server import FakeStripe, event, sign

from .load import REQUEST_TIMEOUT, RETRY_DEADLINE
from .verify import Proof

PATH = "/webhooks/stripe"
WEBHOOK_SECRET = "whsec_chaos_suite"
DUPLICATE_SHARE = 0.3  # of events, delivered a second time on purpose
INTENT_SHARE = 0.3  # of payments, also announced by payment_intent.succeeded


class StripeApi:
    """The local Stripe-compatible API server, and the settings that point the app at it."""

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.server.start()
        self.fake = FakeStripe(self.server)

    @property
    def env(self) -> dict[str, str]:
        return {
            "STRIPE_SECRET_KEY": "sk_test_chaos",
            "STRIPE_API_BASE": self.fake.base,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }

    def close(self) -> None:
        if self.server.is_running():
            self.server.stop()


def checkout_completed(topup: dict[str, Any], event_id: str) -> dict[str, Any]:
    return event(
        "checkout.session.completed",
        {
            "id": topup["session"], "object": "checkout.session", "mode": "payment",
            "client_reference_id": str(topup["payment"]),
            "metadata": {"payment_id": str(topup["payment"]), "team_id": str(topup["team"]),
                         "kind": "topup"},
            "payment_status": "paid", "payment_intent": f"pi_chaos_{topup['payment']}",
            "amount_total": topup["cents"],
        },
        event_id=event_id,
    )  # fmt: skip


def intent_succeeded(topup: dict[str, Any], event_id: str) -> dict[str, Any]:
    return event(
        "payment_intent.succeeded",
        {
            "id": f"pi_chaos_{topup['payment']}", "object": "payment_intent",
            "amount": topup["cents"], "status": "succeeded", "payment_method": "pm_card_visa",
            "latest_charge": {"id": f"ch_chaos_{topup['payment']}",
                              "receipt_url": "https://pay.stripe.test/r/chaos"},
            "metadata": {"payment_id": str(topup["payment"]), "team_id": str(topup["team"]),
                         "kind": "topup"},
        },
        event_id=event_id,
    )  # fmt: skip


class StripeDeliveries(threading.Thread):
    """Delivers the events for `topups` spread over `seconds`, each until acknowledged."""

    def __init__(self, *, port: int, topups: list[dict], seconds: float, seed: int) -> None:
        super().__init__(name="stripe", daemon=True)
        self.port = port
        self.topups = topups
        self.seconds = seconds
        self.random = random.Random(seed + 2)
        self.counts: Counter[str] = Counter()
        self.acked: set[str] = set()  # event ids Stripe would consider delivered (2xx)
        self.problems: list[str] = []

    def post(self, evt: dict[str, Any]) -> bool:
        """Deliver one event until a 2xx (Stripe retries anything else), re-signed each try."""
        body = json.dumps(evt).encode()
        deadline = time.monotonic() + RETRY_DEADLINE
        backoff = 0.1
        while time.monotonic() < deadline:
            headers = {"Content-Type": "application/json",
                       "Stripe-Signature": sign(body, WEBHOOK_SECRET)}  # fmt: skip
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            try:
                conn.request("POST", PATH, body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status, answer = 0, b""
            finally:
                conn.close()
            if 200 <= status < 300:
                self.acked.add(evt["id"])
                return True
            if 400 <= status < 500:  # a signed, well-formed event: never refused
                self.problems.append(f"{evt['id']}: HTTP {status} {answer[:200]!r}")
                return False
            self.counts["retries"] += 1
            time.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
        self.problems.append(f"{evt['id']}: never acknowledged")
        return False

    def run(self) -> None:
        plan: list[dict[str, Any]] = []
        for n, topup in enumerate(self.topups):
            plan.append(checkout_completed(topup, f"evt_chaos_cs_{topup['payment']}_{n}"))
            if self.random.random() < INTENT_SHARE:
                plan.append(intent_succeeded(topup, f"evt_chaos_pi_{topup['payment']}_{n}"))
        self.random.shuffle(plan)  # intents before sessions too: either may come first
        later: list[dict[str, Any]] = []
        gap = self.seconds * 0.9 / max(len(plan), 1)
        for evt in plan:
            self.counts["events"] += 1
            self.post(evt)
            if self.random.random() < DUPLICATE_SHARE:
                later.append(evt)
            if later and self.random.random() < 0.5:
                self.counts["duplicates"] += 1
                self.post(later.pop(0))
            time.sleep(gap)
        for evt in later:
            self.counts["duplicates"] += 1
            self.post(evt)

    def _unprocessed(self, conn: psycopg.Connection) -> list[str]:
        processed = {
            row[0]
            for row in conn.execute(
                "SELECT event_id FROM ledger_stripeevent WHERE status = 'processed'"
            ).fetchall()
        }
        return sorted(self.acked - processed)

    def wait_processed(self, conn: psycopg.Connection, *, timeout: float) -> float:
        """Wait until every acknowledged event is processed (one stored but cut off by a
        fault is handled by the beat job `stripe-events-retry` within a minute or two)."""
        began = time.monotonic()
        while self._unprocessed(conn) and time.monotonic() - began < timeout:
            time.sleep(1)
        return time.monotonic() - began

    def prove(self, proof: Proof, conn: psycopg.Connection) -> None:
        payments = [t["payment"] for t in self.topups]
        rows = conn.execute(
            """SELECT p.id, p.status, p.credits_nano,
                      count(l.id), coalesce(sum(l.amount_nano), 0)
               FROM ledger_payment p
               LEFT JOIN ledger_ledgerentry l ON l.reference = 'payment:' || p.id
               WHERE p.id = ANY(%s) GROUP BY p.id""",
            [payments],
        ).fetchall()
        credited_once = sum(
            1 for _, status, credits, n, total in rows
            if status == "succeeded" and n == 1 and total == credits
        )  # fmt: skip
        twice = sum(1 for _, _, _, n, _ in rows if n > 1)
        unprocessed = self._unprocessed(conn)
        notices = conn.execute(
            """SELECT count(*) FROM accounts_outboxevent
               WHERE type = 'topup.succeeded' AND (payload->'data'->>'payment_id')::int = ANY(%s)""",
            [payments],
        ).fetchone()[0]
        proof.row(
            "stripe webhook events sent (+ duplicates)",
            f"{self.counts['events']} (+ {self.counts['duplicates']}), "
            f"{self.counts['retries']} retries",
        )
        proof.row("  acknowledged / processed", f"{len(self.acked)} / {len(self.acked) - len(unprocessed)}",
                  bad=bool(unprocessed) or bool(self.problems),
                  why=f"stripe: unprocessed {unprocessed[:5]} {self.problems[:5]}")  # fmt: skip
        proof.row("  top-ups credited exactly once", f"{credited_once} of {len(payments)}",
                  bad=credited_once != len(payments) or twice > 0,
                  why=f"top-ups not credited exactly once: {[r for r in rows if r[3] != 1][:5]}")  # fmt: skip
        proof.row("  topup.succeeded webhook events", notices, bad=notices != len(payments))
