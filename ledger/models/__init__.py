"""Money: usage events, credit lots, the append-only ledger and each team's running balance.

Amounts are integer nano-credits (``*_nano``; 1 credit = 10**9). ``LedgerEntry`` rows are
append-only (database triggers); ``CreditLot.remaining_nano`` and ``TeamBalance`` are running
state that every entry moves under the team's balance-row lock, and that reconciliation
recomputes from the entries.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class UsageState(models.TextChoices):
    BILLED = "billed", "Billed"
    NOT_BILLED = "not_billed", "Not billed (upstream error)"
    UNRATED = "unrated", "Unrated (no price yet)"


class UsageEvent(models.Model):
    # Every read is by team first (the unique and time indexes lead with it), so the other
    # foreign keys carry no index of their own: fewer indexes to maintain on the hot insert.
    # Only `team` is checked by the database: project, key, member, model and price rows are
    # never deleted (PROTECT; keys and prices are revoked or superseded), and each checked
    # foreign key costs an index probe per event inside the ingest transaction.
    team = models.ForeignKey(
        "accounts.Team", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    project = models.ForeignKey(
        "accounts.Project",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    member = models.ForeignKey(
        "accounts.Membership",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    event_id = models.CharField(max_length=128)
    request_id = models.CharField(max_length=128, blank=True)
    body_hash = models.CharField(max_length=32)
    provider = models.CharField(max_length=32)
    model = models.ForeignKey(
        "pricing.Model",
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField(default=200)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    images = models.DecimalField(max_digits=20, decimal_places=6, default=0)
    megapixels = models.DecimalField(max_digits=20, decimal_places=6, default=0)
    video_seconds = models.DecimalField(max_digits=20, decimal_places=6, default=0)
    videos = models.DecimalField(max_digits=20, decimal_places=6, default=0)
    requests = models.DecimalField(max_digits=20, decimal_places=6, default=0)
    gpu_seconds = models.DecimalField(max_digits=20, decimal_places=6, default=0)
    gpu_type = models.CharField(max_length=32, blank=True)
    usage_format = models.CharField(max_length=24, default="canonical")
    raw_usage = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=12, choices=UsageState.choices)
    unrated_reason = models.CharField(max_length=200, blank=True)
    price = models.ForeignKey(
        "pricing.Price",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    cost_usd = models.DecimalField(max_digits=30, decimal_places=15, null=True, blank=True)
    credits_nano = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "event_id"], name="usage_unique_team_event")
        ]
        indexes = [
            models.Index(fields=["team", "occurred_at"], name="usage_team_time_idx"),
            models.Index(
                fields=["state"],
                name="usage_unrated_idx",
                condition=models.Q(state="unrated"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} ({self.state})"


class LotSource(models.TextChoices):
    PLAN = "plan", "Monthly plan credits"
    ADDON = "addon", "Add-on purchase"
    AUTO_RECHARGE = "auto_recharge", "Auto recharge"
    PROMO = "promo", "Promotional grant"
    ADJUSTMENT = "adjustment", "Adjustment"


# Which balance bucket each lot source reports under.
BUCKET_OF_SOURCE = {
    LotSource.PLAN: "monthly",
    LotSource.ADDON: "addon",
    LotSource.AUTO_RECHARGE: "addon",
    LotSource.ADJUSTMENT: "addon",
    LotSource.PROMO: "promotional",
}


class CreditLot(models.Model):
    """Credits that came in together. Spent by earliest expiry, then priority, then age."""

    team = models.ForeignKey("accounts.Team", on_delete=models.PROTECT, related_name="+")
    source = models.CharField(max_length=16, choices=LotSource.choices)
    amount_nano = models.BigIntegerField()
    remaining_nano = models.BigIntegerField()
    priority = models.SmallIntegerField(default=100, help_text="Lower is spent first")
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    reference = models.CharField(max_length=200, unique=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(remaining_nano__gte=0), name="lot_remaining_not_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(remaining_nano__lte=models.F("amount_nano")),
                name="lot_remaining_within_amount",
            ),
        ]
        indexes = [
            models.Index(
                fields=["team"], name="lot_live_idx", condition=models.Q(remaining_nano__gt=0)
            )
        ]

    def __str__(self) -> str:
        return f"{self.source} lot {self.pk} of team {self.team_id}"


class TeamBalance(models.Model):
    """The running balance; its row is the team's lock for every ledger write."""

    team = models.OneToOneField(
        "accounts.Team", on_delete=models.PROTECT, primary_key=True, related_name="+"
    )
    balance_nano = models.BigIntegerField(default=0)
    overdraft_nano = models.BigIntegerField(default=0, help_text="Spent beyond every lot")
    # +1 on every write: lets caches of the balance (the gate) keep only the newest value.
    version = models.BigIntegerField(default=0)
    # The team's "balance low" alert fires when a debit takes the balance below this.
    low_threshold_nano = models.BigIntegerField(null=True, blank=True)
    # Whether the team has budgets: the ingest path skips them without a query when it has none.
    has_budgets = models.BooleanField(default=False)
    # Auto recharge is on: a debit that takes the balance below this starts a recharge.
    recharge_threshold_nano = models.BigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"balance of team {self.team_id}"


class EntryKind(models.TextChoices):
    PLAN_GRANT = "plan_grant", "Plan grant"
    PLAN_EXPIRY = "plan_expiry", "Plan expiry"
    TOPUP = "topup", "Top-up"
    AUTO_RECHARGE = "auto_recharge", "Auto recharge"
    PROMO_GRANT = "promo_grant", "Promotional grant"
    PROMO_EXPIRY = "promo_expiry", "Promotional expiry"
    USAGE = "usage", "Usage"
    ADJUSTMENT = "adjustment", "Adjustment"
    REFUND = "refund", "Refund"
    REVERSAL = "reversal", "Reversal"


class LedgerEntry(models.Model):
    """One movement of credits. Append-only: UPDATE and DELETE fail at the database."""

    team = models.ForeignKey(  # indexed by (team, id) below
        "accounts.Team", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    amount_nano = models.BigIntegerField(help_text="Signed: credits in > 0, credits out < 0")
    balance_after_nano = models.BigIntegerField()
    # [{"lot": id, "nano": signed amount}, {"overdraft": signed amount}]: what the entry moved.
    allocations = models.JSONField(default=list)
    # The balance split right after this entry: {"monthly", "addon", "promotional", "overdraft"}.
    buckets_after = models.JSONField(default=dict)
    reference = models.CharField(max_length=200, unique=True)
    usage_event = models.ForeignKey(
        UsageEvent, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    price = models.ForeignKey(
        "pricing.Price",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    credits_per_usd = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # sha256 of this entry's fields and the previous entry's chain_hash (same team, id order):
    # filled in by the chain_ledger beat job, never on the hot path; the only UPDATE the
    # database allows on this table is setting it once (ledger/hashchain.py). NULL, not "":
    # the trigger lets it change only from NULL.
    chain_hash = models.CharField(max_length=64, null=True, blank=True, editable=False)  # noqa: DJ001

    class Meta:
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["team", "id"], name="entry_team_id_idx")]
        permissions = [("adjust_ledger", "Can write adjustments and refunds")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_nano} ({self.reference})"


class BudgetScope(models.TextChoices):
    TEAM = "team", "Team"
    PROJECT = "project", "Project"
    MEMBER = "member", "Member"
    KEY = "key", "API key"


class BudgetPeriod(models.TextChoices):
    CYCLE = "cycle", "Billing cycle"
    MONTH = "month", "Calendar month"
    DAY = "day", "Day"


class Budget(models.Model):
    """A spending limit on a scope of the team, per period, with soft alert thresholds and an
    optional hard cap (the authorize endpoint refuses a capped scope that is spent)."""

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=120)
    scope = models.CharField(max_length=8, choices=BudgetScope.choices)
    project = models.ForeignKey(
        "accounts.Project", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    member = models.ForeignKey(
        "accounts.Membership", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    period = models.CharField(max_length=8, choices=BudgetPeriod.choices)
    limit_nano = models.BigIntegerField()
    thresholds = models.JSONField(default=list, blank=True, help_text="Percentages, e.g. [50, 80]")
    hard_cap = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["team"], name="budget_team_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.scope}, {self.period})"


class BudgetSpend(models.Model):
    """Credits spent in one period of one budget; moved by every usage event, under the team's
    lock, in the transaction that bills it."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="spends")
    period_start = models.DateTimeField()
    spent_nano = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_start"], name="budgetspend_unique_period"
            )
        ]

    def __str__(self) -> str:
        return f"budget {self.budget_id} from {self.period_start:%Y-%m-%d}: {self.spent_nano}"


from .chain import LedgerChainHead  # noqa: E402
from .payments import (  # noqa: E402
    IN_FLIGHT,
    AutoRecharge,
    Payment,
    PaymentCustomer,
    PaymentKind,
    PaymentStatus,
    Provider,
    StripeEvent,
    StripeEventStatus,
)

__all__ = [
    "IN_FLIGHT",
    "AutoRecharge",
    "LedgerChainHead",
    "Payment",
    "PaymentCustomer",
    "PaymentKind",
    "PaymentStatus",
    "Provider",
    "StripeEvent",
    "StripeEventStatus",
]
