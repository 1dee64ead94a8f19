"""A local HTTP server that answers the Stripe API calls we make the way Stripe does, for the
real `stripe` library pointed at it (STRIPE_API_BASE), plus Stripe-style signed events.

It keeps what it created, honours Idempotency-Key (the same key returns the first answer), and
answers off-session charges by the test card, like Stripe's test mode:
``pm_card_visa`` pays, ``pm_card_chargeDeclined`` is declined (402 card_error card_declined),
``pm_card_authenticationRequired`` asks for authentication (402 authentication_required).

Hosted Checkout, for browser tests: once a test names the app's webhook endpoint
(``webhook_url``, with ``webhook_secret``), a Checkout session's ``url`` is a page of this server
(``/checkout/<session id>``) showing the amount and a "Pay" button. Pressing Pay does what Stripe
does when a customer pays with the test card ``pm_card_visa``: it completes the session, posts the
signed events to the app, then sends the browser to the session's ``success_url``. The app calls
this server back while it handles those events (the card's details), so a server serving the
page must be threaded. Without ``webhook_url`` sessions keep Stripe-like URLs nobody serves.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import html
import itertools
import json
import re
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from werkzeug import Request, Response

CARDS = {
    "pm_card_visa": ("visa", "4242", None),
    "pm_card_chargeDeclined": ("visa", "0002", "card_declined"),
    "pm_card_authenticationRequired": ("visa", "3184", "authentication_required"),
}


def _nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0][c]=v`) back into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(root)


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        if node and all(k.isdigit() for k in node):
            return [_lists(node[k]) for k in sorted(node, key=int)]
        return {k: _lists(v) for k, v in node.items()}
    return node


class FakeStripe:
    def __init__(self, httpserver) -> None:
        self.server = httpserver
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.objects: dict[str, dict[str, Any]] = {}
        self.idempotent: dict[str, tuple[int, dict]] = {}
        self.calls: list[tuple[str, str, dict[str, Any], str | None]] = []
        self.fail_next: int | None = None  # answer the next call with this HTTP status
        # Hosted Checkout (see the module's docstring): on once webhook_url is set.
        self.webhook_url: str | None = None
        self.webhook_secret = ""
        self.deliveries: list[tuple[str, int]] = []  # (event type, the app's HTTP status)
        httpserver.expect_request(re.compile(r"^/v1/.*")).respond_with_handler(self.handle)
        httpserver.expect_request(re.compile(r"^/checkout/[^/]+$")).respond_with_handler(
            self.hosted_checkout
        )

    @property
    def base(self) -> str:
        return self.server.url_for("").rstrip("/")

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_test_{next(self.ids):06d}"

    def calls_to(self, method: str, path_prefix: str) -> list[dict[str, Any]]:
        return [p for m, path, p, _ in self.calls if m == method and path.startswith(path_prefix)]

    # ---- the HTTP side -------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        params = _nest(parse_qsl(request.get_data(as_text=True), keep_blank_values=True))
        key = request.headers.get("Idempotency-Key")
        with self.lock:
            self.calls.append((request.method, request.path, params, key))
            if self.fail_next is not None:
                status, self.fail_next = self.fail_next, None
                return self._json(
                    {"error": {"type": "api_error", "message": "Stripe is having a bad day"}},
                    status,
                )
            if key and request.method == "POST" and key in self.idempotent:
                status, body = self.idempotent[key]
                return self._json(body, status, replayed=True)
            status, body = self.route(request.method, request.path, params)
            if key and request.method == "POST":
                self.idempotent[key] = (status, body)
        return self._json(body, status)

    @staticmethod
    def _json(body: dict, status: int, replayed: bool = False) -> Response:
        headers = {"Request-Id": f"req_{int(time.time() * 1000)}"}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(
            json.dumps(body), status=status, headers=headers, content_type="application/json"
        )

    def route(self, method: str, path: str, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")[1:]  # drop "v1"
        if parts == ["customers"] and method == "POST":
            return self.store("cus", {"object": "customer", "name": p.get("name"),
                                      "email": p.get("email"), "metadata": p.get("metadata", {})})  # fmt: skip
        if parts == ["checkout", "sessions"] and method == "POST":
            return self.checkout_create(p)
        if parts == ["payment_intents"] and method == "POST":
            return self.intent_create(p)
        if len(parts) == 3 and parts[0] == "payment_intents" and parts[2] == "confirm":
            intent = self.objects[parts[1]]
            intent.update(status="requires_action", next_action={
                "type": "redirect_to_url",
                "redirect_to_url": {"url": f"https://hooks.stripe.test/3ds/{parts[1]}",
                                    "return_url": p.get("return_url")}})  # fmt: skip
            return 200, intent
        if len(parts) == 2 and parts[0] == "payment_methods":
            brand, last4, _ = CARDS.get(parts[1], ("visa", "4242", None))
            return 200, {"id": parts[1], "object": "payment_method", "type": "card",
                         "card": {"brand": brand, "last4": last4}}  # fmt: skip
        if parts == ["refunds"] and method == "POST":
            return self.store("re", {"object": "refund", "amount": int(p["amount"]),
                                     "payment_intent": p["payment_intent"], "status": "succeeded"})  # fmt: skip
        if len(parts) == 2 and parts[0] == "subscriptions":
            return self.subscription(method, parts[1], p)
        return 404, {"error": {"type": "invalid_request_error", "message": f"No route {path}"}}

    def store(self, prefix: str, obj: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        obj = {"id": self.new_id(prefix), "livemode": False, "created": int(time.time()), **obj}
        self.objects[obj["id"]] = obj
        return 200, obj

    def checkout_create(self, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        item = p["line_items"][0]
        amount = int(item["price_data"]["unit_amount"]) * int(item.get("quantity", 1))
        status, session = self.store("cs", {
            "object": "checkout.session", "mode": p["mode"], "customer": p.get("customer"),
            "client_reference_id": p.get("client_reference_id"), "metadata": p.get("metadata", {}),
            "amount_total": amount, "currency": "usd", "payment_status": "unpaid",
            "status": "open", "payment_intent": None, "subscription": None,
            "success_url": p["success_url"], "cancel_url": p["cancel_url"],
            "line_items_sent": p["line_items"],
            "payment_intent_data": p.get("payment_intent_data", {}),
            "subscription_data": p.get("subscription_data", {}),
        })  # fmt: skip
        if self.webhook_url:
            session["url"] = f"{self.base}/checkout/{session['id']}"
        else:
            session["url"] = f"https://checkout.stripe.test/c/pay/{session['id']}"
        return status, session

    def intent_create(self, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        method = p.get("payment_method", "")
        *_, decline = CARDS.get(method, ("visa", "4242", "card_declined"))
        status, intent = self.store("pi", {
            "object": "payment_intent", "amount": int(p["amount"]), "currency": p["currency"],
            "customer": p.get("customer"), "payment_method": method,
            "metadata": p.get("metadata", {}), "off_session": p.get("off_session") == "true",
            "status": "succeeded", "latest_charge": None,
        })  # fmt: skip
        if decline is None:
            charge = self.new_id("ch")
            intent["latest_charge"] = charge
            return status, intent
        if decline == "authentication_required":
            intent.update(status="requires_action")
        else:
            intent.update(status="requires_payment_method")
        error = {
            "type": "card_error", "code": decline,
            "decline_code": "generic_decline" if decline == "card_declined" else decline,
            "message": "Your card was declined." if decline == "card_declined"
            else "This payment requires authentication.",
            "payment_intent": intent,
        }  # fmt: skip
        intent["last_payment_error"] = {k: v for k, v in error.items() if k != "payment_intent"}
        return 402, {"error": error}

    def subscription(self, method: str, sub_id: str, p: dict[str, Any]) -> tuple[int, dict]:
        sub = self.objects.setdefault(sub_id, {
            "id": sub_id, "object": "subscription", "status": "active",
            "cancel_at_period_end": False,
            "items": {"object": "list", "data": [{"id": f"si_{sub_id}", "quantity": 1}]},
        })  # fmt: skip
        if method == "DELETE":
            sub["status"] = "canceled"
        elif method == "POST":
            if "cancel_at_period_end" in p:
                sub["cancel_at_period_end"] = p["cancel_at_period_end"] == "true"
            for item in p.get("items", []):
                sub["items"]["data"][0]["quantity"] = int(item["quantity"])
        return 200, sub

    # ---- hosted Checkout -------------------------------------------------------------------------

    def hosted_checkout(self, request: Request) -> Response:
        """GET: the payment page. POST (its "Pay" button): pay with pm_card_visa, post the
        events to the app, and redirect to the success URL, as Stripe does."""
        session_id = request.path.rsplit("/", 1)[1]
        with self.lock:
            session = self.objects.get(session_id)
            if session is None or session.get("object") != "checkout.session":
                return Response("No such Checkout Session.", status=404)
            if request.method != "POST" or session["status"] != "open":
                return Response(_checkout_page(session), content_type="text/html; charset=utf-8")
            if session["mode"] == "subscription":
                events = self._pay_subscription(session)
            else:
                events = self._pay_payment(session)
        for evt in events:  # outside the lock: the app calls the API back meanwhile
            self.deliver(evt)
        success = session["success_url"].replace("{CHECKOUT_SESSION_ID}", session["id"])
        return Response(status=303, headers={"Location": success})

    def _pay_payment(self, session: dict[str, Any]) -> list[dict[str, Any]]:
        data = session["payment_intent_data"]
        _, intent = self.store("pi", {
            "object": "payment_intent", "amount": session["amount_total"],
            "amount_received": session["amount_total"], "currency": session["currency"],
            "customer": session["customer"], "payment_method": "pm_card_visa",
            "setup_future_usage": data.get("setup_future_usage"),
            "metadata": data.get("metadata", session["metadata"]),
            "status": "succeeded", "latest_charge": self.new_id("ch"),
        })  # fmt: skip
        session.update(status="complete", payment_status="paid", payment_intent=intent["id"])
        return [
            event("checkout.session.completed", _session_object(session)),
            event("payment_intent.succeeded", dict(intent)),
        ]

    def _pay_subscription(self, session: dict[str, Any]) -> list[dict[str, Any]]:
        metadata = session["subscription_data"].get("metadata", {})
        quantity = int(session["line_items_sent"][0].get("quantity", 1))
        start = int(time.time())
        end = _month_later(start)
        subscription_id = self.new_id("sub")
        self.objects[subscription_id] = {
            "id": subscription_id, "object": "subscription", "status": "active",
            "customer": session["customer"], "metadata": metadata, "cancel_at_period_end": False,
            "current_period_start": start, "current_period_end": end,
            "items": {"object": "list",
                      "data": [{"id": f"si_{subscription_id}", "quantity": quantity}]},
        }  # fmt: skip
        details = {"subscription": subscription_id, "metadata": metadata}
        _, invoice = self.store("in", {
            "object": "invoice", "billing_reason": "subscription_create", "status": "paid",
            "customer": session["customer"], "currency": session["currency"],
            "amount_due": session["amount_total"], "amount_paid": session["amount_total"],
            "period_start": start, "period_end": end,
            "parent": {"type": "subscription_details", "subscription_details": details},
            "lines": {"object": "list", "data": [{
                "id": self.new_id("il"), "object": "line_item",
                "amount": session["amount_total"], "currency": session["currency"],
                "period": {"start": start, "end": end}, "quantity": quantity,
                "parent": {"type": "subscription_item_details", "subscription_item_details": {
                    "subscription": subscription_id, "subscription_item": f"si_{subscription_id}",
                    "proration": False}},
            }]},
        })  # fmt: skip
        session.update(
            status="complete",
            payment_status="paid",
            subscription=subscription_id,
            invoice=invoice["id"],
        )
        return [
            event("checkout.session.completed", _session_object(session)),
            event("invoice.paid", dict(invoice)),
        ]

    def deliver(self, evt: dict[str, Any]) -> int:
        """POST one signed event to the app's webhook endpoint; returns the answer's status."""
        if not self.webhook_url:
            raise RuntimeError("set webhook_url (and webhook_secret) to deliver events")
        body = json.dumps(evt).encode()
        request = urllib.request.Request(  # noqa: S310 - the test's own live server
            self.webhook_url,
            data=body,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign(body, self.webhook_secret),
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        self.deliveries.append((evt["type"], status))
        return status


# What we keep on a session that Stripe's session object does not have.
_SESSION_EXTRAS = ("line_items_sent", "payment_intent_data", "subscription_data")


def _session_object(session: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in session.items() if k not in _SESSION_EXTRAS}


def _month_later(timestamp: int) -> int:
    """The same moment a calendar month later (the 31st: the month's last day), as Stripe
    bills monthly."""
    start = datetime.fromtimestamp(timestamp, tz=UTC)
    year, month = start.year + start.month // 12, start.month % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


def _checkout_page(session: dict[str, Any]) -> str:
    item = session["line_items_sent"][0]
    name = html.escape(item["price_data"]["product_data"]["name"])
    amount = f"${Decimal(session['amount_total']) / 100:.2f}"
    per = " per month" if session["mode"] == "subscription" else ""
    if session["status"] == "open":
        action = (
            "<p>Card: Visa ending 4242 (test card <code>pm_card_visa</code>)</p>"
            f'<form method="post"><button type="submit">Pay</button></form>'
            f'<p><a href="{html.escape(session["cancel_url"])}">Back</a></p>'
        )
    else:
        action = "<p>This Checkout Session is complete.</p>"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,"><title>Checkout (Stripe test mode)</title></head>'
        "<body><main>"
        "<h1>Checkout <small>test mode</small></h1>"
        f'<p>{name}</p><p>Amount: <strong id="amount">{amount}</strong>{per}</p>'
        f"{action}</main></body></html>"
    )


# ---- signed events ------------------------------------------------------------------------------


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


_event_ids = itertools.count(1)


def event(type: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_test_{next(_event_ids):06d}_{int(time.time() * 1000)}",
        "object": "event",
        "api_version": "2025-09-30.clover",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": type,
        "data": {"object": obj},
    }
