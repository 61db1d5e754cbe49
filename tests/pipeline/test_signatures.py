"""Tests for relay/pipeline/signatures.py: signatures bound to their client, bounded lookups, a failing store."""

from relay.clients.auth import Client
from relay.pipeline import signatures
from relay.pipeline.signatures import SignatureMemory
from relay.store import StoreError

ALICE = Client(name="alice", kind="managed")
BOB = Client(name="bob", kind="managed")


def test_a_client_reads_back_only_its_own_signatures(store):
    SignatureMemory(store, ALICE).remember([("call_1", "c2lnbmF0dXJl"), ("call_2", None)])
    assert SignatureMemory(store, ALICE).recall(["call_1", "call_2", "call_1"]) == {"call_1": "c2lnbmF0dXJl"}
    assert SignatureMemory(store, BOB).recall(["call_1"]) == {}


def test_passthrough_callers_are_told_apart_by_their_whole_key(store):
    first = Client(name="passthrough:…abcd", kind="passthrough", passthrough_key="AIzaFirst-abcd")
    second = Client(name="passthrough:…abcd", kind="passthrough", passthrough_key="AIzaSecond-abcd")
    SignatureMemory(store, first).remember([("call_1", "Zmlyc3Q=")])
    assert SignatureMemory(store, first).recall(["call_1"]) == {"call_1": "Zmlyc3Q="}
    assert SignatureMemory(store, second).recall(["call_1"]) == {}


def test_stored_names_are_bounded_whatever_the_id(store, monkeypatch):
    names = []
    real_put = store.put_values
    monkeypatch.setattr(store, "put_values", lambda values, expire_at: (names.extend(values), real_put(values, expire_at)))
    hostile = "x" * 100_000 + "\0:/*"
    SignatureMemory(store, ALICE).remember([(hostile, "c2ln")])
    assert all(len(name) < 64 for name in names)
    assert SignatureMemory(store, ALICE).recall([hostile]) == {hostile: "c2ln"}


def test_lookups_are_capped_and_oversized_signatures_not_stored(store, monkeypatch):
    asked = []
    monkeypatch.setattr(store, "get_values", lambda names, now: asked.append(len(names)) or {})
    SignatureMemory(store, ALICE).recall([f"call_{number}" for number in range(10_000)])
    assert asked == [signatures.MAX_LOOKUPS]
    SignatureMemory(store, ALICE).recall([])
    assert asked == [signatures.MAX_LOOKUPS], "no ids, no store call"
    monkeypatch.setattr(store, "put_values", lambda values, expire_at: asked.append(values))
    SignatureMemory(store, ALICE).remember([("call_1", "x" * (signatures.MAX_SIGNATURE_CHARS + 1))])
    assert asked == [signatures.MAX_LOOKUPS]


class BrokenStore:
    def get_values(self, names, now):
        raise StoreError("down")

    def put_values(self, values, expire_at):
        raise StoreError("down")


def test_a_failing_store_costs_only_the_memory():
    memory = SignatureMemory(BrokenStore(), ALICE)
    assert memory.recall(["call_1"]) == {}
    memory.remember([("call_1", "c2ln")])
