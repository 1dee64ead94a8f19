from django.apps import AppConfig


class RatelimitsConfig(AppConfig):
    name = "ratelimits"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The gate follows the ledger: balances after every commit, holds settled by usage.
        from ledger.services import book, budgets, usage

        from . import services

        if services.on_book_commit not in book.after_book_commit:
            book.after_book_commit.append(services.on_book_commit)
        if services.on_budget_commit not in budgets.after_budget_commit:
            budgets.after_budget_commit.append(services.on_budget_commit)
        if services.on_usage_commit not in usage.after_usage_commit:
            usage.after_usage_commit.append(services.on_usage_commit)
        if services.on_usage_replay not in usage.after_usage_replay:
            usage.after_usage_replay.append(services.on_usage_replay)
