"""Tenancy: teams, their members, projects, API keys, plans and subscriptions; outbound
webhooks (endpoints, the outbox, delivery attempts) and the append-only audit log."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Team(models.Model):
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    time_zone = models.CharField(max_length=64, default="UTC")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.slug


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    FINANCE = "finance", "Finance"
    MEMBER = "member", "Member"


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    # Owners may grant a non-owner the right to buy credits (top-ups).
    can_manage_billing = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="membership_unique_team_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.team} ({self.role})"


class Project(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="projects")
    slug = models.SlugField(max_length=60)
    name = models.CharField(max_length=120)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "slug"], name="project_unique_team_slug")
        ]

    def __str__(self) -> str:
        return f"{self.team.slug}/{self.slug}"


class Scope(models.TextChoices):
    USAGE_WRITE = "usage:write", "usage:write"
    USAGE_READ = "usage:read", "usage:read"
    AUTHORIZE = "authorize", "authorize"


ALL_SCOPES = [s.value for s in Scope]


class ApiKey(models.Model):
    """A team's API key. Only the SHA-256 of the secret is stored; the secret is shown once."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_keys")
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.PROTECT, related_name="api_keys"
    )
    member = models.ForeignKey(
        Membership, null=True, blank=True, on_delete=models.SET_NULL, related_name="api_keys"
    )
    name = models.CharField(max_length=120, blank=True)
    prefix = models.CharField(max_length=24, unique=True)
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.team.slug})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Plan(models.Model):
    """A plan's terms; admin-editable. Credits are whole credits, prices are USD cents."""

    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=64)
    monthly_credits = models.PositiveIntegerField()
    monthly_price_cents = models.PositiveIntegerField(default=0)
    price_per_member = models.BooleanField(default=False)
    member_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: unlimited")
    can_purchase_credits = models.BooleanField(default=False)
    addon_pack_credits = models.PositiveIntegerField(null=True, blank=True)
    addon_pack_price_cents = models.PositiveIntegerField(null=True, blank=True)
    auto_recharge_pack_credits = models.PositiveIntegerField(null=True, blank=True)
    auto_recharge_pack_price_cents = models.PositiveIntegerField(null=True, blank=True)
    sort_order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["sort_order", "code"]

    def __str__(self) -> str:
        return self.name


class SubscriptionStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    INCOMPLETE = "incomplete", "Awaiting first payment"
    PAST_DUE = "past_due", "Payment failed"
    CANCELED = "canceled", "Canceled"


class Subscription(models.Model):
    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="subscription")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    # A downgrade waits for the cycle end (the renew job applies it); upgrades apply at once.
    pending_plan = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    current_cycle_start = models.DateTimeField()
    current_cycle_end = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    # A paid plan billed by a payment provider (ledger.models.Provider); empty for Free.
    provider = models.CharField(max_length=8, blank=True)
    provider_subscription_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    status = models.CharField(max_length=12, choices=SubscriptionStatus.choices, default="active")
    cancel_at_period_end = models.BooleanField(default=False)
    past_due_since = models.DateTimeField(null=True, blank=True)
    quantity = models.PositiveIntegerField(default=1, help_text="Seats billed (per-member plans)")

    def __str__(self) -> str:
        return f"{self.team.slug}: {self.plan.code}"


class Invitation(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.email} → {self.team.slug}"

    @property
    def is_pending(self) -> bool:
        return (
            self.accepted_at is None
            and self.revoked_at is None
            and self.expires_at > timezone.now()
        )


# ---- outbound webhooks ---------------------------------------------------------------------


class EventType(models.TextChoices):
    USAGE_THRESHOLD_REACHED = "usage.threshold_reached", "usage.threshold_reached"
    BUDGET_THRESHOLD_REACHED = "budget.threshold_reached", "budget.threshold_reached"
    BUDGET_EXCEEDED = "budget.exceeded", "budget.exceeded"
    BALANCE_LOW = "balance.low", "balance.low"
    BALANCE_DEPLETED = "balance.depleted", "balance.depleted"
    TOPUP_SUCCEEDED = "topup.succeeded", "topup.succeeded"
    TOPUP_FAILED = "topup.failed", "topup.failed"
    AUTO_RECHARGE_SUCCEEDED = "auto_recharge.succeeded", "auto_recharge.succeeded"
    AUTO_RECHARGE_FAILED = "auto_recharge.failed", "auto_recharge.failed"
    REFUND_CREATED = "refund.created", "refund.created"
    SUBSCRIPTION_PAYMENT_FAILED = "subscription.payment_failed", "subscription.payment_failed"
    SUBSCRIPTION_CHANGED = "subscription.changed", "subscription.changed"
    PRICE_CHANGED = "price.changed", "price.changed"


class WebhookEndpoint(models.Model):
    """Where a team wants its events POSTed, signed with `secret` (HMAC-SHA256)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=80)
    event_types = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)
    # Failed attempts in a row across all events; any delivered attempt resets it.
    failure_count = models.PositiveIntegerField(default=0)
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.url} ({self.team.slug})"


class OutboxEvent(models.Model):
    """An event written in the same transaction as the change it reports: it exists if and
    only if that change committed. `dispatched_at` is set once its deliveries are scheduled."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    event_id = models.CharField(max_length=40, unique=True)
    type = models.CharField(max_length=40, choices=EventType.choices)
    payload = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["id"],
                name="outbox_undispatched_idx",
                condition=models.Q(dispatched_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class DeliveryState(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    SENDING = "sending", "Sending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One attempt to deliver one event to one endpoint. A scheduled row is due at
    `next_attempt_at`; a failed row with retries left points at the next attempt's time."""

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.ForeignKey(OutboxEvent, on_delete=models.CASCADE, related_name="deliveries")
    attempt = models.PositiveSmallIntegerField()
    state = models.CharField(
        max_length=12, choices=DeliveryState.choices, default=DeliveryState.SCHEDULED
    )
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True)
    error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    attempted_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "event", "attempt"], name="delivery_unique_attempt"
            )
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due_idx",
                condition=models.Q(state="scheduled"),
            ),
            models.Index(
                fields=["attempted_at"],
                name="delivery_sending_idx",
                condition=models.Q(state="sending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event.event_id} -> endpoint {self.endpoint_id} (attempt {self.attempt})"


# ---- audit log -------------------------------------------------------------------------------


class AuditEntry(models.Model):
    """Who did what, when, from where. Append-only at the database (triggers), and its
    foreign keys never cascade or set null, so nothing ever updates or deletes a row."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Empty for global actions (price edits).
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=300)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["team", "id"], name="audit_team_id_idx")]

    def __str__(self) -> str:
        return f"{self.action} {self.target}"


class Notification(models.Model):
    """An in-app notice for a team's members (usage and balance alerts)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=40)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # When it was emailed to the team's owners and finance (a Celery task, after commit).
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["team", "-id"], name="notification_team_idx")]

    def __str__(self) -> str:
        return f"{self.team_id}: {self.title}"
