"""Money pages: team pages under /t/<slug>/ and the finance dashboard under /finance/."""

from django.urls import path

from .views import budgets, finance, payments, usage

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
    path("t/<slug:slug>/billing/", payments.billing, name="billing"),
    path("t/<slug:slug>/billing/topup/", payments.topup, name="topup"),
    path("t/<slug:slug>/billing/auto-recharge/", payments.auto_recharge, name="auto_recharge"),
    path(
        "t/<slug:slug>/billing/payments/<int:payment_id>/finish/",
        payments.payment_finish,
        name="payment_finish",
    ),
    path("billing/test-checkout/<str:session_id>/", payments.fake_checkout, name="fake_checkout"),
    path("webhooks/stripe", payments.stripe_webhook, name="stripe_webhook"),
    path("finance/", finance.finance_dashboard, name="finance"),
    path("finance/ledger.csv", finance.finance_ledger_csv, name="finance_ledger_csv"),
    path("finance/reconcile/", finance.finance_reconcile, name="finance_reconcile"),
]
