"""Bench fixtures: teams with API keys and a large balance. Run with the bench DATABASE_URL.

usage: python bench/setup_data.py TEAMS KEYS_FILE HOT_KEY_FILE
"""

import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_billing.settings.main")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402

from accounts import services as accounts  # noqa: E402
from ledger.models import EntryKind, LotSource  # noqa: E402
from ledger.services.credits import credits_grant  # noqa: E402
from pricing.money import NANO  # noqa: E402


def main() -> None:
    teams, keys_file, hot_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    User = get_user_model()
    secrets = []
    for n in range(teams + 1):
        owner = User.objects.create_user(
            username=f"bench{n}@example.com", email=f"bench{n}@example.com"
        )
        team = accounts.team_create(
            name=f"Bench {n}", owner=owner, plan_code="pro", slug=f"bench-{n}"
        )
        credits_grant(
            team_id=team.id, kind=EntryKind.TOPUP, source=LotSource.ADDON,
            amount_nano=10_000_000 * NANO, reference=f"bench:{team.id}",
        )  # fmt: skip
        secret = accounts.api_key_create(
            team=team, scopes=["usage:write", "usage:read", "authorize"]
        ).secret
        secrets.append(secret)
    with open(keys_file, "w") as f:
        f.write("\n".join(secrets[1:]) + "\n")
    with open(hot_file, "w") as f:
        f.write(secrets[0] + "\n")


if __name__ == "__main__":
    main()
