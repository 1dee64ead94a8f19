"""Tokens-per-minute limits: per plan x model, and per-team overrides for enterprise customers.

A limit is scoped to the whole team (every project and key of a team counts together). The
catalog (``manage.py loadcatalog``) creates the plan limits; admins edit them afterwards.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class TpmLimit(models.Model):
    plan = models.ForeignKey("accounts.Plan", on_delete=models.CASCADE, related_name="tpm_limits")
    model = models.ForeignKey("pricing.Model", on_delete=models.CASCADE, related_name="tpm_limits")
    tokens_per_minute = models.PositiveIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["plan__sort_order", "model__provider__slug", "model__name"]
        verbose_name = "TPM limit"
        constraints = [
            models.UniqueConstraint(fields=["plan", "model"], name="tpmlimit_unique_plan_model")
        ]

    def __str__(self) -> str:
        return f"{self.plan.code} / {self.model.name}: {self.tokens_per_minute} TPM"


class TeamTpmOverride(models.Model):
    """An enterprise team's own limit for one model; wins over its plan's limit."""

    team = models.ForeignKey(
        "accounts.Team", on_delete=models.CASCADE, related_name="tpm_overrides"
    )
    model = models.ForeignKey(
        "pricing.Model", on_delete=models.CASCADE, related_name="tpm_overrides"
    )
    tokens_per_minute = models.PositiveIntegerField()
    note = models.CharField(max_length=200, blank=True, help_text="Why: contract, ticket ...")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team__slug", "model__name"]
        verbose_name = "team TPM override"
        constraints = [
            models.UniqueConstraint(
                fields=["team", "model"], name="teamtpmoverride_unique_team_model"
            )
        ]

    def __str__(self) -> str:
        return f"{self.team.slug} / {self.model.name}: {self.tokens_per_minute} TPM"
