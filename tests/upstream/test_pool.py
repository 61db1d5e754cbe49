"""Unit tests of the upstream pool: selection order, weights, priorities, cooldowns, disable/re-probe, admin report.

Every test uses a fake clock and the real SQLite store in tmp_path, so state goes through the same
queries the workers use.
"""

import random
from collections import Counter

import pytest

from relay.config import Settings, Upstream
from relay.errors import NotFound, ResourceExhausted, Unavailable
from relay.store import StoreError
from relay.store.sqlite import SqliteStore
from relay.upstream.pool import MAX_BACKOFF, Pool, key_id, mask
from tests.support import START


class FailingStore:
    """A store whose backend is down: every call raises StoreError."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise StoreError(f"{name}: backend unreachable")
        return fail


def make_pool(store, clock, *upstreams, seed=7, **settings):
    return Pool(Settings(upstreams=tuple(upstreams), **settings), store, clock=clock, rng=random.Random(seed))


def keys_of(targets):
    return [target.key for target in targets]


def by_key(pool, key):
    return next(target for target in pool.targets_by_id.values() if target.key == key)


GOOGLE = Upstream(name="google", url="http://google.test", keys=("g-key-1", "g-key-2", "g-key-3"))


# --- selection ----------------------------------------------------------------------------------------------------


def test_keys_rotate_between_requests(store, clock):
    pool = make_pool(store, clock, GOOGLE)
    firsts = [pool.plan("gemini-2.5-flash")[0].key for _ in range(6)]
    assert sorted(firsts[:3]) == ["g-key-1", "g-key-2", "g-key-3"]
    assert firsts[3:] == firsts[:3]
    # Each plan lists every key once, in rotation order from its first key.
    plan = keys_of(pool.plan("gemini-2.5-flash"))
    start = GOOGLE.keys.index(plan[0])
    assert plan == list(GOOGLE.keys[start:] + GOOGLE.keys[:start])


def test_lower_priority_tier_is_tried_first(store, clock):
    backup = Upstream(name="backup", url="http://backup.test", keys=("b-key-1",), priority=10)
    primary = Upstream(name="primary", url="http://primary.test", keys=("p-key-1", "p-key-2"), priority=1)
    pool = make_pool(store, clock, backup, primary)
    for _ in range(5):
        plan = pool.plan("gemini-2.5-flash")
        assert [target.upstream.name for target in plan] == ["primary", "primary", "backup"]


def test_upstreams_of_one_tier_alternate_so_a_retry_changes_upstream(store, clock):
    one = Upstream(name="one", url="http://one.test", keys=("one-1", "one-2"))
    two = Upstream(name="two", url="http://two.test", keys=("two-1", "two-2", "two-3"))
    pool = make_pool(store, clock, one, two)
    plan = pool.plan("gemini-2.5-flash")
    names = [target.upstream.name for target in plan]
    assert names[0] != names[1] and names[2] != names[3]
    assert sorted(names) == ["one", "one", "two", "two", "two"]


def test_weights_share_first_attempts_in_proportion(store, clock):
    heavy = Upstream(name="heavy", url="http://heavy.test", keys=("h-key",), weight=3)
    light = Upstream(name="light", url="http://light.test", keys=("l-key",), weight=1)
    pool = make_pool(store, clock, heavy, light, seed=1234)
    firsts = Counter(pool.plan("gemini-2.5-flash")[0].upstream.name for _ in range(4000))
    # Efraimidis–Spirakis: P(heavy first) = 3 / (3 + 1).
    assert 0.70 < firsts["heavy"] / 4000 < 0.80
    # The lighter upstream still follows as the fallback.
    assert {target.upstream.name for target in pool.plan("gemini-2.5-flash")} == {"heavy", "light"}


def test_equal_weights_share_evenly(store, clock):
    one = Upstream(name="one", url="http://one.test", keys=("one-key",))
    two = Upstream(name="two", url="http://two.test", keys=("two-key",))
    pool = make_pool(store, clock, one, two, seed=99)
    firsts = Counter(pool.plan("m")[0].upstream.name for _ in range(4000))
    assert 0.45 < firsts["one"] / 4000 < 0.55


def test_model_globs_choose_the_upstreams(store, clock):
    flash = Upstream(name="flash", url="http://flash.test", keys=("f-key",), models=("gemini-*-flash*",))
    pro = Upstream(name="pro", url="http://pro.test", keys=("p-key",), models=("gemini-*-pro", "gemini-exp-*"))
    pool = make_pool(store, clock, flash, pro)
    assert keys_of(pool.plan("gemini-2.5-flash-lite")) == ["f-key"]
    assert keys_of(pool.plan("gemini-2.5-pro")) == ["p-key"]
    assert keys_of(pool.plan("gemini-exp-1206")) == ["p-key"]
    # Calls about no model (models.list, cachedContents.list) may go to any upstream.
    assert sorted(keys_of(pool.plan(None))) == ["f-key", "p-key"]
    with pytest.raises(NotFound) as raised:
        pool.plan("gemma-3-27b-it")
    assert raised.value.status == "NOT_FOUND" and "gemma-3-27b-it" in raised.value.message


# --- cooldowns ----------------------------------------------------------------------------------------------------


def test_429_cools_the_key_for_google_retry_delay(store, clock):
    pool = make_pool(store, clock, GOOGLE)
    cooled = by_key(pool, "g-key-2")
    pool.record(cooled, "rate_limited", retry_delay=34.4)
    for _ in range(6):
        assert "g-key-2" not in keys_of(pool.plan("gemini-2.5-flash"))
    clock.advance(34.3)
    assert "g-key-2" not in keys_of(pool.plan("gemini-2.5-flash"))
    clock.advance(0.2)
    assert "g-key-2" in keys_of(pool.plan("gemini-2.5-flash"))


def test_429_without_retry_info_backs_off_exponentially_until_a_success(store, clock):
    pool = make_pool(store, clock, GOOGLE, cooldown_base=4.0)
    target = by_key(pool, "g-key-1")
    waits = []
    for _ in range(4):
        pool.record(target, "rate_limited")
        waits.append(store.blocked_keys(clock())[target.key_id][0] - clock())
        clock.advance(waits[-1] + 0.01)
    assert waits == pytest.approx([4.0, 8.0, 16.0, 32.0])
    pool.record(target, "ok")
    pool.record(target, "rate_limited")
    assert store.blocked_keys(clock())[target.key_id][0] - clock() == pytest.approx(4.0)


def test_backoff_is_capped(store, clock):
    pool = make_pool(store, clock, GOOGLE, cooldown_base=100.0)
    target = by_key(pool, "g-key-1")
    for _ in range(5):
        pool.record(target, "rate_limited")
        clock.advance(MAX_BACKOFF + 1)
    pool.record(target, "rate_limited")
    assert store.blocked_keys(clock())[target.key_id][0] - clock() == pytest.approx(MAX_BACKOFF)


def test_server_and_connection_errors_do_not_block_the_key(store, clock):
    pool = make_pool(store, clock, GOOGLE)
    pool.record(by_key(pool, "g-key-1"), "server_error")
    pool.record(by_key(pool, "g-key-1"), "connection_error")
    pool.record(by_key(pool, "g-key-1"), "caller_error")
    assert store.blocked_keys(clock()) == {}
    assert len(pool.plan("gemini-2.5-flash")) == 3


def test_every_key_cooling_answers_429_with_the_first_free_time(store, clock):
    pool = make_pool(store, clock, GOOGLE)
    for key, delay in (("g-key-1", 40.0), ("g-key-2", 12.5), ("g-key-3", 90.0)):
        pool.record(by_key(pool, key), "rate_limited", retry_delay=delay)
    with pytest.raises(ResourceExhausted) as raised:
        pool.plan("gemini-2.5-flash")
    error = raised.value.to_dict()["error"]
    assert error["code"] == 429 and error["status"] == "RESOURCE_EXHAUSTED"
    [retry] = [detail for detail in error["details"] if detail["@type"].endswith("google.rpc.RetryInfo")]
    assert retry["retryDelay"] == "12.5s"
    assert raised.value.headers["Retry-After"] == "13"
    clock.advance(12.6)
    assert keys_of(pool.plan("gemini-2.5-flash")) == ["g-key-2"]


def test_cooling_and_disabled_mix_still_answers_429(store, clock):
    pool = make_pool(store, clock, GOOGLE)
    pool.record(by_key(pool, "g-key-1"), "key_invalid")
    pool.record(by_key(pool, "g-key-2"), "key_invalid")
    pool.record(by_key(pool, "g-key-3"), "rate_limited", retry_delay=20.0)
    with pytest.raises(ResourceExhausted) as raised:
        pool.plan("gemini-2.5-flash")
    assert raised.value.details[0]["retryDelay"] == "20s"


def test_every_key_disabled_answers_503(store, clock):
    pool = make_pool(store, clock, GOOGLE)
    for key in GOOGLE.keys:
        pool.record(by_key(pool, key), "key_invalid")
    with pytest.raises(Unavailable) as raised:
        pool.plan("gemini-2.5-flash")
    assert raised.value.to_dict()["error"]["status"] == "UNAVAILABLE"


def test_only_the_blocked_tier_is_skipped(store, clock):
    primary = Upstream(name="primary", url="http://primary.test", keys=("p-key",), priority=0)
    backup = Upstream(name="backup", url="http://backup.test", keys=("b-key",), priority=1)
    pool = make_pool(store, clock, primary, backup)
    pool.record(by_key(pool, "p-key"), "rate_limited", retry_delay=30.0)
    assert keys_of(pool.plan("m")) == ["b-key"]


# --- disable and re-probe -----------------------------------------------------------------------------------------


def test_invalid_key_is_disabled_then_reprobed(store, clock):
    pool = make_pool(store, clock, GOOGLE, reprobe_interval=600.0)
    revoked = by_key(pool, "g-key-3")
    pool.record(revoked, "key_invalid")
    assert store.blocked_keys(clock())[revoked.key_id] == (START + 600.0, "disabled")
    clock.advance(599.0)
    assert "g-key-3" not in keys_of(pool.plan("m"))
    clock.advance(1.5)
    # Re-probe: the key is offered again; if it still fails it is disabled for another interval.
    assert "g-key-3" in keys_of(pool.plan("m"))
    pool.record(revoked, "key_invalid")
    assert store.blocked_keys(clock())[revoked.key_id] == (clock() + 600.0, "disabled")


def test_a_disabled_key_stays_disabled_through_a_429(store, clock):
    pool = make_pool(store, clock, GOOGLE, reprobe_interval=600.0)
    target = by_key(pool, "g-key-1")
    pool.record(target, "key_invalid")
    pool.record(target, "rate_limited", retry_delay=5.0)
    assert store.blocked_keys(clock())[target.key_id] == (START + 600.0, "disabled")


# --- pinned keys (context caches) ---------------------------------------------------------------------------------


def test_pinned_key_is_the_only_target(store, clock):
    pool = make_pool(store, clock, GOOGLE)
    owner = by_key(pool, "g-key-2")
    assert pool.plan("gemini-2.5-flash", pinned_key_id=owner.key_id) == [owner]
    pool.record(owner, "rate_limited", retry_delay=9.0)
    with pytest.raises(ResourceExhausted) as raised:
        pool.plan("gemini-2.5-flash", pinned_key_id=owner.key_id)
    assert raised.value.details[0]["retryDelay"] == "9s"
    with pytest.raises(Unavailable):
        pool.plan("gemini-2.5-flash", pinned_key_id="google:000000000000")


# --- shared state and store failures ------------------------------------------------------------------------------


def test_workers_sharing_the_database_skip_a_key_another_cooled(tmp_path, clock):
    path = str(tmp_path / "shared.db")
    first_store, second_store = SqliteStore(path), SqliteStore(path)
    first_worker = make_pool(first_store, clock, GOOGLE, seed=1)
    second_worker = make_pool(second_store, clock, GOOGLE, seed=2)
    first_worker.record(by_key(first_worker, "g-key-1"), "rate_limited", retry_delay=30.0)
    for _ in range(6):
        assert "g-key-1" not in keys_of(second_worker.plan("m"))
    first_store.close()
    second_store.close()


def test_store_outage_fails_open(clock):
    pool = make_pool(FailingStore(), clock, GOOGLE)
    assert sorted(keys_of(pool.plan("m"))) == sorted(GOOGLE.keys)
    pool.record(by_key(pool, "g-key-1"), "rate_limited", retry_delay=5.0)  # logged, not raised


def test_key_ids_and_masks_never_hold_the_key():
    identifier = key_id("google", "AIzaSyA-secret-key-9876")
    assert identifier.startswith("google:") and "secret" not in identifier and "9876" not in identifier
    assert identifier == key_id("google", "AIzaSyA-secret-key-9876") != key_id("other", "AIzaSyA-secret-key-9876")
    assert mask("AIzaSyA-secret-key-9876") == "…9876"


# --- counters and the admin report --------------------------------------------------------------------------------


def test_counts_are_batched_then_flushed(store, clock):
    pool = make_pool(store, clock, GOOGLE)
    target = by_key(pool, "g-key-1")
    for outcome in ("ok", "ok", "server_error", "ok"):
        pool.record(target, outcome)
    assert store.key_report() == {}  # nothing written per request
    pool.flush_counts()
    counters = store.key_report()[target.key_id]["counters"]
    assert counters == {"requests": 4, "failures": 1, "server_error": 1}
    pool.flush_counts()  # nothing new: nothing written
    assert store.key_report()[target.key_id]["counters"]["requests"] == 4


def test_counts_survive_a_failed_flush(tmp_path, clock):
    store = SqliteStore(str(tmp_path / "relay.db"))
    pool = make_pool(store, clock, GOOGLE)
    target = by_key(pool, "g-key-1")
    pool.record(target, "ok")
    pool.store = FailingStore()
    with pytest.raises(StoreError):
        pool.flush_counts()
    pool.record(target, "ok")
    pool.store = store
    pool.flush_counts()
    assert store.key_report()[target.key_id]["counters"]["requests"] == 2
    store.close()


def test_report_masks_keys_and_shows_state(store, clock):
    pool = make_pool(store, clock, GOOGLE, Upstream(name="backup", url="http://b.test", keys=("b-key-0042",),
                                                    priority=5, weight=2))
    pool.record(by_key(pool, "g-key-1"), "rate_limited", retry_delay=30.0)
    pool.record(by_key(pool, "g-key-2"), "key_invalid")
    pool.record(by_key(pool, "g-key-3"), "ok")
    pool.flush_counts()
    report = pool.report()
    assert [upstream["name"] for upstream in report] == ["google", "backup"]
    assert report[1]["priority"] == 5 and report[1]["weight"] == 2 and report[1]["keys"][0]["key"] == "…0042"
    keys = {entry["key"]: entry for entry in report[0]["keys"]}
    assert set(keys) == {"…ey-1", "…ey-2", "…ey-3"}
    assert keys["…ey-1"]["state"] == "cooling" and keys["…ey-1"]["until"] == START + 30.0
    assert keys["…ey-2"]["state"] == "disabled" and keys["…ey-2"]["until"] == START + 600.0
    assert keys["…ey-3"]["state"] == "healthy" and keys["…ey-3"]["until"] is None
    assert keys["…ey-1"]["counters"]["rate_limited"] == 1 and keys["…ey-3"]["counters"]["requests"] == 1
    assert "g-key" not in repr(report)

    clock.advance(31.0)
    keys = {entry["key"]: entry for entry in pool.report()[0]["keys"]}
    assert keys["…ey-1"]["state"] == "healthy" and keys["…ey-1"]["until"] is None
    assert keys["…ey-1"]["last_failure_reason"] == "429"
