"""The ledger's hash chain: each entry's `chain_hash` is sha256 over the previous entry's hash
(same team, id order; GENESIS for a team's first entry) and a canonical serialization of the
entry's immutable fields. Changing, inserting or removing an entry anywhere in a team's chain
changes every hash after it; `manage.py verify_ledger` recomputes them.

Pure functions: ledger/services/chain.py fills the hashes in, ledger/selectors_chain.py checks.

The serialization (version 1): the fields below as one JSON object with sorted keys and no
spaces; the timestamp as ISO 8601 in UTC with microseconds, the decimal as its string with the
column's 4 places, JSON fields with sorted keys, NULL as null. Then
`chain_hash = sha256(previous_hash_hex + "\\n" + serialization)` in lowercase hex.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

GENESIS = "0" * 64
VERSION = 1

# Every column of LedgerEntry but chain_hash itself (tests/ledger/test_hashchain.py fails when
# a column is added without a decision here).
HASHED_FIELDS = (
    "id",
    "team_id",
    "kind",
    "amount_nano",
    "balance_after_nano",
    "allocations",
    "buckets_after",
    "reference",
    "usage_event_id",
    "price_id",
    "credits_per_usd",
    "author_id",
    "reason",
    "created_at",
)
NOT_HASHED = ("chain_hash",)


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, Decimal):
        return f"{value:.4f}"
    return value


def canonical(row: dict[str, Any]) -> bytes:
    """The entry's immutable fields, serialized the same way on every backend and machine."""
    doc = {name: _value(row[name]) for name in HASHED_FIELDS}
    doc["v"] = VERSION
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def link(previous: str, row: dict[str, Any]) -> str:
    """The chain hash of `row` after an entry whose hash is `previous`."""
    return hashlib.sha256(previous.encode() + b"\n" + canonical(row)).hexdigest()
