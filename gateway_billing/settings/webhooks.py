from .env import env

# Outbound webhooks. Outside development only public https URLs are accepted (a webhook must
# not reach our own network); development and the test receivers on 127.0.0.1 need this on.
WEBHOOK_ALLOW_PRIVATE_URLS = env.bool(
    "WEBHOOK_ALLOW_PRIVATE_URLS", default=env.bool("DEBUG", default=False)
)
# Per attempt; a slow receiver is a failed attempt, retried later.
WEBHOOK_TIMEOUT_SECONDS = env.int("WEBHOOK_TIMEOUT_SECONDS", default=10)
