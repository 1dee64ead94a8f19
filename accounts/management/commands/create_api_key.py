"""manage.py create_api_key --team acme [--project default] [--scopes usage:write authorize]"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts import selectors, services
from accounts.models import ALL_SCOPES, Team
from gateway_billing.errors import ApplicationError


class Command(BaseCommand):
    help = "Create an API key for a team and print its secret (shown once, never stored)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--team", required=True, help="The team's slug.")
        parser.add_argument("--project", help="A project slug of the team (optional).")
        parser.add_argument(
            "--scopes",
            nargs="+",
            default=ALL_SCOPES,
            choices=ALL_SCOPES,
            metavar="SCOPE",
            help=f"Any of {', '.join(ALL_SCOPES)} (default: all).",
        )
        parser.add_argument("--name", default="cli")

    def handle(
        self, *args, team: str, project: str | None, scopes: list[str], name: str, **options
    ) -> None:
        team_obj = Team.objects.filter(slug=team).first()
        if team_obj is None:
            raise CommandError(f"No team with slug {team!r}.")
        project_obj = None
        if project:
            project_obj = selectors.project_get(team=team_obj, slug=project)
            if project_obj is None:
                raise CommandError(f"Team {team!r} has no project {project!r}.")
        try:
            created = services.api_key_create(
                team=team_obj, scopes=scopes, name=name, project=project_obj
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        key = created.key
        self.stdout.write(
            f"Created key {key.prefix}… for team {team_obj.slug}"
            f"{f' (project {project_obj.slug})' if project_obj else ''} "
            f"with scopes {', '.join(key.scopes)}.\n"
            "The secret is shown only this once:"
        )
        self.stdout.write(created.secret)
