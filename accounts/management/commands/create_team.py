"""manage.py create_team --slug acme --name "Acme" --plan pro --owner-email ada@example.com"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts import services
from gateway_billing.errors import ApplicationError

User = get_user_model()


class Command(BaseCommand):
    help = "Create a team on a plan, owned by a user (created without a password if missing)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--slug", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--plan", default="free", help="A plan code: free, personal, pro.")
        parser.add_argument("--owner-email", required=True)

    def handle(self, *args, slug: str, name: str, plan: str, owner_email: str, **options) -> None:
        email = User.objects.normalize_email(owner_email).strip().lower()
        try:
            with transaction.atomic():
                owner, created = User.objects.get_or_create(
                    username=email, defaults={"email": email}
                )
                if created:
                    owner.set_unusable_password()
                    owner.save(update_fields=["password"])
                team = services.team_create(name=name, owner=owner, plan_code=plan, slug=slug)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            self.style.SUCCESS(f"Created team {team.slug} ({team.name}) on the {plan} plan.")
        )
        if created:
            self.stdout.write(
                f"Created user {email} without a password; set one with:\n"
                f"  python manage.py changepassword {email}"
            )
        else:
            self.stdout.write(f"Owner: {email} (existing user).")
