"""This module provides the contract tests of the store's Live-session methods (records, leases) on both backends."""

import time

T = time.time() + 1000.0  # records get a wall-clock TTL too, so "now" stays near the real clock


def test_record_round_trip_and_expiry(store):
    store.put_record("auth_token", "h1", {"client": "alice", "uses": 1}, T + 60)
    assert store.get_record("auth_token", "h1", T) == {"client": "alice", "uses": 1}
    assert store.get_record("auth_token", "h1", T + 60) is None
    assert store.get_record("auth_token", "missing", T) is None
    assert store.get_record("other_kind", "h1", T) is None


def test_record_is_replaced(store):
    store.put_record("auth_token", "h1", {"v": 1}, T + 60)
    store.put_record("auth_token", "h1", {"v": 2}, T + 120)
    assert store.get_record("auth_token", "h1", T + 90) == {"v": 2}


def test_lease_limit_renewal_and_release(store):
    assert store.acquire_lease("live:alice", "s1", 2, T + 60, T)
    assert store.acquire_lease("live:alice", "s2", 2, T + 60, T)
    assert not store.acquire_lease("live:alice", "s3", 2, T + 60, T)
    assert store.acquire_lease("live:alice", "s1", 2, T + 120, T + 1)  # renewal of a held lease
    assert store.acquire_lease("live:bob", "s3", 2, T + 60, T)  # groups are apart
    store.release_lease("live:alice", "s2")
    store.release_lease("live:alice", "never-held")
    assert store.acquire_lease("live:alice", "s3", 2, T + 60, T)


def test_expired_leases_free_their_place(store):
    assert store.acquire_lease("live:alice", "s1", 1, T + 10, T)
    assert not store.acquire_lease("live:alice", "s2", 1, T + 60, T + 9)
    assert store.acquire_lease("live:alice", "s2", 1, T + 60, T + 10)
    assert not store.acquire_lease("live:alice", "s1", 1, T + 60, T + 11)  # s1 ran out: it is a newcomer now
