"""After the storm: prove from the private database and Redis (not from the API) that nothing
was lost or billed twice, that balances equal their entries, that no hold is left live and
that every webhook event reached its receiver and was processed once."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg
import redis

from .load import Record, Tenant
from .receiver import WebhookReceiver
from .stack import Stack

NANO = 10**9


def nano(credits: str | None) -> int | None:
    return None if credits is None else int(Decimal(credits) * NANO)


@dataclass
class Proof:
    rows: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def row(self, label: str, value: object, *, bad: bool = False, why: str = "") -> None:
        self.rows.append((label, str(value)))
        if bad:
            self.failures.append(why or f"{label}: {value}")

    def table(self) -> str:
        width = max(len(label) for label, _ in self.rows) + 2
        lines = [f"{'':-<{width + 40}}"]
        lines += [f"{label:<{width}}{value}" for label, value in self.rows]
        lines.append(f"{'':-<{width + 40}}")
        lines.append("RESULT: " + ("PASS" if not self.failures else "FAIL"))
        lines += [f"  - {failure}" for failure in self.failures]
        return "\n".join(lines)


def prove_billing(proof: Proof, conn: psycopg.Connection, record: Record) -> None:
    rows = conn.execute(
        """SELECT e.team_id, e.event_id, e.state, e.credits_nano,
                  count(l.id), coalesce(sum(l.amount_nano), 0)
           FROM ledger_usageevent e
           LEFT JOIN ledger_ledgerentry l ON l.usage_event_id = e.id AND l.kind = 'usage'
           GROUP BY e.id"""
    ).fetchall()
    stored = {
        (team, eid): (state, credits, n, amount) for team, eid, state, credits, n, amount in rows
    }
    twice = conn.execute(
        """SELECT count(*) FROM (SELECT usage_event_id FROM ledger_ledgerentry
           WHERE kind = 'usage' GROUP BY usage_event_id HAVING count(*) > 1) t"""
    ).fetchone()[0]
    same_id = conn.execute(
        """SELECT count(*) FROM (SELECT team_id, event_id FROM ledger_usageevent
           GROUP BY team_id, event_id HAVING count(*) > 1) t"""
    ).fetchone()[0]
    counts = record.counts
    acked = [e for e in record.events.values() if e.acked]
    lost, wrong_amount, examples = 0, 0, []
    for event in acked:
        found = stored.get((event.tenant.id, event.body["id"]))
        if found is None or found[0] != "billed" or found[2] != 1:
            lost += found is None or found[2] == 0
            examples.append(f"{event.body['id']}: stored as {found}")
            continue
        _, credits, _, amount = found
        if amount != -credits or credits != nano(event.credits):
            wrong_amount += 1
            examples.append(f"{event.body['id']}: acked {event.credits}, entry {amount}")
    billed = sum(1 for state, _, n, _ in stored.values() if state == "billed" and n == 1)
    known = {(e.tenant.id, e.body["id"]) for e in record.events.values()}
    strangers = len(set(stored) - known)
    unacked = [e for e in record.events.values() if not e.acked]
    unacked_billed = sum(1 for e in unacked if (e.tenant.id, e.body["id"]) in stored)
    sends = counts["events_sent"] + counts["duplicates_sent"]

    proof.row("events sent (unique ids)", counts["events_sent"])
    proof.row("  + deliberate duplicates sent",
              f"{counts['duplicates_sent']} ({counts['duplicates_sent'] / max(sends, 1):.1%} of sends)")  # fmt: skip
    proof.row("  batch requests (5-20 events each)", counts["batches"])
    proof.row("acknowledged by the API", len(acked), bad=len(acked) != counts["events_sent"],
              why=f"{len(unacked)} events never acknowledged (client gave up after retrying)")  # fmt: skip
    proof.row("billed (usage rows with one ledger entry)", billed)
    proof.row("lost (acknowledged, not billed)", lost, bad=lost > 0)
    proof.row("billed twice (entries / event ids)", f"{twice} / {same_id}",
              bad=twice > 0 or same_id > 0, why="double billing")  # fmt: skip
    proof.row("acknowledged amount != billed amount", wrong_amount, bad=wrong_amount > 0)
    proof.row("billed, never sent by a client", strangers, bad=strangers > 0)
    if unacked:
        proof.row("unacknowledged events that were billed", unacked_billed)
    proof.row("duplicates absorbed (replayed, billed 0)", counts["duplicates_absorbed"],
              bad=counts["duplicate_billed_as_new"] > 0, why="a duplicate was billed as new")  # fmt: skip
    proof.row("retries absorbed (first answer lost)", counts["retries_absorbed"])
    if billed != len(acked) + unacked_billed:
        proof.failures.append(f"billed {billed} != acknowledged {len(acked)} + {unacked_billed}")
    proof.failures.extend(examples[:10])


def prove_balances(proof: Proof, conn: psycopg.Connection, stack: Stack) -> None:
    rows = conn.execute(
        """SELECT b.team_id, b.balance_nano,
                  (SELECT coalesce(sum(amount_nano), 0) FROM ledger_ledgerentry l
                   WHERE l.team_id = b.team_id)
           FROM ledger_teambalance b"""
    ).fetchall()
    off = [(team, balance, total) for team, balance, total in rows if balance != total]
    proof.row("teams whose balance != sum of entries", len(off), bad=bool(off))
    result = stack.manage("reconcile")
    summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    match = re.search(r"(\d+) drift", summary)
    drifts = int(match.group(1)) if match else -1
    proof.row("drift (manage.py reconcile)", summary, bad=result.returncode != 0 or drifts != 0,
              why=f"reconcile: {result.stdout[-2000:]} {result.stderr[-2000:]}")  # fmt: skip


def prove_holds(proof: Proof, stack: Stack, record: Record, tenants: list[Tenant]) -> None:
    assert stack.redis is not None
    client = redis.Redis.from_url(stack.redis.url(0))
    now_ms = int(time.time() * 1000)
    live: list[tuple[str, str]] = []
    for tenant in tenants:
        for rid, value in client.hgetall(f"gb:gate:{{{tenant.id}}}:holds").items():
            expires_ms = int(value.decode().split("|")[1])
            if expires_ms > now_ms:
                live.append((rid.decode(), value.decode()))
    client.close()
    auths = record.authorizations.values()
    outcomes = Counter(a.outcome.split(":")[0] for a in auths)
    settled = Counter(a.settled_by.split(":")[0] or "nothing" for a in auths if a.outcome in ("allowed", "degraded"))  # fmt: skip
    proof.row("authorize calls (allowed / degraded / refused)",
              f"{len(record.authorizations)} ({outcomes['allowed']} / {outcomes['degraded']} / {outcomes['refused']})")  # fmt: skip
    proof.row("  then settled by usage / released / neither",
              f"{settled['usage']} / {settled['released']} / {settled['nothing']}")  # fmt: skip
    detail = []
    for rid, value in live[:10]:
        auth = record.authorizations.get(rid)
        why = (auth.settled_by if auth else "unknown request id") or "never settled it"
        if auth and why.startswith("usage:"):
            event = record.events[(auth.tenant.id, why.removeprefix("usage:"))]
            if event.first_status == 200:
                why += (" - acknowledged only as a replay: the attempt that billed it lost its "
                        "worker after the commit, before the gate settled the hold, and a "
                        "replay does not settle")  # fmt: skip
        detail.append(f"live hold {rid} ({value}): client {why}")
    proof.row("live holds left in Redis", len(live), bad=bool(live),
              why="; ".join(detail) or "live holds")  # fmt: skip


def _outbox(conn: psycopg.Connection) -> list[tuple[str, str, bool]]:
    return conn.execute(
        """SELECT o.event_id, t.slug, o.dispatched_at IS NOT NULL
           FROM accounts_outboxevent o JOIN accounts_team t ON t.id = o.team_id"""
    ).fetchall()


def _in_flight(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT count(*) FROM accounts_webhookdelivery WHERE state IN ('sending', 'scheduled')"
    ).fetchone()[0]


def wait_for_webhooks(
    conn: psycopg.Connection, receiver: WebhookReceiver, *, timeout: float, redelivery: bool
) -> float:
    """Wait until the receiver has processed every outbox event (the beat job rescues the
    ones a fault stranded within a minute) and, with `redelivery`, until no attempt is left
    `sending` or `scheduled` (an attempt whose worker was killed is reclaimed after 5 minutes
    and sent again). Returns the seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        events = _outbox(conn)
        if all(event_id in receiver.processed for event_id, _, _ in events) and (
            not redelivery or _in_flight(conn) == 0
        ):
            break
        time.sleep(1)
    return time.monotonic() - began


def prove_webhooks(
    proof: Proof, conn: psycopg.Connection, receiver: WebhookReceiver, *, redelivery: bool
) -> None:
    events = _outbox(conn)
    ids = {event_id for event_id, _, _ in events}
    missing = sorted(ids - set(receiver.processed))
    undispatched = sum(1 for _, _, dispatched in events if not dispatched)
    redelivered = sum(n - 1 for n in receiver.received.values())
    states = dict(
        conn.execute(
            "SELECT state, count(*) FROM accounts_webhookdelivery GROUP BY state"
        ).fetchall()
    )
    types = Counter(event["type"] for event in receiver.processed.values())
    proof.row("webhook events (outbox)", f"{len(events)} ({', '.join(f'{t} {n}' for t, n in sorted(types.items()))})")  # fmt: skip
    proof.row("  delivered at least once", len(ids) - len(missing), bad=bool(missing),
              why=f"{len(missing)} webhook events never reached the receiver: {missing[:5]} "
                  f"({undispatched} never dispatched)")  # fmt: skip
    proof.row("  processed once (de-duplicated on Webhook-Id)", len(receiver.processed))
    proof.row("  redeliveries absorbed by the receiver", redelivered)
    proof.row("  bad signatures / unknown ids",
              f"{receiver.bad_signatures} / {len(set(receiver.processed) - ids)}",
              bad=receiver.bad_signatures > 0 or bool(set(receiver.processed) - ids))  # fmt: skip
    proof.row("  delivery rows by state", ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
    in_flight = states.get("sending", 0) + states.get("scheduled", 0)
    if redelivery:
        proof.row("  attempts left in flight after the wait", in_flight, bad=in_flight > 0,
                  why=f"{in_flight} delivery attempts still sending/scheduled")  # fmt: skip
    elif in_flight:
        proof.row("  attempts cut by a kill (re-sent after 5 min)", in_flight)


def prove_processes(proof: Proof, stack: Stack, workers: int) -> None:
    down = [name for name, service in stack.services.items() if not service.running()]
    serving = len(stack.gunicorn_workers())
    proof.row("processes up at the end", f"{', '.join(stack.services)}; {serving} gunicorn workers",
              bad=bool(down) or serving != workers,
              why=f"not running at the end: {down}, gunicorn workers {serving}/{workers}")  # fmt: skip
