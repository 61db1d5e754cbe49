"""This module provides the unit tests of upload stickiness (Pool.sticky_target) and of the admin view showing it."""

import random
from collections import Counter

import pytest

from relay.config import Settings, Upstream
from relay.errors import NotFound, ResourceExhausted, Unavailable
from relay.upstream.pool import Pool
from tests.support import START

GOOGLE = Upstream(name="google", url="http://google.test", keys=("g-key-1", "g-key-2", "g-key-3"))
CLIENTS = [f"client-{number}" for number in range(300)]


def make_pool(store, clock, *upstreams, seed=7):
    return Pool(Settings(upstreams=tuple(upstreams)), store, clock=clock, rng=random.Random(seed))


def assignment(pool, model=None):
    return {client: pool.sticky_target(client, model).key_id for client in CLIENTS}


def test_every_worker_picks_the_same_key_for_a_client_and_clients_spread(store, clock):
    first, second = make_pool(store, clock, GOOGLE, seed=1), make_pool(store, clock, GOOGLE, seed=99)
    for _ in range(3):
        first.plan("gemini-2.5-flash")  # request rotation has nothing to do with it
    assert assignment(first) == assignment(second)
    spread = Counter(assignment(first).values())
    assert len(spread) == 3 and min(spread.values()) > len(CLIENTS) / 3 * 0.7


def test_a_blocked_key_moves_only_its_own_clients_and_gets_them_back(store, clock):
    pool = make_pool(store, clock, GOOGLE)
    before = assignment(pool)
    blocked = pool.sticky_target("client-0")
    store.disable(blocked.key_id, START + 600, "key refused by upstream", START)
    during = assignment(pool)
    assert blocked.key_id not in during.values()
    assert all(during[client] == before[client] for client in CLIENTS if before[client] != blocked.key_id)
    clock.advance(601)
    assert assignment(pool) == before


def test_a_cooldown_for_one_model_does_not_move_uploads(store, clock):
    pool = make_pool(store, clock, GOOGLE)
    target = pool.sticky_target("client-0")
    pool.record(target, "rate_limited", retry_delay=30.0, model="gemini-2.5-pro")
    assert pool.sticky_target("client-0") == target
    assert pool.sticky_target("client-0", model="gemini-2.5-pro") != target
    pool.record(target, "rate_limited", retry_delay=30.0)  # the whole key rests
    assert pool.sticky_target("client-0") != target


def test_the_lowest_priority_tier_with_a_usable_key_wins(store, clock):
    backup = Upstream(name="backup", url="http://backup.test", keys=("b-key-1",), priority=5)
    pool = make_pool(store, clock, backup, GOOGLE)
    assert {target.upstream.name for target in map(pool.sticky_target, CLIENTS)} == {"google"}
    for key_id_ in [key for key in pool.targets_by_id if key.startswith("google:")]:
        store.cool_down(key_id_, START + 30, "429", START)
    assert {pool.sticky_target(client).upstream.name for client in CLIENTS} == {"backup"}


def test_upstream_weights_are_shares_of_clients(store, clock):
    heavy = Upstream(name="heavy", url="http://heavy.test", keys=("h-key-1", "h-key-2"), weight=3)
    light = Upstream(name="light", url="http://light.test", keys=("l-key-1",), weight=1)
    pool = make_pool(store, clock, heavy, light)
    shares = Counter(target.upstream.name for target in map(pool.sticky_target, CLIENTS))
    assert 0.65 < shares["heavy"] / len(CLIENTS) < 0.85


def test_no_usable_key_answers_like_plan(store, clock):
    pool = make_pool(store, clock, GOOGLE)
    for key_id_ in pool.targets_by_id:
        store.cool_down(key_id_, START + 30, "429", START)
    with pytest.raises(ResourceExhausted):
        pool.sticky_target("client-0")
    for key_id_ in pool.targets_by_id:
        store.disable(key_id_, START + 600, "refused", START)
    with pytest.raises(Unavailable):
        pool.sticky_target("client-0")
    assert pool.sticky_clients(CLIENTS) == {}
    only_pro = Upstream(name="pro", url="http://pro.test", keys=("p-key",), models=("gemini-2.5-pro",))
    with pytest.raises(NotFound):
        make_pool(store, clock, only_pro).sticky_target("client-0", model="gemini-2.5-flash")


def test_passthrough_has_no_sticky_key(store, clock):
    pool = make_pool(store, clock, Upstream(name="google", url="http://google.test"))
    assert pool.sticky_target("passthrough:…abcd") is None
    assert pool.sticky_clients(["passthrough:…abcd"]) == {}


def test_sticky_clients_agrees_with_sticky_target(store, clock):
    pool = make_pool(store, clock, GOOGLE)
    by_key = pool.sticky_clients(reversed(CLIENTS))
    assert sorted(name for names in by_key.values() for name in names) == sorted(CLIENTS)
    assert all(pool.sticky_target(name).key_id == key for key, names in by_key.items() for name in names)
    assert all(names == sorted(names) for names in by_key.values())


def test_the_admin_view_shows_which_clients_stick_to_each_key(app_factory):
    app = app_factory({"RELAY_UPSTREAM_KEYS": "up-key-1111,up-key-2222", "RELAY_API_KEYS": "static-client-key-1",
                       "RELAY_ADMIN_TOKEN": "admin-token-123456"})
    services = app.extensions["relay"]
    for name in ("alice", "bob", "carol", "revoked"):
        services.store.add_client_key({"name": name, "key_hash": f"hash-{name}", "created": START})
    services.store.revoke_client_key("revoked")
    answer = app.test_client().get("/relay/upstreams", headers={"Authorization": "Bearer admin-token-123456"})
    assert answer.status_code == 200
    keys = [key for upstream in answer.get_json()["upstreams"] for key in upstream["keys"]]
    static_name = services.auth.authenticate("static-client-key-1").name
    listed = sorted(name for key in keys for name in key["sticky_clients"])
    assert listed == sorted(["alice", "bob", "carol", static_name])
    assert all(services.pool.sticky_target(name).key_id == key["id"] for key in keys for name in key["sticky_clients"])
