"""Tests for relay.live.tokens (minting, finding, spending tokens) and relay.live.registry (session leases,
closing every session), against both store backends."""

import threading
import time

import pytest

from relay.clients.auth import Authenticator, hash_key
from relay.config import Upstream, load_settings
from relay.live import tokens
from relay.live.constraints import TokenSpec
from relay.live.protocol import LiveRefusal
from relay.live.registry import LiveSessions
from relay.clients.auth import Client

NOW = time.time()
UPSTREAMS = (Upstream(name="google", url="http://upstream.test", keys=("up-key-live-unit-1",)),)


def authenticator(store, static=("sk-static-live-unit",)):
    return Authenticator(load_settings({}, {"upstreams": UPSTREAMS, "client_keys": static}), store)


def spec(**fields):
    values = {"uses": 1, "expire_time": NOW + 600, "new_session_expire_time": NOW + 60, "setup": None,
              "field_mask": None, **fields}
    return TokenSpec(**values)


def refusal(call):
    with pytest.raises(LiveRefusal) as raised:
        call()
    return raised.value


def test_a_token_is_stored_hashed_and_names_the_key_that_minted_it(store):
    body = tokens.mint(store, hash_key("sk-static-live-unit"), spec(), NOW)
    token = body["name"]
    assert token.startswith("auth_tokens/") and len(token) > 50 and body["uses"] == 1
    assert store.get_record(tokens.RECORD_KIND, token, NOW) is None  # never under the token itself
    grant = tokens.look_up(store, authenticator(store), token, NOW)
    assert grant.client.kind == "static" and grant.spec.uses == 1


def test_unknown_expired_and_orphaned_tokens_are_refused(store):
    auth = authenticator(store)
    assert refusal(lambda: tokens.look_up(store, auth, "auth_tokens/forged", NOW)).code == 1008
    token = tokens.mint(store, hash_key("sk-static-live-unit"), spec(expire_time=NOW + 5), NOW)["name"]
    assert "expired" in refusal(lambda: tokens.look_up(store, auth, token, NOW + 6)).reason
    orphan = tokens.mint(store, hash_key("sk-a-key-that-is-gone"), spec(), NOW)["name"]
    assert "no longer valid" in refusal(lambda: tokens.look_up(store, auth, orphan, NOW)).reason


def test_uses_are_spent_by_new_sessions_not_by_resumption(store):
    auth = authenticator(store)
    token = tokens.mint(store, hash_key("sk-static-live-unit"), spec(uses=2), NOW)["name"]
    grant = tokens.look_up(store, auth, token, NOW)
    for _ in range(2):
        tokens.spend(store, grant, {"model": "models/m"}, NOW)
    resumed = tokens.spend(store, grant, {"model": "models/m", "sessionResumption": {"handle": "h"}}, NOW)
    assert resumed["sessionResumption"] == {"handle": "h"}
    assert "used up" in refusal(lambda: tokens.spend(store, grant, {"model": "models/m"}, NOW)).reason


def test_unlimited_tokens_and_the_new_session_window(store):
    token = tokens.mint(store, hash_key("sk-static-live-unit"), spec(uses=0), NOW)["name"]
    grant = tokens.look_up(store, authenticator(store), token, NOW)
    for _ in range(5):
        tokens.spend(store, grant, {"model": "models/m"}, NOW)
    assert "newSessionExpireTime" in refusal(lambda: tokens.spend(store, grant, {"model": "models/m"}, NOW + 61)).reason
    tokens.spend(store, grant, {"model": "models/m", "sessionResumption": {"handle": "h"}}, NOW + 61)


def test_where_a_token_may_be_presented():
    token = "auth_tokens/abc"
    assert tokens.presented_token({"Authorization": f"Token {token}"}, {}) == token
    assert tokens.presented_token({}, {"access_token": token}) == token
    assert tokens.presented_token({"x-goog-api-key": token}, {}) == token
    assert tokens.presented_token({"Authorization": f"Bearer {token}"}, {}) is None
    assert tokens.presented_token({"x-goog-api-key": "sk-relay-x"}, {}) is None


class FakeSession:
    def __init__(self, registry, session_id):
        self.id, self.registry, self.done, self.stopped = session_id, registry, threading.Event(), None

    def stop(self, code, reason):
        self.stopped = (code, reason)
        self.registry.discard(self)
        self.done.set()


def test_capped_keys_hold_leases_uncapped_ones_do_not(store):
    registry = LiveSessions(store)
    capped, free = Client(name="alice", kind="managed", live_sessions=1), Client(name="bob", kind="managed")
    assert registry.acquire(capped, "s1") and not registry.acquire(capped, "s2")
    assert all(registry.acquire(free, f"f{index}") for index in range(5))
    registry.renew()
    session = FakeSession(registry, "s1")
    registry.add(session)
    assert registry.close_all(wait=1.0) == 1
    assert session.stopped[0] == 1001 and "resume" in session.stopped[1]
    assert registry.acquire(capped, "s2")  # closing released the lease
