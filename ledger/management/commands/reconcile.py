from django.core.management.base import BaseCommand, CommandError

from ledger.services.reconcile import reconcile_run
from pricing.money import format_credits


class Command(BaseCommand):
    help = "Recompute every balance, overdraft and lot from the ledger; exit 1 on any drift."

    def handle(self, *args, **options) -> None:
        report = reconcile_run()
        for drift in report.drifts:
            self.stdout.write(
                f"DRIFT team={drift.team_id} {drift.kind} {drift.detail} "
                f"expected={format_credits(drift.expected)} actual={format_credits(drift.actual)}"
            )
        self.stdout.write(
            f"reconciled {report.teams} teams, {report.entries} entries: "
            f"{len(report.drifts)} drift(s)"
        )
        if report.drifts:
            raise CommandError(f"{len(report.drifts)} drift(s) found")
