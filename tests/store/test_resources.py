"""This module provides the contract tests of owned-resource records, run against SQLite and a real Redis, and the
migrations of each backend's cache records written before resources were generic."""

import multiprocessing
import sqlite3
import time

import orjson
import pytest
import redis

from relay.store import open_store
from relay.store.base import RESOURCE_KINDS
from relay.store.redis_store import RedisStore
from relay.store.sqlite import SqliteStore


def owner(client, key_id="google:aaaa", **resource):
    return {"upstream": "google", "key_id": key_id, "client": client, "resource": resource}


@pytest.fixture
def wall():
    return float(int(time.time()))  # Redis also expires records by the wall clock: use real time, now


def test_records_by_kind_name_and_client(store, wall):
    store.put_resource("files", "files/b", owner("alice", name="files/b"), wall + 3600)
    store.put_resource("files", "files/a", owner("alice", name="files/a"), wall + 60)
    store.put_resource("files", "files/c", owner("bob"), wall + 3600)
    store.put_resource("batches", "files/a", owner("bob"), wall + 3600)  # kinds are separate namespaces
    assert store.get_resource("files", "files/a", wall) == owner("alice", name="files/a")
    assert store.get_resource("batches", "files/a", wall) == owner("bob")
    assert store.get_resource("operations", "files/a", wall) is None
    assert store.list_resources("files", "alice", wall) == [("files/a", owner("alice", name="files/a")),
                                                           ("files/b", owner("alice", name="files/b"))]
    assert [name for name, _ in store.list_resources("files", None, wall)] == ["files/a", "files/b", "files/c"]
    assert store.list_resources("files", "carol", wall) == []
    assert store.list_resources("batches", "alice", wall) == []


def test_expiry_is_judged_by_now(store, wall):
    store.put_resource("uploads", "uploads/u1", owner("alice"), wall + 60)
    assert store.get_resource("uploads", "uploads/u1", wall + 59.5) is not None
    assert store.get_resource("uploads", "uploads/u1", wall + 60) is None
    assert store.list_resources("uploads", "alice", wall + 60) == []
    assert store.list_resources("uploads", None, wall + 61) == []


def test_a_new_owner_replaces_the_old_one_in_the_client_listing(store, wall):
    store.put_resource("operations", "models/veo/operations/o1", owner("alice"), wall + 60)
    store.put_resource("operations", "models/veo/operations/o1", owner("bob", key_id="google:bbbb"), wall + 120)
    assert store.get_resource("operations", "models/veo/operations/o1", wall)["key_id"] == "google:bbbb"
    assert store.list_resources("operations", "alice", wall) == []
    assert [name for name, _ in store.list_resources("operations", "bob", wall)] == ["models/veo/operations/o1"]


def test_delete_forgets_and_missing_names_are_fine(store, wall):
    for kind in RESOURCE_KINDS:
        store.put_resource(kind, f"{kind}/x", owner("alice"), wall + 60)
    store.delete_resource("files", "files/x")
    store.delete_resource("files", "files/never")
    assert store.get_resource("files", "files/x", wall) is None
    assert store.list_resources("files", "alice", wall) == []
    assert store.get_resource("batches", "batches/x", wall) is not None


def test_a_claim_is_won_once_and_survives_a_refreshed_record(store, wall):
    store.put_resource("batches", "batches/b1", owner("alice"), wall + 600)
    assert store.claim_resource("batches", "batches/b1", "accounted", wall) is True
    assert store.claim_resource("batches", "batches/b1", "accounted", wall) is False
    assert store.claim_resource("batches", "batches/b1", "other", wall) is True  # claims are separate
    store.put_resource("batches", "batches/b1", owner("alice", state="SUCCEEDED"), wall + 900)
    assert store.claim_resource("batches", "batches/b1", "accounted", wall) is False
    assert store.get_resource("batches", "batches/b1", wall) == owner("alice", state="SUCCEEDED")
    assert store.claim_resource("batches", "batches/missing", "accounted", wall) is False
    assert store.claim_resource("files", "batches/b1", "accounted", wall) is False  # kinds are separate


def test_claims_go_with_their_record(store, wall):
    store.put_resource("batches", "batches/b2", owner("alice"), wall + 600)
    assert store.claim_resource("batches", "batches/b2", "accounted", wall + 600) is False  # expired by now
    assert store.claim_resource("batches", "batches/b2", "accounted", wall)
    store.delete_resource("batches", "batches/b2")
    store.put_resource("batches", "batches/b2", owner("alice"), wall + 600)  # a new record: nothing claimed
    assert store.claim_resource("batches", "batches/b2", "accounted", wall) is True


def test_a_claim_has_one_winner_across_processes(store_location, wall):
    opened = open_store(*store_location)
    opened.put_resource("batches", "batches/race", owner("alice"), wall + 600)
    opened.close()
    context = multiprocessing.get_context("fork")
    with context.Pool(4) as workers:
        won = workers.starmap(_claim, [(store_location, wall)] * 8)
    assert sorted(won) == [False] * 7 + [True]


def _claim(store_location, wall):
    opened = open_store(*store_location)
    try:
        return opened.claim_resource("batches", "batches/race", "accounted", wall)
    finally:
        opened.close()


def test_hostile_names_are_just_names(store, wall):
    names = ["files/../x", "files/a:b", "files/a\x00b", "files/" + "z" * 5000, "files/ü*?[]"]
    for index, name in enumerate(names):
        store.put_resource("files", name, owner("alice", index=index), wall + 60)
    assert [store.get_resource("files", name, wall)["resource"]["index"] for name in names] == list(range(len(names)))
    assert store.get_resource("files", "files/..", wall) is None
    assert len(store.list_resources("files", "alice", wall)) == len(names)


def test_unknown_kinds_are_a_programming_error(store, wall):
    with pytest.raises(ValueError):
        store.put_resource("models", "models/x", owner("alice"), wall + 60)
    with pytest.raises(ValueError):
        store.list_resources("cachedContent", "alice", wall)


# -- SQLite: the table before resources were generic ---------------------------------------------------------------

LEGACY_CACHES = """
CREATE TABLE caches (name TEXT PRIMARY KEY, client TEXT, owner TEXT NOT NULL, expire_at REAL NOT NULL);
CREATE INDEX caches_expire_at ON caches (expire_at);
"""


def test_sqlite_migrates_the_caches_table_on_open(tmp_path, wall):
    path = str(tmp_path / "old.db")
    legacy_owner = {"upstream": "google", "key_id": "google:aaaa", "client": "alice",
                    "cache": {"name": "cachedContents/c1", "model": "models/gemini-2.5-flash"}}
    with sqlite3.connect(path) as old:
        old.executescript(LEGACY_CACHES)
        old.execute("INSERT INTO caches VALUES (?, ?, ?, ?)", ("cachedContents/c1", "alice",
                                                               orjson.dumps(legacy_owner), wall + 600))
        old.execute("INSERT INTO caches VALUES (?, ?, ?, ?)", ("cachedContents/c2", "bob",
                                                               orjson.dumps({"client": "bob"}), wall + 600))
    store = SqliteStore(path)
    try:
        migrated = store.get_cache("cachedContents/c1", wall)
        assert migrated == {"upstream": "google", "key_id": "google:aaaa", "client": "alice",
                            "resource": legacy_owner["cache"]}
        assert store.list_resources("cachedContents", "bob", wall) == [("cachedContents/c2", {"client": "bob"})]
        tables = {row[0] for row in store._read("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "caches" not in tables
    finally:
        store.close()
    reopened = SqliteStore(path)  # nothing left to migrate: opening again changes nothing
    try:
        assert [name for name, _ in reopened.list_caches(None, wall)] == ["cachedContents/c1", "cachedContents/c2"]
    finally:
        reopened.close()


# -- Redis: the layout, and the keys before resources were generic -------------------------------------------------

@pytest.fixture
def redis_store(redis_url):
    with redis.Redis.from_url(redis_url) as admin:
        admin.flushall()
    opened = RedisStore(redis_url)
    yield opened, redis.Redis.from_url(redis_url, decode_responses=True)
    opened.close()


def test_redis_lists_a_client_from_its_own_index_only(redis_store, wall):
    store, raw = redis_store
    store.put_resource("files", "files/mine", owner("alice"), wall + 600)
    for index in range(50):
        store.put_resource("files", f"files/theirs{index}", owner("bob"), wall + 600)
    raw.hset("relay:res:files:files/theirs7", "owner", "not json")  # reading any of bob's would fail
    assert store.list_resources("files", "alice", wall) == [("files/mine", owner("alice"))]
    assert raw.zrange("relay:res-client:files:alice", 0, -1) == ["files/mine"]
    assert raw.zcard("relay:res-client:files:bob") == 50 and raw.zcard("relay:res-all:files") == 51
    assert 0 < raw.pttl("relay:res-client:files:alice") <= 600_000  # the index expires with its last entry
    assert 0 < raw.pttl("relay:res:files:files/mine") <= 600_000


def test_redis_writes_trim_entries_the_wall_clock_has_expired(redis_store, wall):
    store, raw = redis_store
    store.put_resource("files", "files/old", owner("alice"), wall - 10)
    store.put_resource("files", "files/new", owner("alice"), wall + 600)
    assert raw.zrange("relay:res-client:files:alice", 0, -1) == ["files/new"]
    assert raw.zrange("relay:res-all:files", 0, -1) == ["files/new"]
    assert not raw.exists("relay:res:files:files/old")
    store.delete_resource("files", "files/new")
    assert not raw.exists("relay:res-client:files:alice", "relay:res-all:files", "relay:res:files:files/new")


def test_redis_migrates_the_old_cache_keys_on_first_use(redis_url, wall):
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    raw.flushall()
    legacy_owner = {"upstream": "google", "key_id": "google:aaaa", "client": "alice",
                    "cache": {"name": "cachedContents/c1"}}
    raw.set("relay:cache:cachedContents/c1", orjson.dumps({"owner": legacy_owner, "expire_at": wall + 600}))
    raw.zadd("relay:caches", {"cachedContents/c1": wall + 600, "cachedContents/gone": wall + 600})
    store = RedisStore(redis_url)
    try:
        assert store.get_cache("cachedContents/c1", wall)["resource"] == {"name": "cachedContents/c1"}
        assert [name for name, _ in store.list_caches("alice", wall)] == ["cachedContents/c1"]
        assert not raw.exists("relay:caches", "relay:cache:cachedContents/c1")
    finally:
        store.close()
