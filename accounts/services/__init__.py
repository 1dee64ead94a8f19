"""Every write of the accounts app, by topic: teams, members, invitations, projects and API
keys (teams), the audit log (audit), outbound webhooks and their outbox (webhooks)."""

from .audit import audit_record
from .teams import (
    INVITATION_DAYS,
    CreatedKey,
    api_key_create,
    api_key_revoke,
    cycle_bounds,
    invitation_accept,
    invitation_create,
    invitation_revoke,
    membership_role_change,
    project_create,
    team_create,
    user_signup,
)
from .webhooks import (
    price_change_publish,
    webhook_delivery_resend,
    webhook_endpoint_create,
    webhook_endpoint_update,
    webhook_event_emit,
)

__all__ = [
    "INVITATION_DAYS",
    "CreatedKey",
    "api_key_create",
    "api_key_revoke",
    "audit_record",
    "cycle_bounds",
    "invitation_accept",
    "invitation_create",
    "invitation_revoke",
    "membership_role_change",
    "price_change_publish",
    "project_create",
    "team_create",
    "user_signup",
    "webhook_delivery_resend",
    "webhook_endpoint_create",
    "webhook_endpoint_update",
    "webhook_event_emit",
]
