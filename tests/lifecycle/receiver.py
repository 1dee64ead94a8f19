"""The receiver-side verification snippet from the README, verbatim: the tests use exactly
what a customer would copy."""

import hashlib
import hmac
import time

TOLERANCE_SECONDS = 300  # reject requests signed more than 5 minutes ago (replays)


def verify_webhook(secret: str, headers, body: bytes, now: float | None = None) -> bool:
    """True when the request was signed with `secret` within the last 5 minutes.
    `headers`: the request headers (a mapping); `body`: the raw request body, as bytes."""
    event_id = headers.get("Webhook-Id", "")
    timestamp = headers.get("Webhook-Timestamp", "")
    signature = headers.get("Webhook-Signature", "")
    if not (event_id and timestamp.isdigit() and signature.startswith("v1=")):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    signed = f"{event_id}.{timestamp}.".encode() + body
    expected = "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)
