"""Settings, split by concern: base, celery, stripe; `main` combines them for every
environment (DJANGO_SETTINGS_MODULE=gateway_billing.settings.main) and `test` sets the test
defaults (real PostgreSQL and Redis) before loading `main`."""
