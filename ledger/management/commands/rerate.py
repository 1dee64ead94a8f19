from django.core.management.base import BaseCommand

from ledger.services.usage import usage_rerate


class Command(BaseCommand):
    help = "Rate and bill unrated usage whose model now has a price at the event's time."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--team-id", type=int, default=None)

    def handle(self, *args, team_id: int | None = None, **options) -> None:
        count = usage_rerate(team_id=team_id)
        self.stdout.write(f"re-rated and billed {count} event(s)")
