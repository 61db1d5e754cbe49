"""This module provides the store contract tests, run unchanged against the SQLite and the Redis backend."""

import math
import multiprocessing
import os
import time

import pytest
import redis

from relay.store import KeyExists, StoreError, open_store

T = 1_700_000_000.0  # a fixed "now"; the store never reads the clock for these


# Upstream key health

def test_cool_down_blocks_until_strictly_after_now(store):
    assert store.blocked_keys(T) == {}
    store.cool_down("google:a1", T + 30, "429", T)
    assert store.blocked_keys(T) == {"google:a1": (T + 30, "cooling")}
    assert store.blocked_keys(T + 29.5) == {"google:a1": (T + 30, "cooling")}
    assert store.blocked_keys(T + 30) == {}


def test_cool_down_keeps_the_later_until(store):
    store.cool_down("google:a1", T + 60, "429", T)
    store.cool_down("google:a1", T + 10, "429 again", T + 1)
    assert store.blocked_keys(T + 1) == {"google:a1": (T + 60, "cooling")}
    store.cool_down("google:a1", T + 90.25, "503", T + 2)
    assert store.blocked_keys(T + 2) == {"google:a1": (T + 90.25, "cooling")}
    report = store.key_report()["google:a1"]
    assert report["counters"] == {"cooldowns": 3}
    assert (report["reason"], report["last_failure_reason"], report["last_failure_at"]) == ("503", "503", T + 2)


def test_disable_sets_until_exactly(store):
    store.disable("google:b2", T + 600, "403 API key invalid", T)
    assert store.blocked_keys(T) == {"google:b2": (T + 600, "disabled")}
    store.disable("google:b2", T + 100, "still invalid", T + 1)
    assert store.blocked_keys(T + 1) == {"google:b2": (T + 100, "disabled")}
    assert store.key_report()["google:b2"]["counters"] == {"disables": 2}


def test_cool_down_does_not_downgrade_a_disabled_key(store):
    store.disable("google:b2", T + 600, "403", T)
    store.cool_down("google:b2", T + 30, "429", T + 1)
    assert store.blocked_keys(T + 1) == {"google:b2": (T + 600, "disabled")}
    assert store.key_report()["google:b2"]["reason"] == "403"
    store.cool_down("google:b2", T + 730, "429 on re-probe", T + 700)
    assert store.blocked_keys(T + 700) == {"google:b2": (T + 730, "cooling")}


def test_clear_key_keeps_history(store):
    store.cool_down("google:a1", T + 60, "429", T)
    store.cool_down("google:c3", T + 60, "429", T)
    store.clear_key("google:a1")
    store.clear_key("google:never-seen")
    assert store.blocked_keys(T) == {"google:c3": (T + 60, "cooling")}
    report = store.key_report()
    assert set(report) == {"google:a1", "google:c3"}
    assert report["google:a1"] == {
        "state": "healthy", "until": 0.0, "reason": None, "last_failure_at": T,
        "last_failure_reason": "429", "last_used_at": None, "counters": {"cooldowns": 1},
    }


def test_add_key_counts_accumulates(store):
    store.add_key_counts({"google:a1": {"requests": 12, "failures": 1, "status_429": 1},
                          "google:b2": {"requests": 3}}, T)
    store.add_key_counts({"google:a1": {"requests": 5, "failures": 0}}, T + 10)
    report = store.key_report()
    assert report["google:a1"] == {
        "state": "healthy", "until": 0.0, "reason": None, "last_failure_at": T, "last_failure_reason": None,
        "last_used_at": T + 10, "counters": {"requests": 17, "failures": 1, "status_429": 1},
    }
    assert report["google:b2"]["counters"] == {"requests": 3}
    store.cool_down("google:b2", T + 50, "429", T + 20)
    report = store.key_report()["google:b2"]
    assert (report["state"], report["until"], report["last_used_at"]) == ("cooling", T + 50, T)


def test_two_redis_instances_share_cooldowns(redis_url, tmp_path):
    with redis.Redis.from_url(redis_url) as admin:
        admin.flushall()
    instance_a = open_store(redis_url, str(tmp_path / "a.sqlite3"))
    instance_b = open_store(redis_url, str(tmp_path / "b.sqlite3"))
    instance_a.cool_down("google:a1", T + 30, "429", T)
    instance_b.disable("google:b2", T + 600, "403", T)
    expected = {"google:a1": (T + 30, "cooling"), "google:b2": (T + 600, "disabled")}
    assert instance_a.blocked_keys(T) == instance_b.blocked_keys(T) == expected
    instance_b.clear_key("google:a1")
    assert instance_a.blocked_keys(T) == {"google:b2": (T + 600, "disabled")}


def test_two_sqlite_workers_see_each_others_key_states_at_once(tmp_path):
    """Each worker remembers its last blocked_keys answer; a commit by another one must still show at once."""
    path = str(tmp_path / "shared.sqlite3")
    worker_a, worker_b = open_store(None, path), open_store(None, path)
    assert worker_a.blocked_keys(T) == {}  # remembered by a
    worker_b.cool_down("google:a1", T + 30, "429", T)
    assert worker_a.blocked_keys(T) == {"google:a1": (T + 30, "cooling")}
    worker_a.disable("google:b2", T + 600, "403", T)  # a's own write
    assert worker_a.blocked_keys(T + 1) == {"google:a1": (T + 30, "cooling"), "google:b2": (T + 600, "disabled")}
    assert worker_a.blocked_keys(T + 31) == {"google:b2": (T + 600, "disabled")}  # a cooldown runs out
    assert worker_a.blocked_keys(T) == {"google:a1": (T + 30, "cooling"), "google:b2": (T + 600, "disabled")}
    worker_b.clear_key("google:b2")
    assert worker_a.blocked_keys(T + 31) == {}


# Context-cache ownership

def test_caches_expire_by_now_and_filter_by_client(store):
    wall = float(int(time.time()))  # caches also get a wall-clock TTL in Redis: use real time, now
    owner_a = {"upstream": "google", "key_id": "google:a1", "client": "alice"}
    owner_b = {"upstream": "google", "key_id": "google:b2", "client": "bob"}
    store.put_cache("cachedContents/z", owner_a, wall + 3600)
    store.put_cache("cachedContents/a", owner_a, wall + 60)
    store.put_cache("cachedContents/b", owner_b, wall + 3600)
    assert store.get_cache("cachedContents/z", wall) == owner_a
    assert store.get_cache("cachedContents/missing", wall) is None
    assert store.list_caches(None, wall) == [
        ("cachedContents/a", owner_a), ("cachedContents/b", owner_b), ("cachedContents/z", owner_a)]
    assert store.list_caches("alice", wall) == [("cachedContents/a", owner_a), ("cachedContents/z", owner_a)]
    assert store.get_cache("cachedContents/a", wall + 60) is None
    assert store.list_caches("alice", wall + 61) == [("cachedContents/z", owner_a)]
    store.delete_cache("cachedContents/z")
    store.delete_cache("cachedContents/never")
    assert store.get_cache("cachedContents/z", wall) is None
    assert store.list_caches(None, wall + 61) == [("cachedContents/b", owner_b)]


def test_put_cache_replaces_the_owner(store):
    wall = float(int(time.time()))  # caches also get a wall-clock TTL in Redis: use real time, now
    store.put_cache("cachedContents/x", {"client": "alice"}, wall + 60)
    store.put_cache("cachedContents/x", {"client": "bob"}, wall + 120)
    assert store.get_cache("cachedContents/x", wall + 90) == {"client": "bob"}
    assert store.list_caches("alice", wall) == []


# Client keys

def client_record(name, key_hash, **fields):
    return {"name": name, "key_hash": key_hash, "created": T, **fields}


def test_client_keys_round_trip(store):
    alice = client_record("alice", "aa" * 32, rpm=60, tpm=None, models=["gemini-2.5-flash"], revoked=False)
    store.add_client_key(alice)
    store.add_client_key(client_record("bob", "bb" * 32))
    assert store.client_key_by_hash("aa" * 32) == {**alice, "last_used": None}
    assert store.client_key_by_hash("cc" * 32) is None
    assert [record["name"] for record in store.list_client_keys()] == ["alice", "bob"]
    with pytest.raises(KeyExists):
        store.add_client_key(client_record("alice", "dd" * 32))
    with pytest.raises(KeyExists):
        store.add_client_key(client_record("carol", "bb" * 32))
    assert store.client_key_by_hash("dd" * 32) is None
    assert len(store.list_client_keys()) == 2


def test_revoke_and_touch_client_keys(store):
    store.add_client_key(client_record("alice", "aa" * 32, revoked=False))
    store.add_client_key(client_record("bob", "bb" * 32))
    assert store.revoke_client_key("alice") is True
    assert store.revoke_client_key("nobody") is False
    assert store.client_key_by_hash("aa" * 32)["revoked"] is True
    store.touch_client_keys({"alice": T + 5, "bob": T + 7, "nobody": T})
    store.touch_client_keys({"alice": T + 3})  # a late, older batch must not move it back
    store.touch_client_keys({})
    assert {record["name"]: record["last_used"] for record in store.list_client_keys()} == {
        "alice": T + 5, "bob": T + 7}


# Limits

def test_take_refills_and_reports_the_wait(store):
    assert store.peek("alice:rpm", 10, 2.0, T) == 10
    assert store.take("alice:rpm", 10, 2.0, 10, T) == 0.0
    assert store.take("alice:rpm", 10, 2.0, 1, T) == pytest.approx(0.5)
    assert store.peek("alice:rpm", 10, 2.0, T) == 0  # the refusal changed nothing
    assert store.take("alice:rpm", 10, 2.0, 1, T + 0.25) == pytest.approx(0.25)
    assert store.take("alice:rpm", 10, 2.0, 1, T + 0.5) == 0.0
    assert store.peek("alice:rpm", 10, 2.0, T + 1.5) == pytest.approx(2.0)
    assert store.peek("alice:rpm", 10, 2.0, T + 1000) == 10  # capped at capacity
    assert store.peek("bob:rpm", 10, 2.0, T) == 10  # buckets are independent


def test_take_that_can_never_succeed_waits_forever(store):
    assert store.take("alice:tpm", 100, 1.0, 101, T) == math.inf
    assert store.take("alice:daily", 3, 0.0, 3, T) == 0.0
    assert store.take("alice:daily", 3, 0.0, 1, T + 1e6) == math.inf


def test_debit_goes_into_debt_and_take_waits_it_out(store):
    assert store.take("alice:tpm", 10, 1.0, 4, T) == 0.0
    assert store.debit("alice:tpm", 10, 1.0, 21, T) == pytest.approx(-15)
    assert store.take("alice:tpm", 10, 1.0, 1, T + 10) == pytest.approx(6.0)
    assert store.take("alice:tpm", 10, 1.0, 1, T + 16) == 0.0
    assert store.peek("alice:tpm", 10, 1.0, T + 16) == pytest.approx(0.0)
    assert store.debit("alice:tpm", 10, 1.0, 1000, T + 16) == pytest.approx(-100)  # debt is floored
    assert store.debit("alice:tpm", 10, 1.0, -500, T + 16) == 10  # a refund never overfills


def test_counters_count_and_expire(store):
    assert store.get_counter("alice:day") == 0
    assert store.incr("alice:day", 1, 60) == 1
    assert store.incr("alice:day", 5, 60) == 6
    assert store.get_counter("alice:day") == 6
    assert store.incr("alice:second", 2, 1) == 2
    time.sleep(1.1)
    assert store.get_counter("alice:second") == 0
    assert store.incr("alice:second", 1, 1) == 1
    assert store.get_counter("alice:day") == 6


# Usage records

def usage(ts, client="alice", model="gemini-2.5-flash", status=200, **fields):
    return {"ts": ts, "request_id": f"req-{ts}", "client": client, "requested_model": model,
            "upstream_model": model, "upstream": "google", "key_id": "google:a1", "status": status,
            "prompt_tokens": 10, "candidates_tokens": 5, "total_tokens": 15, "route": "generateContent", **fields}


def test_usage_rows_are_complete_and_newest_first(store):
    store.write_usage([])
    store.write_usage([usage(T), usage(T + 1, client="bob", modalities={"TEXT": 10}, streamed=True),
                       usage(T + 2, latency_ms=12.5, upstream_status=429, status=429)])
    rows = store.usage_rows(0)
    assert [row["ts"] for row in rows] == [T + 2, T + 1, T]
    assert rows[0] == {
        "ts": T + 2, "request_id": f"req-{T + 2}", "client": "alice", "requested_model": "gemini-2.5-flash",
        "upstream_model": "gemini-2.5-flash", "upstream": "google", "key_id": "google:a1", "status": 429,
        "upstream_status": 429, "prompt_tokens": 10, "candidates_tokens": 5, "thoughts_tokens": 0,
        "cached_tokens": 0, "tool_use_tokens": 0, "total_tokens": 15, "modalities": {}, "latency_ms": 12.5,
        "streamed": False, "aborted": False, "route": "generateContent", "batch": False, "door": None,
    }
    assert rows[1]["modalities"] == {"TEXT": 10} and rows[1]["streamed"] is True
    assert [row["ts"] for row in store.usage_rows(T + 1)] == [T + 2, T + 1]
    assert [row["ts"] for row in store.usage_rows(0, client="alice")] == [T + 2, T]
    assert [row["ts"] for row in store.usage_rows(0, limit=1)] == [T + 2]


def test_query_usage_groups(store):
    day_two = T + 86400
    store.write_usage([
        usage(T, model="gemini-2.5-pro", thoughts_tokens=7), usage(T + 1, status=500),
        usage(day_two, client="bob", cached_tokens=4, tool_use_tokens=2), usage(T - 10),
    ])
    by_model = store.query_usage(T, "model", None)
    assert by_model == [
        {"model": "gemini-2.5-flash", "requests": 2, "errors": 1, "prompt_tokens": 20, "candidates_tokens": 10,
         "thoughts_tokens": 0, "cached_tokens": 4, "tool_use_tokens": 2, "total_tokens": 30},
        {"model": "gemini-2.5-pro", "requests": 1, "errors": 0, "prompt_tokens": 10, "candidates_tokens": 5,
         "thoughts_tokens": 7, "cached_tokens": 0, "tool_use_tokens": 0, "total_tokens": 15},
    ]
    assert [(row["key"], row["requests"]) for row in store.query_usage(T, "key", None)] == [("alice", 2), ("bob", 1)]
    assert [(row["day"], row["requests"]) for row in store.query_usage(T, "day", None)] == [
        ("2023-11-14", 2), ("2023-11-15", 1)]
    assert [(row["status"], row["errors"]) for row in store.query_usage(0, "status", None)] == [(200, 0), (500, 1)]
    assert [(row["upstream"], row["requests"]) for row in store.query_usage(0, "upstream", "alice")] == [
        ("google", 3)]
    assert store.query_usage(day_two + 1, "model", None) == []
    store.write_usage([usage(T + 2, route="batchGenerateContent", batch=True, total_tokens=100)])
    assert [(row["kind"], row["requests"], row["total_tokens"]) for row in store.query_usage(T, "kind", None)] == [
        ("batch", 1, 100), ("interactive", 3, 45)]
    assert [row["batch"] for row in store.usage_rows(T + 2) if row["ts"] == T + 2] == [True]
    with pytest.raises(ValueError):
        store.query_usage(0, "colour", None)


OLD_USAGE_TABLE = """
CREATE TABLE usage (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, request_id TEXT, client TEXT, requested_model TEXT,
    upstream_model TEXT, upstream TEXT, key_id TEXT, status INTEGER NOT NULL, upstream_status INTEGER,
    prompt_tokens INTEGER NOT NULL, candidates_tokens INTEGER NOT NULL, thoughts_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL, tool_use_tokens INTEGER NOT NULL, total_tokens INTEGER NOT NULL,
    modalities TEXT NOT NULL, latency_ms REAL NOT NULL, streamed INTEGER NOT NULL, aborted INTEGER NOT NULL,
    route TEXT);
INSERT INTO usage VALUES (1, 1700000000.0, 'old', 'alice', 'm', 'm', 'google', 'k', 200, 200, 1, 1, 0, 0, 0, 2,
    '{}', 1.0, 0, 0, 'generateContent');
"""


def test_sqlite_adds_the_batch_column_to_an_older_usage_table(tmp_path):
    import sqlite3

    from relay.store.sqlite import SqliteStore

    path = str(tmp_path / "old.sqlite3")
    with sqlite3.connect(path) as old:
        old.executescript(OLD_USAGE_TABLE)
    store = SqliteStore(path)
    try:
        store.write_usage([usage(T + 1, batch=True)])
        assert [(row["request_id"], row["batch"]) for row in store.usage_rows(0)] == [(f"req-{T + 1}", True),
                                                                                      ("old", False)]
    finally:
        store.close()


# Misc, failures, processes

def test_ping_close_and_lazy_reopen(store):
    assert store.ping() is True
    store.take("alice:rpm", 5, 0.0, 2, T)
    store.close()
    store.close()
    assert store.peek("alice:rpm", 5, 0.0, T) == 3


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_backend_failures_raise_store_error(backend, tmp_path):
    if backend == "redis":
        broken = open_store("redis://127.0.0.1:1/0", str(tmp_path / "unused"))
    else:
        broken = open_store(None, str(tmp_path / "no-such-dir" / "relay.sqlite3"))
    assert broken.ping() is False
    with pytest.raises(StoreError):
        broken.take("alice:rpm", 10, 1.0, 1, T)
    with pytest.raises(StoreError):
        broken.blocked_keys(T)


def test_store_works_in_a_forked_child(store):
    store.take("shared", 10, 0.0, 1, T)  # the parent has its connection open before the fork
    child_pid = os.fork()
    if child_pid == 0:
        exit_code = 1
        try:
            child_ok = store.take("shared", 10, 0.0, 2, T) == 0.0 and store.peek("shared", 10, 0.0, T) == 7
            store.cool_down("google:from-child", T + 30, "429", T)
            exit_code = 0 if child_ok else 2
        finally:
            os._exit(exit_code)
    _, status = os.waitpid(child_pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.peek("shared", 10, 0.0, T) == 7
    assert store.blocked_keys(T) == {"google:from-child": (T + 30, "cooling")}


HAMMER_PROCESSES = 4
HAMMER_CAPACITY = 25
HAMMER_ATTEMPTS = 20


def hammer_take(store_location, start_line, results):
    store = open_store(*store_location)
    store.ping()
    start_line.wait()
    results.put(sum(store.take("hammered", HAMMER_CAPACITY, 0.0, 1, T) == 0.0 for _ in range(HAMMER_ATTEMPTS)))
    store.close()


def test_take_is_atomic_across_processes(store_location):
    context = multiprocessing.get_context("spawn")
    start_line, results = context.Barrier(HAMMER_PROCESSES), context.Queue()
    workers = [context.Process(target=hammer_take, args=(store_location, start_line, results))
               for _ in range(HAMMER_PROCESSES)]
    for worker in workers:
        worker.start()
    successes = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    assert sum(successes) == HAMMER_CAPACITY
    assert open_store(*store_location).peek("hammered", HAMMER_CAPACITY, 0.0, T) == 0
