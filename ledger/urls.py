"""Money pages: team pages under /t/<slug>/ and the finance dashboard under /finance/."""

from django.urls import path

from .views import budgets, usage

app_name = "ledger"
urlpatterns: list = [
    path("t/<slug:slug>/usage/", usage.usage_page, name="usage"),
    path("t/<slug:slug>/usage/export.csv", usage.usage_export, name="usage_export"),
    path("t/<slug:slug>/ledger/", usage.ledger_history, name="history"),
    path("t/<slug:slug>/budgets/", budgets.budget_list_page, name="budgets"),
    path("t/<slug:slug>/budgets/new/", budgets.budget_create_page, name="budget_create"),
    path(
        "t/<slug:slug>/budgets/<int:budget_id>/edit/",
        budgets.budget_edit_page,
        name="budget_edit",
    ),
    path(
        "t/<slug:slug>/budgets/<int:budget_id>/delete/",
        budgets.budget_delete_action,
        name="budget_delete",
    ),
]
