"""The head of each team's ledger hash chain: where the chain_ledger job got to.

Derived state (the chain itself is in LedgerEntry.chain_hash). The job reads it to skip teams
with no new entries (their balance row's version has not moved) and verify_ledger compares it
with the recomputed chain, so entries removed from the end of a chain are noticed too.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class LedgerChainHead(models.Model):
    team = models.OneToOneField(
        "accounts.Team", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    entry_id = models.BigIntegerField(help_text="The last hashed entry of the team")
    chain_hash = models.CharField(max_length=64)
    balance_version = models.BigIntegerField(
        default=0, help_text="The team's balance version the chain was extended at"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"chain head of team {self.team_id}: entry {self.entry_id}"
