"""Tests of client keys: the ``keys`` CLI, hashing, and how the authenticator treats created keys.

The commands run through Flask's CLI runner against a real SQLite store; the same store then backs an
Authenticator, as it backs the server.
"""

import hashlib
import re
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from relay.clients.auth import Authenticator, hash_key
from relay.config import Upstream, load_settings
from relay.errors import Unauthenticated
from relay.store import StoreError
from tests.support import UPSTREAM_URL

KEY_FORMAT = re.compile(r"^sk-relay-[A-Za-z0-9_-]{43}$")
UPSTREAMS = (Upstream(name="google", url=UPSTREAM_URL, keys=("up-key-cli-123456",)),)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "relay.db"


@pytest.fixture
def app(app_factory, db_path):
    return app_factory(environ={"RELAY_DB": str(db_path)})


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()

    def run(*arguments):
        return runner.invoke(args=["keys", *arguments])
    return run


@pytest.fixture
def store(app):
    return app.extensions["relay"].store


def authenticator(store, client_keys=(), clock=time.time):
    settings = load_settings({}, {"upstreams": UPSTREAMS, "client_keys": tuple(client_keys)})
    return Authenticator(settings, store, clock=clock)


def created_key(cli, *arguments):
    result = cli("create", *arguments)
    assert result.exit_code == 0, result.output
    key = result.output.strip()
    assert KEY_FORMAT.match(key), result.output
    return key


# --- hashing ------------------------------------------------------------------------------------------------

def test_hash_is_stable_keyed_and_hides_the_key():
    key = "sk-relay-" + "a" * 43
    digest = hash_key(key)
    assert digest == hash_key(key) and re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest != hash_key(key[:-1] + "b")
    assert key not in digest and "sk-relay" not in digest
    assert digest != hashlib.sha256(key.encode()).hexdigest()  # domain-separated, not a bare SHA-256


def test_create_prints_a_fresh_key_once_and_stores_only_its_hash(cli, store, db_path):
    first = created_key(cli, "alice", "--rpm", "60", "--tpm", "100000", "--daily-tokens", "2000000",
                        "--models", "gemini-2.5-*, models/gemini-3-*", "--expires", "2099-12-31")
    second = created_key(cli, "bob")
    assert first != second
    [alice, bob] = store.list_client_keys()
    assert alice["key_hash"] == hash_key(first) and bob["key_hash"] == hash_key(second)
    assert (alice["rpm"], alice["tpm"], alice["daily_tokens"]) == (60, 100000, 2000000)
    assert alice["models"] == ["gemini-2.5-*", "gemini-3-*"] and alice["expires"] == "2099-12-31"
    assert alice["hint"] == first[-4:] and not alice["revoked"]
    assert abs(alice["created"] - time.time()) < 60
    assert bob["models"] == [] and bob["rpm"] is None
    store.close()
    on_disk = b"".join(path.read_bytes() for path in Path(db_path).parent.glob("relay.db*"))
    assert first.encode() not in on_disk and first[9:].encode() not in on_disk
    assert hash_key(first).encode() in on_disk


def test_a_created_key_authenticates_with_its_limits(cli, store):
    key = created_key(cli, "alice", "--rpm", "5", "--models", "gemini-2.5-*", "--live-sessions", "2")
    client = authenticator(store).authenticate(key)
    assert (client.name, client.kind, client.rpm, client.tpm, client.models) == ("alice", "managed", 5, None,
                                                                                ("gemini-2.5-*",))
    assert client.live_sessions == 2
    assert authenticator(store).by_hash(hash_key(key)) == client
    with pytest.raises(Unauthenticated):
        authenticator(store).authenticate(key[:-1] + ("A" if key[-1] != "A" else "B"))


def test_static_keys_keep_working_unlimited_next_to_created_ones(cli, store):
    key = created_key(cli, "alice")
    auth = authenticator(store, client_keys=("static-client-key-1234",))
    static = auth.authenticate("static-client-key-1234")
    assert re.fullmatch(r"static:\S*…1234", static.name)  # never the key itself
    assert (static.kind, static.rpm, static.models) == ("static", None, ())
    assert auth.authenticate(key).name == "alice"


def test_revoked_and_expired_keys_are_401(cli, store):
    revoked_key = created_key(cli, "old")
    result = cli("revoke", "old")
    assert result.exit_code == 0 and "revoked old" in result.output
    with pytest.raises(Unauthenticated, match="revoked"):
        authenticator(store).authenticate(revoked_key)

    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).date().isoformat()
    expiring_key = created_key(cli, "temp", "--expires", tomorrow)
    assert authenticator(store).authenticate(expiring_key).name == "temp"  # works through its last day
    last_moment = datetime.fromisoformat(tomorrow).replace(hour=23, minute=59, tzinfo=timezone.utc).timestamp()
    assert authenticator(store, clock=lambda: last_moment).authenticate(expiring_key).name == "temp"
    with pytest.raises(Unauthenticated, match="expired") as error:
        authenticator(store, clock=lambda: last_moment + 120).authenticate(expiring_key)
    assert error.value.code == 401 and error.value.to_dict()["error"]["status"] == "UNAUTHENTICATED"


# --- create: what it refuses --------------------------------------------------------------------------------

@pytest.mark.parametrize("arguments", [
    ("bad name",), ("static:…1234",), ("-dash-first",), ("x" * 65,),
    ("alice", "--rpm", "0"), ("alice", "--tpm", "-5"), ("alice", "--daily-tokens", "many"),
    ("alice", "--expires", "31/12/2099"), ("alice", "--expires", "2001-01-01"),
    ("alice", "--models", "gemini 2.5"),
])
def test_create_refuses_bad_input(cli, store, arguments):
    result = cli("create", *arguments)
    assert result.exit_code == 2, result.output
    assert "sk-relay-" not in result.output
    assert store.list_client_keys() == []


def test_names_are_unique(cli):
    created_key(cli, "alice")
    result = cli("create", "alice")
    assert result.exit_code == 1 and "exists already" in result.output and "sk-relay-" not in result.output


def test_store_failures_are_reported_not_raised(cli, monkeypatch, store):
    def broken(*args):
        raise StoreError("disk I/O error")
    monkeypatch.setattr(store, "add_client_key", broken)
    result = cli("create", "alice")
    assert result.exit_code == 1 and "could not save the key" in result.output


# --- list and revoke ----------------------------------------------------------------------------------------

def test_list_shows_limits_and_use_never_the_key(cli, store):
    alice = created_key(cli, "alice", "--rpm", "60", "--models", "gemini-2.5-*", "--expires", "2099-01-31",
                        "--live-sessions", "3")
    bob = created_key(cli, "bob", "--daily-tokens", "5000")
    cli("revoke", "bob")
    store.touch_client_keys({"alice": datetime(2026, 5, 4, 3, 2, tzinfo=timezone.utc).timestamp()})
    result = cli("list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "KEY", "RPM", "TPM", "DAILY", "LIVE", "MODELS", "EXPIRES", "CREATED", "LAST",
                                "USED", "STATUS"]
    alice_line, bob_line = lines[1].split(), lines[2].split()
    today = date.today().isoformat()
    assert alice_line[:8] == ["alice", f"…{alice[-4:]}", "60", "-", "-", "3", "gemini-2.5-*", "2099-01-31"]
    assert alice_line[8] in (today, (date.today() - timedelta(days=1)).isoformat(),
                             (date.today() + timedelta(days=1)).isoformat())
    assert alice_line[-3:] == ["2026-05-04", "03:02", "active"]
    assert bob_line[:8] == ["bob", f"…{bob[-4:]}", "-", "-", "5000", "-", "*", "-"]
    assert bob_line[-2:] == ["-", "revoked"]
    for key in (alice, bob):
        assert key not in result.output and key[9:20] not in result.output


def test_revoking_an_unknown_name_fails(cli):
    result = cli("revoke", "nobody")
    assert result.exit_code == 1 and "no key named 'nobody'" in result.output


# --- usage --------------------------------------------------------------------------------------------------

def usage_row(client, model, total, status=200, age_days=0.0):
    return {"ts": time.time() - age_days * 86400, "request_id": f"{client}-{model}-{total}", "client": client,
            "requested_model": model, "status": status, "prompt_tokens": total - 1, "candidates_tokens": 1,
            "total_tokens": total}


def table(output):
    return {line.split()[0]: line.split()[1:] for line in output.splitlines()[1:]}


def test_usage_per_key_and_per_model(cli, store):
    store.write_usage([
        usage_row("alice", "gemini-2.5-flash", 10), usage_row("alice", "gemini-2.5-flash", 20),
        usage_row("alice", "gemini-2.5-pro", 5, status=429), usage_row("bob", "gemini-2.5-flash", 7),
        usage_row("alice", "gemini-2.5-pro", 1000, age_days=10),
    ])
    everyone = cli("usage")
    assert everyone.exit_code == 0, everyone.output
    assert everyone.output.splitlines()[0].split()[:3] == ["KEY", "REQUESTS", "ERRORS"]
    rows = table(everyone.output)
    assert rows["alice"] == ["3", "1", "32", "3", "0", "0", "0", "35"]
    assert rows["bob"] == ["1", "0", "6", "1", "0", "0", "0", "7"]
    assert rows["TOTAL"] == ["4", "1", "38", "4", "0", "0", "0", "42"]

    alice = table(cli("usage", "alice", "--days", "30").output)
    assert alice["gemini-2.5-flash"][:2] == ["2", "0"] and alice["gemini-2.5-flash"][-1] == "30"
    assert alice["gemini-2.5-pro"][:2] == ["2", "1"] and alice["gemini-2.5-pro"][-1] == "1005"
    assert "bob" not in alice

    assert cli("usage", "--days", "0").exit_code == 2


def test_usage_of_an_unknown_key_fails_like_revoke(cli, store):
    created_key(cli, "quiet")
    store.write_usage([usage_row("static:ab12cd34…wxyz", "gemini-2.5-flash", 10)])
    for command in (("revoke", "nobody"), ("usage", "nobody"), ("usage", "nobody", "--days", "30")):
        result = cli(*command)
        assert result.exit_code == 1, (command, result.output)
        assert "no key named 'nobody'" in result.output and "keys list" in result.output
    quiet = cli("usage", "quiet")  # a key with no usage yet: an empty table, not an error
    assert quiet.exit_code == 0 and table(quiet.output)["TOTAL"][-1] == "0"
    static = cli("usage", "static:ab12cd34…wxyz")  # a name relay gave a caller: its rows name it
    assert static.exit_code == 0 and table(static.output)["gemini-2.5-flash"][-1] == "10"
