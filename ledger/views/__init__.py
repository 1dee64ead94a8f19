"""Team and finance pages for money: one module per topic (usage, budgets, payments, finance)."""
