"""API key and invitation token material: generation and hashing (no I/O)."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "gbk_"


def hash_secret(raw: str) -> str:
    # Keys carry 190+ bits of randomness, so a fast hash is safe and keeps the lookup cheap.
    return hashlib.sha256(raw.encode()).hexdigest()


def new_api_key() -> tuple[str, str, str]:
    """Return (full key shown once, visible prefix, hash stored)."""
    prefix = KEY_PREFIX + secrets.token_hex(4)
    raw = f"{prefix}_{secrets.token_urlsafe(32)}"
    return raw, prefix, hash_secret(raw)


def new_token() -> tuple[str, str]:
    raw = secrets.token_urlsafe(32)
    return raw, hash_secret(raw)
