"""The WSGI application (gunicorn loads it in each worker).

Once the app is loaded, its heap is settled: every view is imported, the objects that live as
long as the process (modules, classes, the URL conf, caches) are moved out of the garbage
collector's reach (``gc.freeze()``), and the collector's first generation waits for more new
objects before it runs. Without this a full collection walks those ~115,000 long-lived objects
every few 1,000-event batches (about 40 ms each time; a quarter of a batch's CPU on average)
and stalls whatever request the worker is answering. ``GC_GEN0_THRESHOLD`` sets the first
generation's threshold (default 10,000; Python's is 700); 0 leaves the collector as it is.
"""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_billing.settings.main")

application = get_wsgi_application()


def settle_heap(gen0_threshold: int) -> None:
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports every view now, not on a first request
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


_threshold = int(os.environ.get("GC_GEN0_THRESHOLD", "10000"))
if _threshold:
    settle_heap(_threshold)
