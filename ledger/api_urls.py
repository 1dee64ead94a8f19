from django.urls import path

from . import api, api_payments

urlpatterns = [
    path("usage", api.UsageRecordApi.as_view(), name="usage-record"),
    path("usage/batch", api.UsageBatchRecordApi.as_view(), name="usage-batch"),
    path("usage/summary", api.UsageSummaryApi.as_view(), name="usage-summary"),
    path("balance", api.BalanceGetApi.as_view(), name="balance"),
    path("ledger", api.LedgerListApi.as_view(), name="ledger"),
    path("budgets", api.BudgetListApi.as_view(), name="budgets"),
    path("budgets/<int:budget_id>", api.BudgetDetailApi.as_view(), name="budget"),
    path("payments", api_payments.PaymentListApi.as_view(), name="payments"),
]
