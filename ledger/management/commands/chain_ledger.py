from django.core.management.base import BaseCommand

from ledger.services.chain import ledger_chain_extend


class Command(BaseCommand):
    help = "Hash the ledger entries not hashed yet (what the chain_ledger beat job does)."

    def handle(self, *args, **options) -> None:
        result = ledger_chain_extend()
        self.stdout.write(f"hashed {result.entries} entries of {result.teams} team(s)")
