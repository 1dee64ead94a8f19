"""manage.py demo_setup: a ready-to-try install for `make run`. Safe to run again: each run
sets fresh passwords and replaces the demo key (the old one is revoked)."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts import services
from accounts.models import ALL_SCOPES, ApiKey, Membership, Plan, Project, Role, Team

User = get_user_model()
ADMIN_EMAIL = "admin@example.com"
DEMO_EMAIL = "demo@example.com"
DEMO_TEAM = "demo"
DEMO_KEY_NAME = "demo"


def _user(email: str, password: str, *, staff: bool = False) -> User:
    user, _ = User.objects.get_or_create(username=email, defaults={"email": email})
    user.email = email
    if staff:
        user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return user


class Command(BaseCommand):
    help = "Create (or refresh) the admin user, a demo team on Pro, and a demo API key."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        if not Plan.objects.filter(code="pro").exists():
            raise CommandError("No Pro plan: run `manage.py loadcatalog` first.")
        admin_password = secrets.token_urlsafe(12)
        demo_password = secrets.token_urlsafe(12)
        _user(ADMIN_EMAIL, admin_password, staff=True)
        demo_user = _user(DEMO_EMAIL, demo_password)

        team = Team.objects.filter(slug=DEMO_TEAM).first()
        if team is None:
            team = services.team_create(
                name="Demo", owner=demo_user, plan_code="pro", slug=DEMO_TEAM
            )
        membership, _ = Membership.objects.get_or_create(
            team=team, user=demo_user, defaults={"role": Role.OWNER}
        )
        project = Project.objects.filter(team=team, slug="default").first()
        if project is None:
            project = services.project_create(team=team, slug="default", name="Default")

        for old in ApiKey.objects.filter(team=team, name=DEMO_KEY_NAME, revoked_at__isnull=True):
            services.api_key_revoke(key=old)
        created = services.api_key_create(
            team=team, scopes=ALL_SCOPES, name=DEMO_KEY_NAME, project=project, member=membership
        )

        site = settings.SITE_URL.rstrip("/")
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "gateway_billing demo (passwords and key are new on every run)",
                    f"  Admin:     {site}/admin/",
                    f"             {ADMIN_EMAIL} / {admin_password}",
                    f"  Demo team: {site}/t/{team.slug}/",
                    f"             {DEMO_EMAIL} / {demo_password}",
                    f"  API key:   {created.secret}",
                    "  Try it:",
                    f'    curl -H "Authorization: Bearer {created.secret}" {site}/api/v1/me',
                    "",
                ]
            )
        )
