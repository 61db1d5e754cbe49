"""End-to-end tests of team features: CLI-created keys, per-key limits, usage accounting, graceful shutdown.

Real gunicorn (gevent workers) relays, the `flask --app app keys` CLI as a subprocess, the fake upstream,
the real google-genai SDK, and a real redis-server for the shared-limit test.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from google.genai import errors

from relay.errors import parse_duration
from relay.store import open_store
from tests.support.redis_server import redis_server

from .harness import REPO_ROOT, clean_env, http, wait_until

pytestmark = pytest.mark.timeout(180)

UPSTREAM_KEY = "up-key-team-e2e-8Jq4"
ADMIN_TOKEN = "admin-token-team-e2e-Qz81"
STATIC_KEY_A = "client-key-team-e2e-aaA1"
STATIC_KEY_B = "client-key-team-e2e-bbB2"
PROMPT = "why is the sky blue?"
BODY = json.dumps({"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}).encode()
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
TOKEN_FIELDS = {
    "prompt_tokens": "promptTokenCount", "candidates_tokens": "candidatesTokenCount",
    "thoughts_tokens": "thoughtsTokenCount", "cached_tokens": "cachedContentTokenCount",
    "tool_use_tokens": "toolUsePromptTokenCount", "total_tokens": "totalTokenCount",
}


def keys_cli(env: dict, *arguments: str) -> subprocess.CompletedProcess:
    """`flask --app app keys ...` in the repo, with the relay's environment."""
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", "keys", *arguments], cwd=REPO_ROOT,
                          env=clean_env(env), capture_output=True, text=True, timeout=120)


def create_key(env: dict, name: str, *options: str) -> str:
    result = keys_cli(env, "create", name, *options)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("sk-relay-"), result.stdout
    return key


def post(relay, model: str, key: str, method: str = "generateContent", query: str = "", session=None):
    url = f"{relay.url}/v1beta/models/{model}:{method}{query}"
    headers = {"Content-Type": "application/json", "x-goog-api-key": key}
    return (session or http()).post(url, data=BODY, headers=headers, timeout=60)


def client_name(relay, key: str) -> str:
    """The name relay accounts a client key's usage under, as /relay/usage tells the key itself."""
    response = http().get(f"{relay.url}/relay/usage", headers={"x-goog-api-key": key}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["client"]


def admin_usage(relay, group: str, days: int = 1) -> list[dict]:
    response = http().get(f"{relay.url}/relay/usage?group={group}&days={days}",
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def stream_events(body: bytes, sse: bool) -> list[dict]:
    """The GenerateContentResponses a client received (an in-band error event is one of them)."""
    if not sse:
        return json.loads(body)
    text = body.decode().replace("\r\n", "\n")
    return [json.loads(block[len("data: "):]) for block in text.split("\n\n") if block.strip()]


def reported_usage(response, sse: bool | None) -> dict:
    """The last usageMetadata the upstream reported in what this client received ({} when none)."""
    if sse is None:
        return response.json().get("usageMetadata", {}) if response.status_code == 200 else {}
    usages = [event["usageMetadata"] for event in stream_events(response.content, sse) if "usageMetadata" in event]
    return usages[-1] if usages else {}


def counted(usage: dict) -> dict:
    counts = {field: int(usage.get(key, 0)) for field, key in TOKEN_FIELDS.items()}
    if "totalTokenCount" not in usage:
        counts["total_tokens"] = counts["prompt_tokens"]
    return counts


# --- a key made with the CLI ----------------------------------------------------------------------------------

def test_a_cli_key_works_until_its_limits_and_revocation(relay_factory, fake_upstream, genai_client, tmp_path):
    env = {"RELAY_DB": str(tmp_path / "team.db"), "RELAY_UPSTREAM_KEYS": UPSTREAM_KEY,
           "RELAY_ADMIN_TOKEN": ADMIN_TOKEN}
    key = create_key(env, "team-a", "--rpm", "3", "--models", "gemini-2.0-*,gemini-2.5-*")
    relay = relay_factory(env=env)  # no RELAY_API_KEYS: the CLI key alone lets a managed relay start
    client = genai_client(relay.url, key, "v1beta")

    assert client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT).text
    with pytest.raises(errors.ClientError) as forbidden:
        client.models.generate_content(model="gemini-3-pro-preview", contents=PROMPT)
    assert (forbidden.value.code, forbidden.value.status) == (403, "PERMISSION_DENIED")
    for _ in range(2):  # the refused model did not use up one of the 3 requests
        assert client.models.generate_content(model="gemini-2.0-flash", contents=PROMPT).text

    with pytest.raises(errors.ClientError) as limited:
        client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    error = limited.value
    assert (error.code, error.status) == (429, "RESOURCE_EXHAUSTED")
    details = {detail["@type"]: detail for detail in error.details["error"]["details"]}
    assert details[QUOTA_FAILURE]["violations"][0]["quotaId"] == "RequestsPerMinutePerKey"
    assert details[QUOTA_FAILURE]["violations"][0]["quotaValue"] == "3"
    assert 0 < parse_duration(details[RETRY_INFO]["retryDelay"]) <= 20

    raw = post(relay, "gemini-2.5-flash", key, "streamGenerateContent", "?alt=sse")
    assert raw.status_code == 429 and 1 <= int(raw.headers["Retry-After"]) <= 20
    assert raw.json()["error"]["details"][1]["@type"] == RETRY_INFO
    assert raw.headers["X-Request-Id"]

    entries = fake_upstream.requests()
    assert len(entries) == 3, "refused calls must not reach the upstream"
    assert all(entry["key"] == UPSTREAM_KEY and key not in json.dumps(entry) for entry in entries)

    def listed():
        result = keys_cli(env, "list")
        line = next(line for line in result.stdout.splitlines() if line.startswith("team-a "))
        return line if not line.split()[-2] == "-" else None  # LAST USED is written in the background
    line = wait_until(listed, timeout=15, interval=0.5)
    assert line and line.split()[:3] == ["team-a", f"…{key[-4:]}", "3"] and line.endswith("active")
    assert key not in keys_cli(env, "list").stdout

    assert keys_cli(env, "revoke", "team-a").returncode == 0

    def rejected():
        try:
            client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
        except errors.ClientError as error:
            return error if error.code == 401 else None
        return None
    revoked = wait_until(rejected, timeout=15, interval=0.5)
    assert revoked and revoked.status == "UNAUTHENTICATED"


# --- usage totals ---------------------------------------------------------------------------------------------

CODE_EXECUTION_STREAM = "code_execution/pydantic-ai__test_code_execution_stream.0.sse.txt"  # prompt 46 → 147
IMAGE_STREAM = ("image_output/js-genai__Client_Tests_generateContentStream_ML_Dev_should_stream_generate_content_"
                "with_image_output.http.0.sse.txt")
USAGE_ONLY_LAST = [
    {"candidates": [{"content": {"parts": [{"text": "Hello"}], "role": "model"}, "index": 0}],
     "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1, "totalTokenCount": 13},
     "modelVersion": "gemini-2.5-flash-lite"},
    {"candidates": [{"content": {"parts": [{"text": " there"}], "role": "model"}, "finishReason": "STOP",
                     "index": 0}], "modelVersion": "gemini-2.5-flash-lite"},
    {"usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 71, "totalTokenCount": 237,
                       "cachedContentTokenCount": 4, "toolUsePromptTokenCount": 65, "thoughtsTokenCount": 89,
                       "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 4}]}},
]


@pytest.fixture
def usage_relay(relay_factory, tmp_path):
    db_path = tmp_path / "usage.db"
    relay = relay_factory(env={"RELAY_DB": str(db_path), "RELAY_UPSTREAM_KEYS": UPSTREAM_KEY,
                               "RELAY_API_KEYS": f"{STATIC_KEY_A},{STATIC_KEY_B}", "RELAY_ADMIN_TOKEN": ADMIN_TOKEN})
    return relay, db_path


def test_usage_totals_equal_what_the_upstream_reported(usage_relay, fake_upstream):
    relay, db_path = usage_relay
    fake_upstream.script([
        {"path_contains": "gemini-2.5-pro:stream", "fixture": CODE_EXECUTION_STREAM},
        {"path_contains": "gemini-2.5-flash-image:stream", "fixture": IMAGE_STREAM},
        {"path_contains": "gemini-2.5-flash-lite:stream", "events": USAGE_ONLY_LAST},
        {"path_contains": "gemini-3-flash-preview:stream", "fixture": CODE_EXECUTION_STREAM, "cut_after_events": 5},
    ])
    calls = [  # (client key, model, method, query, sse: None for unary)
        (STATIC_KEY_A, "gemini-2.5-flash", "generateContent", "", None),
        (STATIC_KEY_A, "gemini-2.5-flash", "generateContent", "", None),
        (STATIC_KEY_A, "gemini-2.5-pro", "streamGenerateContent", "?alt=sse", True),
        (STATIC_KEY_B, "gemini-2.5-pro", "streamGenerateContent", "", False),
        (STATIC_KEY_B, "gemini-2.5-flash-image", "streamGenerateContent", "?alt=sse", True),
        (STATIC_KEY_B, "gemini-2.5-flash-lite", "streamGenerateContent", "?alt=sse", True),
        (STATIC_KEY_A, "gemini-3-flash-preview", "streamGenerateContent", "?alt=sse", True),
        (STATIC_KEY_A, "gemini-2.0-flash", "streamGenerateContent", "", False),
        (STATIC_KEY_B, "gemini-1.5-flash", "countTokens", "", None),
        (STATIC_KEY_B, "missing-model", "generateContent", "", None),
    ]
    expected_by_key: dict[str, dict] = {}
    expected_by_model: dict[str, dict] = {}
    received = {}
    names = {key: client_name(relay, key) for key in (STATIC_KEY_A, STATIC_KEY_B)}
    for key, model, method, query, sse in calls:
        response = post(relay, model, key, method, query)
        request_id = response.headers["X-Request-Id"]
        usage = reported_usage(response, sse) if method != "countTokens" else {}
        received[request_id] = (response.status_code, usage)
        name = names[key]
        for totals in (expected_by_key.setdefault(name, {}), expected_by_model.setdefault(model, {})):
            totals["requests"] = totals.get("requests", 0) + 1
            totals["errors"] = totals.get("errors", 0) + (response.status_code >= 400)
            for field, value in counted(usage).items():
                totals[field] = totals.get(field, 0) + value
    aborted_id = list(received)[6]
    assert received[aborted_id][1]["promptTokenCount"] == 46, "the cut stream should end before the revised count"
    assert sum(totals["total_tokens"] for totals in expected_by_key.values()) > 0

    def usage_by(group):
        return {row[group]: {field: row[field] for field in ("requests", "errors", *TOKEN_FIELDS)}
                for row in admin_usage(relay, group)}
    assert wait_until(lambda: usage_by("key") == expected_by_key, timeout=15, interval=0.3), usage_by("key")
    assert usage_by("model") == expected_by_model

    own = http().get(f"{relay.url}/relay/usage?group=model&days=1", headers={"x-goog-api-key": STATIC_KEY_B},
                     timeout=30).json()
    assert own["client"] == names[STATIC_KEY_B] and own["client"].endswith(STATIC_KEY_B[-4:])
    assert sum(row["requests"] for row in own["rows"]) == expected_by_key[own["client"]]["requests"]
    assert {row["model"] for row in own["rows"]} == {model for key, model, *_ in calls if key == STATIC_KEY_B}
    assert http().get(f"{relay.url}/relay/usage", headers={"x-goog-api-key": "not-a-key-123"},
                      timeout=30).status_code == 401

    store = open_store(None, str(db_path))
    try:
        rows = {row["request_id"]: row for row in store.usage_rows(0, limit=1000)}
    finally:
        store.close()
    assert set(received) <= set(rows)
    for request_id, (status, usage) in received.items():
        row = rows[request_id]
        assert row["status"] == status
        assert {field: row[field] for field in TOKEN_FIELDS} == counted(usage)
    rows_in_order = [rows[request_id] for request_id in received]
    assert rows_in_order[6]["aborted"] and rows_in_order[6]["streamed"]
    assert not any(row["aborted"] for index, row in enumerate(rows_in_order) if index != 6)
    assert rows_in_order[4]["modalities"]["candidates"] == {"IMAGE": 1290}
    assert rows_in_order[0]["upstream"] == "google" and rows_in_order[0]["key_id"].startswith("google:")
    assert rows_in_order[0]["latency_ms"] > 0 and rows_in_order[0]["upstream_model"] == "gemini-2.5-flash"
    assert rows_in_order[9]["status"] == 404
    for key in (UPSTREAM_KEY, STATIC_KEY_A, STATIC_KEY_B, ADMIN_TOKEN):
        assert key not in json.dumps(list(rows.values()), ensure_ascii=False)


# --- two instances, one Redis ---------------------------------------------------------------------------------

def test_two_instances_sharing_redis_enforce_one_limit(relay_factory, fake_upstream, tmp_path):
    with redis_server() as redis_url:
        env = {"REDIS_URL": redis_url, "RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_ADMIN_TOKEN": ADMIN_TOKEN}
        key = create_key({**env, "RELAY_DB": str(tmp_path / "unused.db")}, "shared", "--rpm", "5")
        first = relay_factory(env={**env, "RELAY_DB": str(tmp_path / "first.db")})
        second = relay_factory(env={**env, "RELAY_DB": str(tmp_path / "second.db")})
        started = time.monotonic()
        statuses = {first.url: [], second.url: []}
        for index in range(12):
            relay = (first, second)[index % 2]
            response = post(relay, "gemini-2.5-flash", key)
            statuses[relay.url].append(response.status_code)
            if response.status_code == 429:
                assert response.json()["error"]["details"][0]["violations"][0]["quotaValue"] == "5"
        elapsed = time.monotonic() - started
        served = sum(status == 200 for codes in statuses.values() for status in codes)
        refilled = int(elapsed * 5 / 60)  # 5 a minute: one more every 12 s the test took
        assert 5 <= served <= 5 + refilled, statuses
        assert all(set(codes) <= {200, 429} for codes in statuses.values()), statuses
        assert all(429 in codes for codes in statuses.values()), statuses
        assert len(fake_upstream.requests()) == served

        def shared_usage():
            rows = admin_usage(first, "key")
            return rows if rows and rows[0]["requests"] == 12 else None
        rows = wait_until(shared_usage, timeout=15, interval=0.3)
        assert rows == [{"key": "shared", "requests": 12, "errors": 12 - served, "prompt_tokens": rows[0]["prompt_tokens"],
                         "candidates_tokens": rows[0]["candidates_tokens"], "thoughts_tokens": 0, "cached_tokens": 0,
                         "tool_use_tokens": 0, "total_tokens": 429 * served}]
        assert admin_usage(second, "key") == rows


# --- graceful shutdown ----------------------------------------------------------------------------------------

def test_sigterm_during_load_loses_no_usage_rows(relay_factory, fake_upstream, tmp_path):
    db_path = tmp_path / "sigterm.db"
    relay = relay_factory(env={"RELAY_DB": str(db_path), "RELAY_UPSTREAM_KEYS": UPSTREAM_KEY,
                               "RELAY_API_KEYS": STATIC_KEY_A, "RELAY_GRACEFUL_TIMEOUT": "30"}, workers=2)
    fake_upstream.script([{"path_contains": "streamGenerateContent", "gap_ms": 60},
                          {"path_contains": "generateContent", "delay_headers_ms": 50}])
    responded: list[tuple[str, float]] = []
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(number: int) -> None:
        session = http()
        try:
            while not stop.is_set():
                stream = number % 2 == 0
                try:
                    if stream:
                        response = post(relay, "gemini-2.5-flash", STATIC_KEY_A, "streamGenerateContent", "?alt=sse",
                                        session=session)
                    else:
                        response = post(relay, "gemini-2.5-flash", STATIC_KEY_A, session=session)
                except requests.RequestException as error:
                    with lock:
                        failures.append(type(error).__name__)
                    if relay.process.poll() is not None:
                        return
                    time.sleep(0.05)
                    continue
                with lock:
                    responded.append((response.headers["X-Request-Id"], time.monotonic()))
        finally:
            session.close()

    threads = [threading.Thread(target=client, args=(number,), daemon=True) for number in range(4)]
    for thread in threads:
        thread.start()
    assert wait_until(lambda: len(responded) >= 12, timeout=30), "the load never got going"
    signalled_at = time.monotonic()
    os.kill(relay.process.pid, signal.SIGTERM)  # the gunicorn master, as a PaaS stops a dyno
    try:
        exit_code = relay.process.wait(timeout=90)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert exit_code == 0, relay.output_text()[-3000:]
    assert "Worker graceful timeout" not in relay.output_text()
    finished_after_signal = [request_id for request_id, at in responded if at > signalled_at]
    assert finished_after_signal, "no request was in flight when SIGTERM arrived"

    store = open_store(None, str(db_path))
    try:
        recorded = {row["request_id"] for row in store.usage_rows(0, limit=100_000)}
    finally:
        store.close()
    answered = {request_id for request_id, _ in responded}
    missing = answered - recorded
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no usage row"
