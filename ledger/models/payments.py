"""Money in: payment customers, payments (top-ups, auto recharges, subscription invoices), the
Stripe events we received, and each team's auto-recharge settings.

Payments are mutable records of what a provider told us; the credits they buy are ledger
entries (append-only) whose reference names the payment, so a payment credits at most once.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Provider(models.TextChoices):
    STRIPE = "stripe", "Stripe"
    FAKE = "fake", "Test mode (fake provider)"


class PaymentCustomer(models.Model):
    """The team's customer at the payment provider and its saved card (for off-session use)."""

    team = models.OneToOneField("accounts.Team", on_delete=models.CASCADE, related_name="+")
    provider = models.CharField(max_length=8, choices=Provider.choices)
    customer_id = models.CharField(max_length=100)
    payment_method_id = models.CharField(max_length=100, blank=True)
    card_brand = models.CharField(max_length=20, blank=True)
    card_last4 = models.CharField(max_length=4, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "customer_id"], name="paymentcustomer_unique_id"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.customer_id}"


class PaymentKind(models.TextChoices):
    TOPUP = "topup", "Top-up"
    AUTO_RECHARGE = "auto_recharge", "Auto recharge"
    SUBSCRIPTION = "subscription", "Subscription"


class PaymentStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # checkout open, or charge sent and not yet answered
    PROCESSING = "processing", "Processing"  # a delayed method: paid later or failed
    REQUIRES_ACTION = "requires_action", "Needs authentication"
    SUCCEEDED = "succeeded", "Paid"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"
    REFUNDED = "refunded", "Refunded"
    PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"


# An auto recharge in one of these states is "in flight": at most one per team.
IN_FLIGHT = (PaymentStatus.PENDING, PaymentStatus.PROCESSING, PaymentStatus.REQUIRES_ACTION)


class Payment(models.Model):
    team = models.ForeignKey("accounts.Team", on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=PaymentKind.choices)
    provider = models.CharField(max_length=8, choices=Provider.choices)
    status = models.CharField(
        max_length=20, choices=PaymentStatus.choices, default=PaymentStatus.PENDING
    )
    amount_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3, default="usd")
    credits_nano = models.BigIntegerField(help_text="What the payment buys (0: a plan invoice)")
    refunded_cents = models.PositiveIntegerField(default=0)
    description = models.CharField(max_length=200, blank=True)
    checkout_session_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    payment_intent_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    charge_id = models.CharField(max_length=100, blank=True)
    invoice_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    checkout_url = models.URLField(max_length=1000, blank=True)
    receipt_url = models.URLField(max_length=1000, blank=True)
    # Auto recharge: one payment per (team, trigger); the provider's idempotency key too.
    idempotency_key = models.CharField(max_length=120, null=True, blank=True, unique=True)
    failure_code = models.CharField(max_length=60, blank=True)
    failure_message = models.CharField(max_length=500, blank=True)
    raw = models.JSONField(default=dict, blank=True, help_text="The provider's latest objects")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["team", "-created_at"], name="payment_team_time_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["team"],
                condition=models.Q(kind="auto_recharge", status__in=list(IN_FLIGHT)),
                name="payment_one_recharge_in_flight",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.pk} ({self.status})"

    @property
    def is_test_mode(self) -> bool:
        return self.provider == Provider.FAKE


class StripeEventStatus(models.TextChoices):
    RECEIVED = "received", "Received"
    PROCESSED = "processed", "Processed"
    IGNORED = "ignored", "Ignored (no handler)"
    FAILED = "failed", "Failed (will be retried)"


class StripeEvent(models.Model):
    """Every verified event, stored before it is handled; handled once per event id."""

    event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100)
    livemode = models.BooleanField(default=False)
    payload = models.JSONField()
    status = models.CharField(
        max_length=12, choices=StripeEventStatus.choices, default=StripeEventStatus.RECEIVED
    )
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["received_at"],
                name="stripeevent_unprocessed_idx",
                condition=models.Q(status__in=["received", "failed"]),
            )
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id} ({self.status})"


class AutoRecharge(models.Model):
    """A team's auto-recharge settings and its failure/back-off state."""

    team = models.OneToOneField("accounts.Team", on_delete=models.CASCADE, related_name="+")
    enabled = models.BooleanField(default=False)
    threshold_nano = models.BigIntegerField(default=0)
    # Empty: the plan's auto-recharge pack; otherwise this amount in USD cents.
    amount_cents = models.PositiveIntegerField(null=True, blank=True)
    monthly_cap = models.PositiveSmallIntegerField(
        default=10, help_text="At most this many recharges per calendar month"
    )
    consecutive_failures = models.PositiveSmallIntegerField(default=0)
    retry_after = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"auto recharge of team {self.team_id} ({'on' if self.enabled else 'off'})"
