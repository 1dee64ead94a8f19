"""Redis stopped mid-test: a real redis-server of the test's own, killed while in use. The gate
falls back as documented; ingest keeps recording usage."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
import redis
from django.test import override_settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from ledger.models import UsageEvent
from ratelimits import services
from ratelimits.gate import RedisGate

pytestmark = pytest.mark.django_db

ASK = {"model": "gpt-5", "estimated_input_tokens": 1000, "max_output_tokens": 500}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_server(port: int) -> subprocess.Popen:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is required (it runs the suite's Redis too)")
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )


def _wait_up(client: redis.Redis) -> None:
    for _ in range(100):
        try:
            client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)


@pytest.fixture
def own_redis():
    port = _free_port()
    proc = _redis_server(port)
    client = redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )  # fmt: skip
    _wait_up(client)
    procs = [proc]
    yield procs, client
    for proc in procs:
        proc.kill()
        proc.wait()


def test_redis_down_falls_back_to_the_database_and_ingest_keeps_recording(
    own_redis, team_factory, key_client
):
    (proc,), client = own_redis
    services._gate = RedisGate(client)
    team = team_factory(plan="free")  # 300 credits
    api = key_client(team)
    healthy = api.post("/api/v1/authorize", ASK, format="json").json()
    assert healthy["degraded"] is False and healthy["balance"]["held"] == "1.125000000"

    proc.kill()  # Redis stops
    proc.wait()
    degraded = api.post("/api/v1/authorize", ASK, format="json")
    assert degraded.status_code == 200
    assert degraded.json()["degraded"] is True  # TPM not checked; credits from the database
    assert degraded.json()["balance"]["total"] == "300.000000000"

    too_much = api.post("/api/v1/authorize", {**ASK, "max_output_tokens": 2_000_000}, format="json")
    assert too_much.status_code == 402  # 3,600 credits > 300 in the database: still refused

    usage = {
        "id": "during-outage",
        "model": "gpt-5",
        "usage": {"input_tokens": 10, "output_tokens": 10},
    }
    assert api.post("/api/v1/usage", usage, format="json").status_code == 201
    assert UsageEvent.objects.filter(team=team, event_id="during-outage").exists()

    with override_settings(RATE_LIMIT_FAIL_OPEN=False):
        closed = api.post("/api/v1/authorize", ASK, format="json")
    assert closed.status_code == 503
    assert closed.json()["error"]["code"] == "rate_limiter_unavailable"
    assert closed["Retry-After"] == "5"


def test_redis_down_hard_caps_are_checked_against_committed_spend(
    own_redis, team_factory, key_client, django_capture_on_commit_callbacks
):
    from ledger.services.budgets import budget_create

    (proc,), client = own_redis
    services._gate = RedisGate(client)
    team = team_factory(plan="free")  # 300 credits
    with django_capture_on_commit_callbacks(execute=True):
        budget_create(team=team, actor=None, name="Day cap", scope="team", period="day",
                      limit_nano=2 * 10**9, hard_cap=True)  # fmt: skip
    api = key_client(team)
    spend = {"id": "spent", "model": "gpt-5", "usage": {"input_tokens": 1000, "output_tokens": 500}}
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/api/v1/usage", spend, format="json").status_code == 201  # 1.125

    proc.kill()  # Redis stops: no holds, the database's committed spend decides
    proc.wait()
    refused = api.post("/api/v1/authorize", ASK, format="json")  # 1.125 + 1.125 > 2
    assert refused.status_code == 402
    assert refused.json()["error"]["budget"]["spent"] == "1.125000000"
    small = api.post("/api/v1/authorize", {**ASK, "max_output_tokens": 0}, format="json")
    assert small.status_code == 200 and small.json()["degraded"] is True  # 1.125 + 0.00125


def test_redis_down_a_key_revoked_meanwhile_is_refused(
    own_redis, team_factory, key_factory, django_capture_on_commit_callbacks
):
    """No epoch can be checked while Redis is down: a degraded answer asks the database whether
    the key still exists, so a key revoked during the outage stops at once (ingest too)."""
    from rest_framework.test import APIClient

    from accounts.services import api_key_revoke

    (proc,), client = own_redis
    services._gate = RedisGate(client)
    team = team_factory(plan="free")
    key, secret = key_factory(team, ["authorize", "usage:write"])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.post("/api/v1/authorize", ASK, format="json").status_code == 200  # remembered

    proc.kill()
    proc.wait()
    assert api.post("/api/v1/authorize", ASK, format="json").json()["degraded"] is True
    with django_capture_on_commit_callbacks(execute=True):
        api_key_revoke(key=key, actor=None)  # its epoch bump fails: Redis is down
    refused = api.post("/api/v1/authorize", ASK, format="json")
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "unauthenticated")
    usage = {"id": "late", "model": "gpt-5", "usage": {"input_tokens": 1, "output_tokens": 1}}
    assert api.post("/api/v1/usage", usage, format="json").status_code == 401


def test_a_restarted_redis_is_reconnected_to_without_falling_back(
    own_redis, team_factory, key_client
):
    """The gate keeps one connection per thread; when Redis restarts under it, the next call
    opens a new one and is answered by Redis (state rebuilt from the database), not by the
    outage fallback."""
    procs, client = own_redis
    services._gate = RedisGate(client)
    team = team_factory(plan="free")
    api = key_client(team)
    assert api.post("/api/v1/authorize", ASK, format="json").json()["degraded"] is False

    procs[0].kill()
    procs[0].wait()
    procs.append(_redis_server(client.connection_pool.connection_kwargs["port"]))
    _wait_up(client)
    again = api.post("/api/v1/authorize", ASK, format="json").json()
    assert again["degraded"] is False
    assert again["balance"]["total"] == "300.000000000"  # reloaded from the database
