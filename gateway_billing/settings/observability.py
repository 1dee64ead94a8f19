"""Logs and metrics: JSON log lines with request ids (gateway_billing/logs.py) and the
Prometheus endpoint (gateway_billing/metrics.py)."""

import ipaddress

from django.core.exceptions import ImproperlyConfigured

from gateway_billing.logs import logging_config

from .env import env

_DEBUG = env.bool("DEBUG", default=False)

# `json` (one JSON object per line; the default outside development) or `text`.
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if _DEBUG else "json")
LOGGING = logging_config(level=env.str("LOG_LEVEL", default="INFO"), json=LOG_FORMAT == "json")
# Celery workers log through the same configuration instead of their own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# GET /metrics answers a request carrying `Authorization: Bearer <METRICS_TOKEN>`, or from an
# address in METRICS_ALLOWED_IPS (addresses or networks, as REMOTE_ADDR sees them). Neither
# set: /metrics is a 404. Development allows the loopback addresses.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = [
    net.strip()
    for net in env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"] if _DEBUG else [])
    if net.strip()
]
for _net in METRICS_ALLOWED_IPS:
    try:
        ipaddress.ip_network(_net, strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_IPS: {_exc}") from None
