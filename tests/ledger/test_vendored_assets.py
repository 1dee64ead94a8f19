"""Front-end assets come from npm through `make vendor` into static/vendor/ (committed): the
files there are the versions package.json pins, and no template loads a script or a stylesheet
from another host."""

from __future__ import annotations

import json
import re
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
VENDOR = ROOT / "static" / "vendor"


def test_the_vendored_files_are_the_pinned_versions_with_their_licences():
    pins = json.loads((ROOT / "package.json").read_text())["dependencies"]
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in pins.values()), pins  # exact pins
    chart = (VENDOR / "chart.umd.min.js").read_text()
    assert f"Chart.js v{pins['chart.js']}" in chart[:200]
    assert f'version:"{pins["htmx.org"]}"' in (VENDOR / "htmx.min.js").read_text()
    for licence in ("chart.js.LICENSE.md", "kurkle-color.LICENSE.md", "htmx.LICENSE"):
        assert "Permission" in (VENDOR / licence).read_text()
    lock = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    assert {name: lock[f"node_modules/{name}"]["version"] for name in pins} == pins


def test_no_template_loads_anything_from_another_host():
    remote = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "templates").rglob("*.html")
        if remote.search(path.read_text())
    ]
    assert offenders == []
