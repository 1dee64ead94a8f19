"""The embedded default (`make run`: SQLite, local cache, eager Celery) records and reads
usage through the real API too. Runs in a subprocess with its own SQLite file."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json
import django
django.setup()
from django.core.management import call_command
from django.test import Client
from accounts.services import api_key_create
from accounts.models import Team

call_command("migrate", verbosity=0)
call_command("loadcatalog", verbosity=0)
call_command("demo_setup", verbosity=0)
team = Team.objects.get(slug="demo")
secret = api_key_create(team=team, scopes=["usage:write", "usage:read", "authorize"]).secret
client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
post = lambda path, body: client.post(path, body, content_type="application/json")
ask = {"model": "claude-sonnet-4-5-20250929", "estimated_input_tokens": 6200,
    "max_output_tokens": 300, "request_id": "r1"}
auth = post("/api/v1/authorize", ask)
single = post("/api/v1/usage", {"id": "s1", "request_id": "r1", "model": "claude-sonnet-4-5-20250929",
    "usage_format": "anthropic", "usage": {"input_tokens": 1200, "output_tokens": 300,
    "cache_read_input_tokens": 5000, "cache_creation_input_tokens": 0}})
replay = post("/api/v1/usage", {"id": "s1", "request_id": "r1", "model": "claude-sonnet-4-5-20250929",
    "usage_format": "anthropic", "usage": {"input_tokens": 1200, "output_tokens": 300,
    "cache_read_input_tokens": 5000, "cache_creation_input_tokens": 0}})
batch = post("/api/v1/usage/batch", {"events": [
    {"id": f"b{i}", "model": "gpt-5", "usage": {"input_tokens": 1000, "output_tokens": 500}}
    for i in range(3)] + [{"id": "u1", "model": "gpt-5.1", "usage": {"input_tokens": 1}}]})
balance = client.get("/api/v1/balance").json()
ledger = client.get("/api/v1/ledger").json()
call_command("reconcile", verbosity=0)
after = post("/api/v1/authorize", {**ask, "request_id": "r2"})
print(json.dumps({"auth": [auth.status_code, auth.json()], "after": after.json(),
    "single": [single.status_code, single.json()], "replay": replay.status_code,
    "batch": [r["status"] for r in batch.json()["results"]], "balance": balance,
    "entries": len(ledger["results"])}))
"""


def test_usage_on_the_embedded_sqlite_default(tmp_path):
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}
        },
        "DJANGO_SETTINGS_MODULE": "gateway_billing.settings.main",
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'embedded.sqlite3'}",
        "ALLOWED_HOSTS": "testserver",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    status, auth = out["auth"]
    assert status == 200, auth
    # 6,200 x 3 + 300 x 15 per 1M = 0.0231 USD = 4.158 credits held, TPM from the Pro plan
    assert auth["hold"]["credits"] == "4.158000000"
    assert auth["tpm"] == {"limit": 180000, "used": 6500, "remaining": 173500}
    # r1 was settled by the usage (1,200 + 300 counted; Anthropic cache reads are not)
    assert out["after"]["tpm"]["used"] == 1500 + 6500
    assert out["after"]["balance"]["held"] == "4.158000000"
    status, body = out["single"]
    assert status == 201
    # 1200 x 3 + 300 x 15 + 5000 x 0.30 per 1M = 0.0096 USD = 1.728 credits, from the Pro plan
    assert body["credits"] == "1.728000000"
    assert body["balance"]["monthly"] == "4998.272000000"
    assert out["replay"] == 200
    assert out["batch"] == [201, 201, 201, 201]
    assert out["balance"]["total"] == "4994.897000000"  # 3 x 1.125 credits more; u1 unrated
    assert out["entries"] == 5  # plan grant + 4 usage entries
