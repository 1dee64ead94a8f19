from django.core.management.base import BaseCommand, CommandError

from accounts.models import Team
from ledger.selectors_chain import ledger_chain_verify


class Command(BaseCommand):
    help = (
        "Recompute every team's ledger hash chain and name the first broken link of each; "
        "exit 1 when any chain is broken."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--team", help="Only this team (its slug)")

    def handle(self, *args, **options) -> None:
        team = None
        if options["team"]:
            team = Team.objects.filter(slug=options["team"]).first()
            if team is None:
                raise CommandError(f"No team {options['team']!r}.")
        report = ledger_chain_verify(team=team)
        for broken in report.broken:
            self.stdout.write(
                f"BROKEN team={broken.team_slug} (id {broken.team_id}) entry={broken.entry_id}: "
                f"{broken.problem}\n  expected {broken.expected}\n  stored   {broken.stored}"
            )
        self.stdout.write(
            f"verified {report.teams} team(s): {report.hashed} entries hashed and intact, "
            f"{report.unhashed} not hashed yet, {len(report.broken)} broken chain(s)"
        )
        if report.broken:
            raise CommandError(f"{len(report.broken)} broken chain(s)")
