"""This module provides the Redis key-state tests: blocked_keys keeps its answer until the version moves,
and another instance's writes still show on the next call."""

import pytest
import redis

from relay.store import open_store

T = 1_700_000_000.0


@pytest.fixture
def instances(redis_url, tmp_path):
    """Two stores on the same redis-server, as two relay instances would be, and an admin connection."""
    admin = redis.Redis.from_url(redis_url)
    admin.flushall()
    instance_a = open_store(redis_url, str(tmp_path / "a.sqlite3"))
    instance_b = open_store(redis_url, str(tmp_path / "b.sqlite3"))
    yield instance_a, instance_b, admin
    instance_a.close()
    instance_b.close()
    admin.close()


def script_runs(admin) -> int:
    stats = admin.info("commandstats")
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))


def test_two_redis_instances_see_each_others_key_states_at_once(instances):
    instance_a, instance_b, _admin = instances
    assert instance_a.blocked_keys(T) == {}  # remembered by a
    instance_b.cool_down("google:a1", T + 30, "429", T)
    assert instance_a.blocked_keys(T) == {"google:a1": (T + 30, "cooling")}
    instance_a.disable("google:b2", T + 600, "403", T)  # a's own write
    assert instance_a.blocked_keys(T + 1) == {"google:a1": (T + 30, "cooling"), "google:b2": (T + 600, "disabled")}
    assert instance_a.blocked_keys(T + 31) == {"google:b2": (T + 600, "disabled")}  # a cooldown runs out
    assert instance_a.blocked_keys(T) == {"google:a1": (T + 30, "cooling"), "google:b2": (T + 600, "disabled")}
    instance_b.clear_key("google:b2")
    assert instance_a.blocked_keys(T + 31) == {}


def test_redis_blocked_keys_reads_the_states_again_only_after_a_change(instances):
    instance_a, instance_b, admin = instances
    instance_b.cool_down("google:a1", T + 30, "429", T)
    assert instance_a.blocked_keys(T) == {"google:a1": (T + 30, "cooling")}
    admin.config_resetstat()
    for step in range(5):
        assert instance_a.blocked_keys(T + step) == {"google:a1": (T + 30, "cooling")}
    instance_b.add_key_counts({"google:a1": {"requests": 3}}, T)  # counters are not key states
    assert instance_a.blocked_keys(T + 29.5) == {"google:a1": (T + 30, "cooling")}
    assert instance_a.blocked_keys(T + 30) == {}  # run out by the clock: no read needed
    assert script_runs(admin) == 0
    assert admin.info("commandstats")["cmdstat_get"]["calls"] == 7
    instance_b.cool_down("google:a1", T + 90, "429 again", T + 40)
    assert instance_a.blocked_keys(T + 40) == {"google:a1": (T + 90, "cooling")}
    assert script_runs(admin) == 2  # b's cool_down and a's one read


def test_redis_key_state_answers_do_not_outlive_lost_redis_data(instances):
    instance_a, instance_b, admin = instances
    instance_b.cool_down("google:a1", T + 30, "429", T)
    assert instance_a.blocked_keys(T) == {"google:a1": (T + 30, "cooling")}
    admin.flushall()  # as a Redis restart without persistence would; a counter would start again at 1
    instance_b.cool_down("google:c3", T + 60, "429", T)
    assert instance_a.blocked_keys(T) == {"google:c3": (T + 60, "cooling")}
    admin.flushall()
    assert instance_a.blocked_keys(T) == {}
