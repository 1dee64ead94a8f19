"""The WSGI module settles the heap once the app is loaded (gateway_billing/wsgi.py): the
long-lived objects are frozen out of the collector's reach and the first generation's
threshold is raised, so full collections stop walking the whole app during requests. Each
case runs in a fresh interpreter: freezing the test process itself would change the suite."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import gc, json, sys, gateway_billing.wsgi; "
    "print(json.dumps({'frozen': gc.get_freeze_count(), 'gen0': gc.get_threshold()[0], "
    "'views_loaded': 'ledger.api' in sys.modules}))"
)


def _probe(**env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "GC_GEN0_THRESHOLD"}
    environ.update({"DJANGO_SETTINGS_MODULE": "gateway_billing.settings.main", **env})
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=environ, capture_output=True, text=True,
        check=True, timeout=120,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_loading_the_app_freezes_its_heap_and_raises_the_first_threshold():
    state = _probe()
    assert state["views_loaded"]  # the URL conf was imported before the freeze
    assert state["frozen"] > 10_000  # the app's modules, classes and caches
    assert state["gen0"] == 10_000


def test_the_threshold_is_configurable_and_zero_leaves_the_collector_alone():
    assert _probe(GC_GEN0_THRESHOLD="2500")["gen0"] == 2500
    untouched = _probe(GC_GEN0_THRESHOLD="0")
    assert untouched["frozen"] == 0
    assert untouched["gen0"] == 700  # Python's default
