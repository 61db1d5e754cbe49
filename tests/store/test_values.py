"""This module provides the contract tests of the stores' short-lived values and of the usage rows' door,
run unchanged against the SQLite and the Redis backend."""

import sqlite3
import time

from relay.store.sqlite import SqliteStore

T = 1_700_000_000.0


def test_values_are_kept_until_they_expire(store):
    wall = time.time()
    assert store.get_values([], wall) == {}
    store.put_values({}, wall + 60)
    store.put_values({"a": "one", "b": "two ω"}, wall + 60)
    store.put_values({"c": "three"}, wall + 5)
    assert store.get_values(["a", "b", "c", "missing"], wall) == {"a": "one", "b": "two ω", "c": "three"}
    assert store.get_values(["c", "a"], wall + 5) == {"a": "one"}
    assert store.get_values(["a", "b"], wall + 60) == {}


def test_a_value_is_replaced_with_its_expiry(store):
    wall = time.time()
    store.put_values({"a": "old"}, wall + 5)
    store.put_values({"a": "new"}, wall + 60)
    assert store.get_values(["a"], wall + 10) == {"a": "new"}


def test_many_values_in_one_lookup(store):
    wall = time.time()
    values = {f"name-{number}": f"value-{number}" * 20 for number in range(1200)}
    store.put_values(values, wall + 60)
    names = [*values, "absent"]
    assert store.get_values(names, wall) == values


def test_usage_rows_keep_their_door_and_group_by_it(store):
    store.write_usage([
        {"ts": T, "client": "alice", "status": 200, "total_tokens": 5, "door": "openai"},
        {"ts": T + 1, "client": "alice", "status": 200, "total_tokens": 7, "door": "gemini"},
        {"ts": T + 2, "client": "alice", "status": 500, "total_tokens": 1, "door": "openai"},
        {"ts": T + 3, "client": "alice", "status": 200, "total_tokens": 2},  # written before doors were kept
    ])
    assert [row["door"] for row in store.usage_rows(0)] == [None, "openai", "gemini", "openai"]
    by_door = {row["door"]: (row["requests"], row["errors"], row["total_tokens"])
               for row in store.query_usage(0, "door", None)}
    assert by_door == {None: (1, 0, 2), "gemini": (1, 0, 7), "openai": (2, 1, 6)}


def test_an_old_sqlite_file_gains_the_door_column(tmp_path):
    path = str(tmp_path / "old.sqlite3")
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE usage (id INTEGER PRIMARY KEY, ts REAL NOT NULL, request_id TEXT, client TEXT,"
            " requested_model TEXT, upstream_model TEXT, upstream TEXT, key_id TEXT, status INTEGER NOT NULL,"
            " upstream_status INTEGER, prompt_tokens INTEGER NOT NULL, candidates_tokens INTEGER NOT NULL,"
            " thoughts_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL, tool_use_tokens INTEGER NOT NULL,"
            " total_tokens INTEGER NOT NULL, modalities TEXT NOT NULL, latency_ms REAL NOT NULL,"
            " streamed INTEGER NOT NULL, aborted INTEGER NOT NULL, route TEXT)")
        old.execute("INSERT INTO usage (ts, request_id, status, prompt_tokens, candidates_tokens, thoughts_tokens,"
                    " cached_tokens, tool_use_tokens, total_tokens, modalities, latency_ms, streamed, aborted)"
                    " VALUES (?, 'old', 200, 1, 1, 0, 0, 0, 2, '{}', 1.0, 0, 0)", (T,))
    store = SqliteStore(path)
    store.write_usage([{"ts": T + 1, "request_id": "new", "status": 200, "door": "openai"}])
    assert [(row["request_id"], row["door"]) for row in store.usage_rows(0)] == [("new", "openai"), ("old", None)]
    store.close()
    reopened = SqliteStore(path)  # a second open finds the column there
    assert len(reopened.usage_rows(0)) == 2
    reopened.close()
