"""Vendored front-end assets (``make vendor``): pages work without them and load them only
when they are present, so a checkout without the vendored files has no broken script tags."""

from __future__ import annotations

from functools import cache

from django.contrib.staticfiles import finders

HTMX = "vendor/htmx.min.js"
CHART_JS = "vendor/chart.umd.min.js"


@cache
def vendored(path: str) -> bool:
    """Whether the static file `path` exists (checked once per process)."""
    return finders.find(path) is not None
