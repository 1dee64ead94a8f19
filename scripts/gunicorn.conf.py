"""gunicorn settings for `make serve`: its access and error logs as JSON lines, like the app's
(gateway_billing/logs.py); each access line carries the response's X-Request-ID."""

accesslog = "-"
access_log_format = "%(m)s %(U)s %(s)s %(M)sms"

_stream = {"class": "logging.StreamHandler", "formatter": "json"}
logconfig_dict = {
    "formatters": {"json": {"()": "gateway_billing.logs.JsonFormatter"}},
    "handlers": {
        "console": {**_stream, "stream": "ext://sys.stdout"},
        "error_console": {**_stream, "stream": "ext://sys.stderr"},
    },
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
    },
    "root": {"level": "INFO", "handlers": ["error_console"]},
}
