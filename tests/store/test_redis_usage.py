"""This module provides the usage-totals tests: exact past the Redis raw-row cap, and the same on both backends."""

import datetime
import random

import pytest

from relay.store.base import TOKEN_FIELDS, USAGE_GROUPS, usage_sort_key, usage_window_start
from relay.store.redis_store import RedisStore
from relay.store.sqlite import SqliteStore

# Small, so that most rows below are trimmed from the Redis raw rows and only the totals still hold them.
ROWS_CAP = 25
DAY = 1_700_006_400.0  # 2023-11-15T00:00:00Z
HOUR = 3600.0
# Names with a slash, quotes, a backslash and non-ASCII travel through JSON in Lua and back unchanged.
CLIENTS = ("alice", "bob", 'team/"ω"\\', None)
MODELS = (("gemini-2.5-flash-thinking", "gemini-2.5-flash"), ("gemini-2.5-pro", "gemini-2.5-pro"),
          ("tunedModels/模型-1", "tunedModels/模型-1"), (None, None))


def capped(store_location):
    """A store of the parametrized backend whose Redis side keeps only ROWS_CAP raw rows."""
    redis_url, sqlite_path = store_location
    return RedisStore(redis_url, usage_rows_cap=ROWS_CAP) if redis_url else SqliteStore(sqlite_path)


@pytest.fixture
def capped_store(store_location):
    opened = capped(store_location)
    yield opened
    opened.close()


def generated_rows(count: int, seed: int = 12) -> list[dict]:
    """Rows over three UTC days, every dimension varied, plus rows exactly on and just before boundaries."""
    chooser = random.Random(seed)
    rows = []
    for number in range(count):
        requested_model, upstream_model = chooser.choice(MODELS)
        rows.append({
            "ts": DAY - 86400 + chooser.uniform(0, 3 * 86400), "request_id": f"req-{number}",
            "client": chooser.choice(CLIENTS), "requested_model": requested_model, "upstream_model": upstream_model,
            "upstream": chooser.choice(("google", "vertex")), "key_id": "google:a1",
            "status": chooser.choice((200, 200, 200, 429, 500)),
            **{field: chooser.randrange(0, 5000) for field in TOKEN_FIELDS},
            "batch": chooser.random() < 0.2,
        })
    for ts in (DAY, DAY - 0.25, DAY + 5 * HOUR, DAY + 5 * HOUR - 1e-6):
        rows.append({"ts": ts, "client": "alice", "requested_model": "edge", "status": 200, "total_tokens": 3})
    return rows


def expected_usage(rows, since, group, client) -> list[dict]:
    """query_usage worked out by hand from the rows."""
    totals = {}
    for row in rows:
        if row["ts"] < since or (client is not None and row.get("client") != client):
            continue
        day = datetime.datetime.fromtimestamp(row["ts"], datetime.timezone.utc).strftime("%Y-%m-%d")
        kind = "batch" if row.get("batch") else "interactive"
        value = {"model": row.get("requested_model"), "key": row.get("client"), "day": day, "kind": kind}.get(
            group, row.get(group))
        total = totals.setdefault(value, {group: value, "requests": 0, "errors": 0, **dict.fromkeys(TOKEN_FIELDS, 0)})
        total["requests"] += 1
        total["errors"] += row.get("status", 0) >= 400
        for field in TOKEN_FIELDS:
            total[field] += row.get(field, 0)
    return sorted(totals.values(), key=lambda total: usage_sort_key(total[group]))


def write_in_batches(store, rows, batch_size=41):
    for start in range(0, len(rows), batch_size):
        store.write_usage(rows[start:start + batch_size])


# Windows starting on a whole hour: exact however many raw rows were trimmed.
WHOLE_HOUR_SINCES = (0, DAY - 86400, DAY, DAY + 5 * HOUR, DAY + 86400 + 17 * HOUR, DAY + 10 * 86400)


@pytest.mark.parametrize("since", WHOLE_HOUR_SINCES)
def test_usage_totals_stay_exact_past_the_raw_row_cap(capped_store, since):
    rows = generated_rows(400)
    write_in_batches(capped_store, rows)
    for group in USAGE_GROUPS:
        for client in (None, "alice", "nobody"):
            assert capped_store.query_usage(since, group, client) == expected_usage(rows, since, group, client), (
                group, client)


def test_usage_totals_from_any_since_within_the_kept_rows(capped_store):
    older = generated_rows(200)
    hour = DAY + 2 * 86400 + 9 * HOUR  # after every generated row, so these are the newest
    newest = [{"ts": hour + offset, "client": client, "requested_model": "gemini-2.5-flash", "status": status,
               "prompt_tokens": 7, "total_tokens": 9}
              for offset, client, status in ((100.0, "alice", 200), (200.5, "bob", 500), (1800.0, "alice", 429),
                                             (3599.9, None, 200), (3600.0, "alice", 200), (7300.25, "bob", 200))]
    write_in_batches(capped_store, older + newest)
    for since in (hour + 200.5, hour + 200.25, hour + 1800.000001, hour + 3599.95, hour + 3600.5, hour - 0.5):
        for group in ("key", "status", "day"):
            for client in (None, "alice"):
                assert capped_store.query_usage(since, group, client) == expected_usage(
                    older + newest, since, group, client), (since, group, client)


def test_the_usage_window_starts_on_a_whole_hour(capped_store):
    now = DAY + 7 * 86400 + 5 * HOUR + 1234.5
    assert usage_window_start(now, 7) == DAY + 5 * HOUR
    assert usage_window_start(DAY + 7 * 86400, 7) == DAY
    rows = generated_rows(150)
    write_in_batches(capped_store, rows)
    since = usage_window_start(DAY + 3 * 86400 + 1800, 2)
    assert capped_store.query_usage(since, "model", None) == expected_usage(rows, since, "model", None)


def test_redis_keeps_the_newest_rows_up_to_the_cap(redis_url):
    store = capped((redis_url, None))
    store._redis().flushdb()
    rows = generated_rows(60)
    write_in_batches(store, rows, batch_size=7)
    kept = store.usage_rows(0, limit=1000)
    assert [row["request_id"] for row in kept] == [
        row.get("request_id") for row in sorted(rows, key=lambda row: row["ts"], reverse=True)[:ROWS_CAP]]
    assert sum(row["requests"] for row in store.query_usage(0, "key", None)) == len(rows)
    store.close()


def test_redis_and_sqlite_answer_usage_queries_alike(redis_url, tmp_path):
    redis_store, sqlite_store = capped((redis_url, None)), SqliteStore(str(tmp_path / "same.sqlite3"))
    redis_store._redis().flushdb()
    rows = generated_rows(300, seed=99)
    for store in (redis_store, sqlite_store):
        write_in_batches(store, rows, batch_size=53)
    newest_ts = max(row["ts"] for row in rows)
    for since in (*WHOLE_HOUR_SINCES, newest_ts - 0.5, newest_ts):
        for group in USAGE_GROUPS:
            for client in (None, "bob"):
                assert redis_store.query_usage(since, group, client) == sqlite_store.query_usage(since, group, client)
    redis_store.close()
    sqlite_store.close()
