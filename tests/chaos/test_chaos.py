"""The chaos suite's short profile, as part of `make test` (`make chaos` runs the full one).

It runs the driver as a subprocess: the driver starts its own PostgreSQL and Redis, gunicorn,
a Celery worker and beat, sends retrying load while killing workers, restarting PostgreSQL and
stopping Redis, then proves from the database that nothing was lost or billed twice, that no
balance drifted, that no hold is left live and that every webhook event was delivered.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.chaos


def test_nothing_lost_or_billed_twice_under_faults(capsys: pytest.CaptureFixture) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests/chaos/run.py"), "--profile", "ci"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    table = result.stdout[result.stdout.find("chaos suite, profile") :]
    with capsys.disabled():  # the table is the point: show it on success too
        print(f"\n{table}")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    assert "RESULT: PASS" in table
