"""A local HTTP server that answers the Stripe API calls we make the way Stripe does, for the
real `stripe` library pointed at it (STRIPE_API_BASE), plus Stripe-style signed events.

It keeps what it created, honours Idempotency-Key (the same key returns the first answer), and
answers off-session charges by the test card, like Stripe's test mode:
``pm_card_visa`` pays, ``pm_card_chargeDeclined`` is declined (402 card_error card_declined),
``pm_card_authenticationRequired`` asks for authentication (402 authentication_required).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import time
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
        httpserver.expect_request(re.compile(r"^/v1/.*")).respond_with_handler(self.handle)

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
