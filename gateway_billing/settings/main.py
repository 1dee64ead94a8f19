"""The settings every environment runs on, combined from the modules by concern."""

from .base import *  # noqa: F403
from .celery import *  # noqa: F403
from .observability import *  # noqa: F403
from .stripe import *  # noqa: F403
from .webhooks import *  # noqa: F403
