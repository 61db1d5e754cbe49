"""End-to-end tests of the upstream pool: real gunicorn + gevent relays, the fake upstream process, and
(for scale-out) a real redis-server shared by two relay instances.

Assertions read the fake's request log: which upstream key (x-goog-api-key) each attempt carried, and when
it arrived, so "a cooled key is not used" is checked on what upstream actually received.
"""
from __future__ import annotations

import json
import time

import pytest

from tests.support.google import error, error_info
from tests.support.redis_server import redis_server

from .harness import FIXTURES, free_port, http, wait_until

pytestmark = pytest.mark.timeout(60)

CLIENT_KEY = "client-key-pool-e2e-7781"
ADMIN_TOKEN = "admin-token-pool-e2e-5512"
KEY_A = "up-key-pool-A-1111"
KEY_B = "up-key-pool-B-2222"
KEY_C = "up-key-pool-C-3333"
MODEL = "gemini-2.0-flash"
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
BODY = json.dumps({"contents": [{"role": "user", "parts": [{"text": "why is the sky blue?"}]}]}).encode()
SSE_BYTES = (FIXTURES / "stream_sse/js-genai__Chats_Tests_sendMessage_Google_AI_with_text_stream.http.0.sse.txt").read_bytes()
# A revoked key, as Google refuses it: the verdict is ErrorInfo's reason, never the message.
REVOKED_KEY = error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                    error_info("API_KEY_INVALID"))


def post(relay, path=GENERATE):
    """One request on a fresh connection (so successive requests may land on any worker)."""
    with http() as session:
        response = session.post(relay.url + path, data=BODY, timeout=30,
                                headers={"Content-Type": "application/json", "x-goog-api-key": CLIENT_KEY})
        response.content  # read it all before the connection closes
        return response


def keys_sent(entries):
    return [entry["key"] for entry in entries]


def managed_env(keys, **extra):
    return {"RELAY_UPSTREAM_KEYS": ",".join(keys), "RELAY_API_KEYS": CLIENT_KEY, "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
            **extra}


def write_config(tmp_path, upstreams):
    """A relay.toml with one [[upstreams]] per dict; returns env that points the relay at it."""
    tables = []
    for upstream in upstreams:
        lines = [f"{name} = {json.dumps(value)}" for name, value in upstream.items()]
        tables.append("[[upstreams]]\n" + "\n".join(lines) + "\n")
    path = tmp_path / "relay.toml"
    path.write_text("\n".join(tables))
    # RELAY_UPSTREAM_URL (the harness sets it) would replace the first upstream's url: remove it.
    return {"RELAY_CONFIG": str(path), "RELAY_UPSTREAM_URL": None, "RELAY_API_KEYS": CLIENT_KEY,
            "RELAY_ADMIN_TOKEN": ADMIN_TOKEN}


def admin_keys(relay):
    with http() as session:
        response = session.get(relay.url + "/relay/upstreams", timeout=30,
                               headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text
    return {key["key"]: key for upstream in response.json()["upstreams"] for key in upstream["keys"]}


def cooling_for(key_state, model=MODEL):
    """True if the admin view shows the key resting for ``model``: the whole key, or that model only
    (the fake's 429 names its model in QuotaFailure, as Google's per-model quotas do)."""
    return key_state["state"] == "cooling" or model in [entry["model"] for entry in key_state["model_cooldowns"]]


def send_until(relay, fake, predicate, timeout=15.0):
    """Send requests (each must succeed) until the fake's log satisfies ``predicate``; return the log."""
    def attempt():
        assert post(relay).status_code == 200
        entries = fake.requests()
        return entries if predicate(entries) else None
    return wait_until(attempt, timeout, interval=0) or fake.requests()


def test_429_key_is_skipped_by_every_worker_until_its_delay_passes(relay_factory, fake_upstream):
    relay = relay_factory(env=managed_env([KEY_A, KEY_B, KEY_C]), workers=2)
    fake_upstream.script({"key": KEY_A, "status": 429, "retry_delay": "4s", "times": 1})

    entries = send_until(relay, fake_upstream, lambda entries: KEY_A in keys_sent(entries))
    [first_a] = [entry for entry in entries if entry["key"] == KEY_A]
    assert first_a["status"] == 429
    cooled_until = first_a["received_at"] + 4.0

    # Within the delay: many requests on fresh connections, spread over both workers; none may use key A.
    window_start = time.time()
    while time.time() < cooled_until - 0.3:
        assert post(relay).status_code == 200
    sent_in_window = [entry for entry in fake_upstream.requests() if entry["received_at"] >= window_start]
    assert len(sent_in_window) >= 4
    early = [entry for entry in fake_upstream.requests()
             if entry["key"] == KEY_A and entry["id"] != first_a["id"] and entry["received_at"] < cooled_until]
    assert not early, "a worker sent to the cooled key before its retryDelay passed"

    # After the delay key A is back in rotation (and now answers 200).
    entries = send_until(relay, fake_upstream,
                         lambda entries: any(entry["key"] == KEY_A and entry["id"] > first_a["id"] for entry in entries))
    later_a = [entry for entry in entries if entry["key"] == KEY_A and entry["id"] > first_a["id"]]
    assert later_a and later_a[0]["received_at"] >= cooled_until and later_a[0]["status"] == 200


def test_every_key_cooling_answers_429_with_retry_info(relay_factory, fake_upstream):
    relay = relay_factory(env=managed_env([KEY_A, KEY_B]), workers=2)
    fake_upstream.script([{"key": KEY_A, "status": 429, "retry_delay": "30s"},
                          {"key": KEY_B, "status": 429, "retry_delay": "40s"}])
    first = post(relay)
    assert first.status_code == 429 and first.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert sorted(keys_sent(fake_upstream.requests())) == [KEY_A, KEY_B]

    for path in (GENERATE, STREAM, GENERATE):
        response = post(relay, path)
        assert response.status_code == 429
        error = json.loads(response.content)["error"]
        assert error["code"] == 429 and error["status"] == "RESOURCE_EXHAUSTED"
        [retry] = [detail for detail in error["details"] if detail["@type"].endswith("google.rpc.RetryInfo")]
        assert 20 < float(retry["retryDelay"].rstrip("s")) <= 30, retry
        assert 20 < int(response.headers["Retry-After"]) <= 30
    assert len(fake_upstream.requests()) == 2, "relay called upstream although every key was cooling down"


def test_all_upstreams_failing_answers_503_unavailable(relay_factory, fake_upstream, tmp_path):
    dead_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    env = write_config(tmp_path, [
        {"name": "dead", "url": dead_url, "keys": [KEY_C], "priority": 0},
        {"name": "primary", "url": fake_upstream.url, "keys": [KEY_A], "priority": 1},
        {"name": "secondary", "url": fake_upstream.url, "keys": [KEY_B], "priority": 2},
    ])
    relay = relay_factory(env=env, workers=1)
    overloaded = {"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                            "status": "UNAVAILABLE"}}
    fake_upstream.script({"path_contains": ":generateContent", "status": 503, "body": overloaded})
    started = time.monotonic()
    response = post(relay)
    assert time.monotonic() - started < 20
    assert response.status_code == 503
    assert response.json()["error"]["status"] == "UNAVAILABLE"
    assert keys_sent(fake_upstream.requests()) == [KEY_A, KEY_B]


def test_a_stream_fails_over_before_its_first_byte(relay_factory, fake_upstream, tmp_path):
    env = write_config(tmp_path, [
        {"name": "slow", "url": fake_upstream.url, "keys": [KEY_A], "priority": 0, "read_timeout": 1},
        {"name": "busy", "url": fake_upstream.url, "keys": [KEY_B], "priority": 1},
        {"name": "good", "url": fake_upstream.url, "keys": [KEY_C], "priority": 2},
    ])
    relay = relay_factory(env=env, workers=1)
    fake_upstream.script([
        {"key": KEY_A, "path_contains": "streamGenerateContent", "hang": True, "forever_max_s": 10},
        {"key": KEY_B, "path_contains": "streamGenerateContent", "status": 429, "retry_delay": "30s"},
    ])
    with http() as session:
        with session.post(relay.url + STREAM, data=BODY, stream=True, timeout=30,
                          headers={"Content-Type": "application/json", "x-goog-api-key": CLIENT_KEY}) as response:
            assert response.status_code == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            content = b"".join(response.iter_content(chunk_size=None))
    assert content == SSE_BYTES
    entries = fake_upstream.requests()
    assert keys_sent(entries) == [KEY_A, KEY_B, KEY_C]
    assert all(entry["query"] == "alt=sse" for entry in entries)
    assert entries[2]["outcome"] == "complete"
    assert cooling_for(admin_keys(relay)["…" + KEY_B[-4:]])


def test_a_revoked_key_is_disabled_and_traffic_continues(relay_factory, fake_upstream):
    relay = relay_factory(env=managed_env([KEY_A, KEY_B, KEY_C], RELAY_REPROBE_SECONDS="3"), workers=2)
    fake_upstream.script({"key": KEY_A, "status": 400, "body": REVOKED_KEY, "times": 1})

    entries = send_until(relay, fake_upstream, lambda entries: KEY_A in keys_sent(entries))
    [revoked] = [entry for entry in entries if entry["key"] == KEY_A]
    state = admin_keys(relay)["…" + KEY_A[-4:]]
    assert state["state"] == "disabled" and state["until"] == pytest.approx(revoked["received_at"] + 3, abs=2)
    for _ in range(6):
        assert post(relay).status_code == 200
    early = [entry for entry in fake_upstream.requests()
             if entry["key"] == KEY_A and entry["id"] != revoked["id"] and entry["received_at"] < revoked["received_at"] + 3]
    assert not early, "the disabled key was used before its re-probe time"

    # Re-probe: after RELAY_REPROBE_SECONDS the key is tried again; it works now, so it stays in use.
    entries = send_until(relay, fake_upstream,
                         lambda entries: any(entry["key"] == KEY_A and entry["id"] > revoked["id"] for entry in entries))
    assert any(entry["key"] == KEY_A and entry["id"] > revoked["id"] and entry["status"] == 200 for entry in entries)


def test_two_instances_sharing_redis_never_use_a_key_the_other_cooled(relay_factory, fake_upstream):
    with redis_server() as redis_url:
        env = managed_env([KEY_A, KEY_B], REDIS_URL=redis_url)
        first = relay_factory(env=env, workers=1)
        second = relay_factory(env=env, workers=1)
        fake_upstream.script({"key": KEY_A, "status": 429, "retry_delay": "30s"})

        entries = send_until(first, fake_upstream, lambda entries: KEY_A in keys_sent(entries))
        [cooled] = [entry for entry in entries if entry["key"] == KEY_A]
        assert cooled["status"] == 429

        for _ in range(8):
            assert post(second).status_code == 200
        after = [entry for entry in fake_upstream.requests() if entry["id"] > cooled["id"]]
        assert len(after) >= 8 and set(keys_sent(after)) == {KEY_B}
        assert cooling_for(admin_keys(second)["…" + KEY_A[-4:]])
        first.stop()
        second.stop()


def test_a_bad_relay_toml_stops_start_up_with_the_line_and_the_fix(relay_factory, tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text('[[upstreams]]\nname = "google"\nweight = 0\n')
    with pytest.raises(RuntimeError) as raised:
        relay_factory(env={"RELAY_CONFIG": str(config)}, workers=1)
    assert f"{config}:3: upstream 'google': weight = 0 must be a positive number" in str(raised.value)
