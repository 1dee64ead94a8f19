"""The chaos suite's tenants, made through the real services: teams on the Pro plan with add-on
credits, an API key each, a webhook endpoint each (pointing at the suite's receiver),
budgets whose thresholds keep webhook events flowing as spend grows, a balance-low threshold,
and TPM overrides so the load measures faults rather than rate limits.

With TOPUPS, each team also opens that many top-ups through `topup_start` (a pending payment
and a Checkout Session at the configured Stripe API); the chaos run pays them with signed
webhook events.

usage (with the private stack's environment):
    python tests/chaos/setup_data.py TEAMS RECEIVER_URL OUT_JSON [TOPUPS]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_billing.settings.main")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402

from accounts import services as accounts  # noqa: E402
from accounts.models import EventType, Membership  # noqa: E402
from ledger.models import EntryKind, LotSource  # noqa: E402
from ledger.services.alerts import balance_low_threshold_set  # noqa: E402
from ledger.services.budgets import budget_create  # noqa: E402
from ledger.services.credits import credits_grant  # noqa: E402
from ledger.services.payments import topup_start  # noqa: E402
from pricing.models import Model  # noqa: E402
from pricing.money import NANO  # noqa: E402
from ratelimits.models import TeamTpmOverride  # noqa: E402

ADDON_CREDITS = 200_000
# Spend crosses these budgets' 10 % steps at every scale of run, short or long.
BUDGET_LIMITS = (5, 15, 40, 100, 250, 600, 1500, 4000)
THRESHOLDS = list(range(10, 101, 10))
MODELS = ("gpt-5", "gpt-5-mini", "gpt-4o-mini", "claude-sonnet-4-5-20250929", "gemini-2.5-flash")


def main() -> None:
    count, receiver, out = int(sys.argv[1]), sys.argv[2].rstrip("/"), Path(sys.argv[3])
    topups_per_team = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    user_model = get_user_model()
    models = list(Model.objects.filter(name__in=MODELS))
    teams, topups = [], []
    for n in range(count):
        email = f"chaos{n}@example.com"
        owner = user_model.objects.create_user(username=email, email=email)
        team = accounts.team_create(
            name=f"Chaos {n}", owner=owner, plan_code="pro", slug=f"chaos-{n}"
        )
        credits_grant(
            team_id=team.id, kind=EntryKind.TOPUP, source=LotSource.ADDON,
            amount_nano=ADDON_CREDITS * NANO, reference=f"chaos-setup:{team.id}",
        )  # fmt: skip
        key = accounts.api_key_create(
            team=team, scopes=["usage:write", "usage:read", "authorize"], name="chaos"
        )
        endpoint = accounts.webhook_endpoint_create(
            team=team, url=f"{receiver}/hooks/{team.slug}",
            event_types=list(EventType.values), actor=owner,
        )  # fmt: skip
        for limit in BUDGET_LIMITS:
            budget_create(
                team=team, actor=owner, name=f"Daily {limit}", scope="team", period="day",
                limit_nano=limit * NANO, thresholds=THRESHOLDS, hard_cap=False,
            )  # fmt: skip
        # Fires once, early: the balance starts well above it.
        balance_low_threshold_set(
            team_id=team.id, threshold_nano=(ADDON_CREDITS + 5000 - 50) * NANO
        )
        TeamTpmOverride.objects.bulk_create(
            TeamTpmOverride(team=team, model=model, tokens_per_minute=2_000_000_000,
                            note="chaos suite: faults, not limits")
            for model in models
        )  # fmt: skip
        teams.append(
            {"id": team.id, "slug": team.slug, "key": key.secret, "secret": endpoint.secret}
        )
        membership = Membership.objects.get(team=team, user=owner)
        for k in range(topups_per_team):
            payment = topup_start(
                membership=membership, option="pack" if k % 2 else "usd-10", amount=None,
                success_url=f"{receiver}/paid", cancel_url=f"{receiver}/cancelled",
            )  # fmt: skip
            topups.append({"payment": payment.pk, "team": team.id, "cents": payment.amount_cents,
                           "session": payment.checkout_session_id})  # fmt: skip
    out.write_text(json.dumps({"teams": teams, "topups": topups}, indent=2))


if __name__ == "__main__":
    main()
