"""End-to-end tests of issue 11: no caller can take relay's upstream keys out of service, and a key Google
really refused is loud (warning, /readyz, the caller's message).

Real gunicorn + gevent relays and the fake upstream process.  The fake answers the attacker's requests
(recognised by a marker in the body, or by the query) with what Google would send them: 403s whose
message echoes text the caller chose, 404/403 about other projects' resources, 429s with absurd
RetryInfo, 500s, and structured refusals of a billing project the caller named.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from relay.upstream.pool import KEYS_REFUSED, MAX_RETRY_DELAY, key_id
from tests.support.google import HOSTILE_TEXT, QUOTA_FAILURE, RETRY_INFO, error, error_info, violation

from .harness import http

pytestmark = pytest.mark.timeout(120)

CLIENT_KEY = "client-key-health-e2e-4471"
ADMIN_TOKEN = "admin-token-health-e2e-9034"
KEYS = ("up-key-health-A-1111", "up-key-health-B-2222", "up-key-health-C-3333")
MODEL = "gemini-2.0-flash"
# A 429 rests the model that was called: each kind of hostile 429 calls a model of its own, so that every
# one of them reaches the upstream (and none can rest MODEL, which normal callers use).
QUOTA_MODEL, BARE_MODEL, HTML_MODEL = "gemini-2.5-flash-lite", "gemini-1.5-flash", "gemini-1.5-pro"


def quota_failure(model=None, delay="999999999s"):
    return error(429, "RESOURCE_EXHAUSTED", f"You exceeded your current quota. {HOSTILE_TEXT}",
                 {"@type": QUOTA_FAILURE, "violations": [{**violation(model), "quotaValue": "10"}]},
                 {"@type": RETRY_INFO, "retryDelay": delay})


API_KEY_INVALID = error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                        error_info("API_KEY_INVALID"),
                        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
                         "message": "API key not valid. Please pass a valid API key."})

# marker in the request body: (model called, what the fake answers); every answer is one a caller can provoke.
ATTACKS = {
    "ATTACK-403-TEXT": (MODEL, {"status": 403, "body": error(403, "PERMISSION_DENIED", HOSTILE_TEXT)}),
    "ATTACK-403-FILE": (MODEL, {"status": 403, "body": error(
        403, "PERMISSION_DENIED", f"You do not have permission to access the File files/{HOSTILE_TEXT} or it may not exist.")}),
    "ATTACK-403-TUNED": (MODEL, {"status": 403, "body": error(
        403, "PERMISSION_DENIED", "You do not have permission to access tuned model tunedModels/api-key-suspended.",
        error_info("IAM_PERMISSION_DENIED"))}),
    "ATTACK-404-FILE": (MODEL, {"status": 404, "body": error(
        404, "NOT_FOUND", f"File files/consumer-suspended of another project was not found. {HOSTILE_TEXT}")}),
    "ATTACK-500": (MODEL, {"status": 500, "body": error(500, "INTERNAL", HOSTILE_TEXT, error_info("API_KEY_INVALID"),
                                                        error_info("CONSUMER_SUSPENDED"))}),
    # Names MODEL in its QuotaFailure while QUOTA_MODEL was called; asks for a rest of ~32 years.
    "ATTACK-429-QUOTA": (QUOTA_MODEL, {"status": 429, "body": quota_failure(model=MODEL)}),
    "ATTACK-429-BARE": (BARE_MODEL, {"status": 429, "body": error(
        429, "RESOURCE_EXHAUSTED", HOSTILE_TEXT, {"@type": RETRY_INFO, "retryDelay": "infs"})}),
    "ATTACK-429-HTML": (HTML_MODEL, {"status": 429, "html_502": True}),
}
# Calls that name their own billing project or quota user: Google's structured answers are about those.
STEERED = {
    "userProject=victim-project": {"status": 403, "body": error(
        403, "PERMISSION_DENIED", "Generative Language API has not been used in project victim-project.",
        error_info("SERVICE_DISABLED"))},
    "quotaUser=attacker": {"status": 429, "body": quota_failure(model=None, delay="86400s")},
}


def managed_env(keys, **extra):
    return {"RELAY_UPSTREAM_KEYS": ",".join(keys), "RELAY_API_KEYS": CLIENT_KEY, "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
            **extra}


def body(text):
    return json.dumps({"contents": [{"role": "user", "parts": [{"text": text}]}]}).encode()


def post(relay, model=MODEL, text="why is the sky blue?", query=""):
    """One request on a fresh connection (so successive requests may land on either worker)."""
    with http() as session:
        response = session.post(f"{relay.url}/v1beta/models/{model}:generateContent{query}", data=body(text),
                                timeout=30, headers={"Content-Type": "application/json", "x-goog-api-key": CLIENT_KEY,
                                                     "Connection": "close"})
        _ = response.content  # read it all before the connection closes
        return response


def get(relay, path, **headers):
    with http() as session:
        return session.get(relay.url + path, timeout=30, headers={"Connection": "close", **headers})


def admin_keys(relay):
    response = get(relay, "/relay/upstreams", Authorization=f"Bearer {ADMIN_TOKEN}")
    assert response.status_code == 200, response.text
    return [key for upstream in response.json()["upstreams"] for key in upstream["keys"]]


def attack(relay, index):
    """The ``index``-th hostile request: (its kind, relay's status)."""
    kinds = list(ATTACKS) + list(STEERED)
    kind = kinds[index % len(kinds)]
    if kind in STEERED:
        return kind, post(relay, query=f"?{kind}").status_code
    return kind, post(relay, model=ATTACKS[kind][0], text=f"{kind}: {HOSTILE_TEXT}").status_code


def test_a_few_hundred_hostile_requests_leave_every_key_in_service(relay_factory, fake_upstream):
    relay = relay_factory(env=managed_env(KEYS, RELAY_REPROBE_SECONDS="3600"), workers=2)
    fake_upstream.script([{"query_contains": query, **answer} for query, answer in STEERED.items()]
                         + [{"body_contains": marker, **answer} for marker, (_, answer) in ATTACKS.items()])

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda index: attack(relay, index), range(300)))
    assert {status for kind, status in results if kind not in STEERED} <= {403, 404, 429, 500}
    # Managed mode strips a caller's billing project and quota user: those calls reach Google as plain calls.
    assert {status for kind, status in results if kind in STEERED} == {200}
    assert not any(steer.split("=")[0] in str(entry["query"]) for entry in fake_upstream.requests() for steer in STEERED)
    answered = [entry["status"] for entry in fake_upstream.requests()]
    assert min(answered.count(status) for status in (403, 404, 500)) >= 30 and answered.count(429) >= 9, \
        "the hostile requests reached the upstream"

    # Every key is still in service: none refused, none resting as a whole, none resting for MODEL.
    for key in admin_keys(relay):
        assert key["state"] == "healthy" and key["reason"] is None, key
        assert {cooldown["model"] for cooldown in key["model_cooldowns"]} <= {QUOTA_MODEL, BARE_MODEL, HTML_MODEL}, key
        assert all(cooldown["until"] <= time.time() + MAX_RETRY_DELAY + 5 for cooldown in key["model_cooldowns"])
    ready = get(relay, "/readyz")
    assert ready.status_code == 200
    assert ready.json()["keys"] == {"total": 3, "usable": 3, "cooling": 0, "rejected": 0}

    # Normal traffic goes on, over every key, with no 503.
    before = len(fake_upstream.requests())
    for _ in range(12):
        assert post(relay).status_code == 200
    served = [entry["key"] for entry in fake_upstream.requests()[before:]]
    assert set(served) == set(KEYS) and len(served) == 12, "a normal request needed a retry or skipped a key"
    assert "refused relay's key" not in relay.output_text()


def test_keys_google_really_refused_are_loud(relay_factory, fake_upstream):
    relay = relay_factory(env=managed_env(KEYS[:2]), workers=2)
    fake_upstream.script({"path_contains": ":generateContent", "status": 400, "body": API_KEY_INVALID})

    for _ in range(3):
        response = post(relay)
        assert response.status_code == 503
        assert response.json()["error"] == {"code": 503, "message": KEYS_REFUSED, "status": "UNAVAILABLE"}
        assert not any(key in response.text or key[-4:] in response.text for key in KEYS)
    assert sorted(entry["key"] for entry in fake_upstream.requests()) == sorted(KEYS[:2]), \
        "once refused, the keys are not tried again before their re-probe"

    for _ in range(6):  # fresh connections: both workers answer from the shared state
        ready = get(relay, "/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert ready.json()["keys"] == {"total": 2, "usable": 0, "cooling": 0, "rejected": 2}
    refused = {key["id"]: key for key in admin_keys(relay)}
    assert {state["state"] for state in refused.values()} == {"disabled"}
    assert {state["reason"] for state in refused.values()} == {"key refused by upstream: API_KEY_INVALID"}

    output = relay.output_text()
    for key in KEYS[:2]:
        warning = [line for line in output.splitlines() if key_id("google", key) in line]
        assert warning and "WARNING" in warning[0] and "API_KEY_INVALID" in warning[0] and "google" in warning[0]
        assert key not in output
