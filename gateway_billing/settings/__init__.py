"""Settings, split by concern. DJANGO_SETTINGS_MODULE=gateway_billing.settings for every
environment; tests use gateway_billing.settings.test (real PostgreSQL and Redis)."""

from .base import *  # noqa: F403
from .celery import *  # noqa: F403
from .stripe import *  # noqa: F403
