"""The gate's store, directly, with a controllable clock: the sliding window, holds and their
expiry, on both implementations (Redis Lua scripts and the embedded in-process store)."""

import pytest
from django.core.cache import caches

from ratelimits.gate import HOLD_TTL_MS, LocalGate, RedisGate

T, M = 1, 7  # team, model


@pytest.fixture(params=["redis", "local"])
def store(request):
    if request.param == "local":
        return LocalGate()
    client = caches["default"]._cache.get_client(write=True)
    client.flushdb()
    return RedisGate(client)


def reserve(store, rid, tokens, at, *, limit=1000, cost=1, team=T, budgets=(), epoch="*"):
    return store.authorize(team_id=team, model_id=M, request_id=rid, cost=cost, tokens=tokens,
                           limit=limit, now_ms=at, budgets=budgets, epoch=epoch)  # fmt: skip


def test_cold_until_the_balance_is_mirrored(store):
    assert reserve(store, "a", 1, 0).outcome == "cold"
    store.set_balance(team_id=T, balance=100, version=1)
    assert reserve(store, "a", 1, 0).outcome == "ok"


def test_sliding_window_has_no_boundary_double_burst(store):
    store.set_balance(team_id=T, balance=10**9, version=1)
    assert reserve(store, "a", 600, 1_000).outcome == "ok"
    assert reserve(store, "b", 400, 59_900).outcome == "ok"  # 1,000 in the window: the limit
    refused = reserve(store, "c", 1, 60_100)  # a fixed minute would have reset at 60,000
    assert refused.outcome == "rate_limited"
    assert refused.used == 1000
    assert refused.retry_after_ms == 1_000 + 60_000 - 60_100  # when "a" leaves the window
    assert reserve(store, "c", 600, 61_001).outcome == "ok"  # "a" has left: 400 + 600
    assert reserve(store, "d", 1, 61_002).outcome == "rate_limited"
    assert reserve(store, "d", 400, 119_901).outcome == "ok"  # "b" left at 119,900


def test_a_request_bigger_than_the_limit_is_refused(store):
    store.set_balance(team_id=T, balance=10**9, version=1)
    answer = reserve(store, "big", 1001, 0)
    assert answer.outcome == "rate_limited"
    assert answer.retry_after_ms == 60_000


def test_insufficient_credits_count_live_holds(store):
    store.set_balance(team_id=T, balance=100, version=1)
    assert reserve(store, "a", 1, 0, cost=60).outcome == "ok"
    answer = reserve(store, "b", 1, 1, cost=50)
    assert (answer.outcome, answer.balance, answer.held) == ("insufficient", 100, 60)
    assert reserve(store, "c", 1, 2, cost=40).outcome == "ok"


def test_same_request_id_is_idempotent(store):
    store.set_balance(team_id=T, balance=100, version=1)
    first = reserve(store, "a", 10, 0, cost=30)
    again = reserve(store, "a", 10, 5, cost=30)
    assert again.outcome == "existing"
    assert (again.hold_credits, again.hold_expires_ms) == (
        first.hold_credits,
        first.hold_expires_ms,
    )
    assert store.held(team_id=T, now_ms=6) == 30


def test_settle_replaces_the_estimate_and_frees_the_hold(store):
    store.set_balance(team_id=T, balance=100, version=1)
    reserve(store, "a", 900, 0, cost=30)
    assert store.settle(team_id=T, model_id=M, request_id="a", tokens=250, member="u:1",
                        event_ms=10, now_ms=20)  # fmt: skip
    assert store.held(team_id=T, now_ms=21) == 0
    assert store.window_used(team_id=T, model_id=M, now_ms=21) == 250
    assert store.hold_get(team_id=T, request_id="a") is None


def test_usage_without_a_hold_counts_once(store):
    store.set_balance(team_id=T, balance=100, version=1)
    for _ in range(2):  # a hook that runs twice counts once
        assert not store.settle(team_id=T, model_id=M, request_id="", tokens=300, member="u:9",
                                event_ms=1_000, now_ms=2_000)  # fmt: skip
    assert store.window_used(team_id=T, model_id=M, now_ms=2_001) == 300
    # old usage (outside the window) does not count
    store.settle(team_id=T, model_id=M, request_id="", tokens=50, member="u:10", event_ms=0,
                 now_ms=70_000)  # fmt: skip
    assert store.window_used(team_id=T, model_id=M, now_ms=70_000) == 0


def test_release_frees_credits_and_tokens(store):
    store.set_balance(team_id=T, balance=100, version=1)
    reserve(store, "a", 900, 0, cost=90)
    store.settle(team_id=T, model_id=M, request_id="a", tokens=0, member="", event_ms=0,
                 now_ms=5, recount=False)  # fmt: skip
    assert store.held(team_id=T, now_ms=6) == 0
    assert store.window_used(team_id=T, model_id=M, now_ms=6) == 0
    assert reserve(store, "b", 1000, 7, cost=100).outcome == "ok"


def test_an_unsettled_hold_expires_after_ten_minutes(store):
    store.set_balance(team_id=T, balance=100, version=1)
    reserve(store, "a", 10, 0, cost=100)
    assert reserve(store, "b", 10, HOLD_TTL_MS - 1, cost=1).outcome == "insufficient"
    assert reserve(store, "b", 10, HOLD_TTL_MS, cost=100).outcome == "ok"


def test_balance_mirror_keeps_the_newest_version(store):
    store.set_balance(team_id=T, balance=50, version=5)
    store.set_balance(team_id=T, balance=99, version=4)  # a late, older commit
    assert reserve(store, "a", 1, 0, cost=51).outcome == "insufficient"
    store.set_balance(team_id=T, balance=99, version=6)
    assert reserve(store, "a", 1, 0, cost=51).outcome == "ok"


def test_teams_do_not_share_state(store):
    store.set_balance(team_id=1, balance=10, version=1)
    store.set_balance(team_id=2, balance=10, version=1)
    assert reserve(store, "x", 1000, 0, cost=10, team=1).outcome == "ok"
    assert reserve(store, "x", 1000, 0, cost=10, team=2).outcome == "ok"  # same id, other team
    assert store.hold_get(team_id=2, request_id="x")[0] == 10


# ---- hard-capped budgets: held like the balance -----------------------------------------------

CAP = [("b1:0", 100)]  # one budget period, limit 100 micro-credits


def test_a_budget_must_be_mirrored_before_it_is_held(store):
    store.set_balance(team_id=T, balance=10**9, version=1)
    answer = reserve(store, "a", 1, 0, cost=10, budgets=CAP)
    assert (answer.outcome, answer.budget_index) == ("budget_cold", 0)
    assert store.hold_get(team_id=T, request_id="a") is None  # nothing reserved
    store.budget_spent_set(team_id=T, tag="b1:0", spent=30)
    answer = reserve(store, "a", 1, 0, cost=10, budgets=CAP)
    assert (answer.outcome, answer.budgets) == ("ok", ((30, 10),))


def test_holds_count_against_a_hard_cap_until_settle_release_or_expiry(store):
    store.set_balance(team_id=T, balance=10**9, version=1)
    store.budget_spent_set(team_id=T, tag="b1:0", spent=30)
    assert reserve(store, "a", 1, 0, cost=40, budgets=CAP).outcome == "ok"  # 30 + 40 held
    refused = reserve(store, "b", 1, 1, cost=40, budgets=CAP)  # 30 + 40 + 40 > 100
    assert (refused.outcome, refused.budget_index, refused.budgets) == (
        "budget_exceeded", 0, ((30, 40),),
    )  # fmt: skip
    assert reserve(store, "c", 1, 2, cost=30, budgets=CAP).outcome == "ok"  # exactly 100
    # release frees its share of the budget
    store.settle(team_id=T, model_id=M, request_id="c", tokens=0, member="", event_ms=0,
                 now_ms=3, recount=False)  # fmt: skip
    assert store.budget_held(team_id=T, tag="b1:0", now_ms=4) == 40
    # settle frees the hold; the committed spend arrives through the mirror
    store.budget_spent_set(team_id=T, tag="b1:0", spent=55)
    store.settle(team_id=T, model_id=M, request_id="a", tokens=1, member="u:1", event_ms=5,
                 now_ms=5)  # fmt: skip
    assert store.budget_held(team_id=T, tag="b1:0", now_ms=6) == 0
    # expiry frees it too
    assert reserve(store, "d", 1, 10, cost=45, budgets=CAP).outcome == "ok"  # 55 + 45
    assert reserve(store, "e", 1, 11, cost=1, budgets=CAP).outcome == "budget_exceeded"
    assert store.budget_held(team_id=T, tag="b1:0", now_ms=10 + HOLD_TTL_MS) == 0
    assert reserve(store, "e", 1, 10 + HOLD_TTL_MS, cost=45, budgets=CAP).outcome == "ok"


def test_a_budget_refusal_holds_nothing_anywhere(store):
    store.set_balance(team_id=T, balance=10**9, version=1)
    store.budget_spent_set(team_id=T, tag="b1:0", spent=0)
    store.budget_spent_set(team_id=T, tag="b2:0", spent=95)
    both = [("b1:0", 100), ("b2:0", 100)]
    refused = reserve(store, "a", 50, 0, cost=10, budgets=both)
    assert (refused.outcome, refused.budget_index) == ("budget_exceeded", 1)
    assert store.held(team_id=T, now_ms=1) == 0
    assert store.budget_held(team_id=T, tag="b1:0", now_ms=1) == 0
    assert store.window_used(team_id=T, model_id=M, now_ms=1) == 0


def test_a_moved_epoch_answers_stale_and_changes_nothing(store):
    store.set_balance(team_id=T, balance=100, version=1)
    epoch = store.epoch(team_id=T)
    assert reserve(store, "a", 1, 0, cost=10, epoch=epoch).outcome == "ok"
    store.epoch_bump(team_id=T)
    assert reserve(store, "b", 1, 1, cost=10, epoch=epoch).outcome == "stale"
    assert store.held(team_id=T, now_ms=2) == 10  # only "a"
    assert reserve(store, "b", 1, 1, cost=10, epoch=store.epoch(team_id=T)).outcome == "ok"


def test_scripts_the_server_forgot_are_loaded_again():
    """Redis restarted or SCRIPT FLUSH: the pipelined commit finds its scripts missing, loads
    them and applies every part once."""
    client = caches["default"]._cache.get_client(write=True)
    client.flushdb()
    store = RedisGate(client)
    store.set_balance(team_id=T, balance=100, version=1)
    reserve(store, "a", 10, 0, cost=30)
    client.script_flush()
    store.usage_commit(team_id=T, balance=(70, 2), budget_spends=[("b1:0", 30)],
                       items=[{"model_id": M, "request_id": "a", "tokens": 7, "member": "u:1",
                               "event_ms": 1}], now_ms=2)  # fmt: skip
    assert store.held(team_id=T, now_ms=3) == 0
    assert store.window_used(team_id=T, model_id=M, now_ms=3) == 7
    assert reserve(store, "b", 1, 4, cost=71).outcome == "insufficient"  # the balance is 70
