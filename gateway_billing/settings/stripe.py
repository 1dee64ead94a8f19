from .env import env

# Absent keys: the fake payment provider (test mode) is used.
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_PUBLISHABLE_KEY = env.str("STRIPE_PUBLISHABLE_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="")

# The fake provider (test mode): on by default only with DEBUG; production must opt in.
FAKE_PAYMENTS_ENABLED = env.bool("FAKE_PAYMENTS_ENABLED", default=env.bool("DEBUG", default=False))
# Top-up amounts offered besides the plan's pack, and the custom range, in whole USD.
TOPUP_AMOUNTS_USD = [10, 50, 200, 1000, 5000]
TOPUP_MIN_USD = 10
TOPUP_MAX_USD = 5000
# A failed subscription payment moves the team to Free this long after the failure.
SUBSCRIPTION_GRACE_DAYS = env.int("SUBSCRIPTION_GRACE_DAYS", default=7)
# After a declined auto recharge: no retry for this long; off after this many in a row.
AUTO_RECHARGE_BACKOFF_SECONDS = 3600
AUTO_RECHARGE_MAX_FAILURES = 3
