"""Load the catalog file: plans, providers, models, price versions and TPM limits.

Idempotent: it only creates what is missing, in one transaction, and says what it created.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway_billing.errors import ApplicationError
from pricing import services

DEFAULT_CATALOG = Path(__file__).resolve().parents[2] / "catalog" / "catalog.json"


class Command(BaseCommand):
    help = "Create the plans, providers, models, prices and TPM limits of a catalog file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--file",
            type=Path,
            default=DEFAULT_CATALOG,
            help=f"Catalog JSON file (default: {DEFAULT_CATALOG})",
        )

    def handle(self, *args, **options) -> None:
        path: Path = options["file"]
        try:
            # A bare number is read as an exact Decimal, never through float.
            data = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise CommandError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise CommandError(f"{path}: expected a JSON object at the top level")
        try:
            result = services.catalog_load(data=data)
        except ApplicationError as exc:
            raise CommandError(f"{path}: {exc.message}") from None

        verbosity = options["verbosity"]
        for warning in result.warnings:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        counts = (
            f"{result.plans} plans, {result.providers} providers, {result.models} models, "
            f"{result.prices} price versions, {result.tpm_limits} TPM limits"
        )
        if verbosity < 1:
            return
        if result.created:
            self.stdout.write(self.style.SUCCESS(f"Catalog {path.name}: created {counts}."))
        else:
            self.stdout.write(f"Catalog {path.name}: already loaded, nothing to create.")
