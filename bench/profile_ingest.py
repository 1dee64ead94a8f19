"""Where does the time of one ingest request go? cProfile over N in-process requests against
the bench database (run `make bench` once first). usage: profile_ingest.py [single|batch] [N]"""

import cProfile
import os
import pstats
import sys
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_billing.settings.main")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.test import Client  # noqa: E402

from accounts import services  # noqa: E402
from ledger.services.credits import credits_grant  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else "single"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 500
tag = str(time.time_ns())
owner = get_user_model().objects.create_user(username=f"prof-{tag}@example.com")
team = services.team_create(name="Profile", owner=owner, plan_code="pro", slug=f"prof-{tag}")
credits_grant(
    team_id=team.id, kind="topup", source="addon", amount_nano=10**18, reference=f"prof:{tag}"
)
secret = services.api_key_create(team=team, scopes=["usage:write"]).secret
client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


def body(i: int) -> dict:
    return {"id": f"prof-{tag}-{i}", "model": "gpt-5",
            "usage": {"input_tokens": 100 + i, "output_tokens": 50, "cache_read_tokens": 7}}  # fmt: skip


def one(i: int) -> None:
    if mode == "batch":
        events = [body(i * 1000 + j) for j in range(1000)]
        r = client.post("/api/v1/usage/batch", {"events": events}, content_type="application/json")
        assert r.status_code == 200, r.content[:300]
    else:
        r = client.post("/api/v1/usage", body(i), content_type="application/json")
        assert r.status_code == 201, r.content


one(-1)
start = time.perf_counter()
profiler = cProfile.Profile(timer=time.process_time)
profiler.enable()
for i in range(n):
    one(i)
profiler.disable()
elapsed = time.perf_counter() - start
per = elapsed / n * 1000
print(f"{n} {mode} requests in {elapsed:.2f}s: {per:.2f} ms per request (profiled)")
pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "cumulative")).print_stats(
    int(os.environ.get("TOP", "45"))
)
