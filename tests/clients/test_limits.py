"""Tests of per-key limits: model allowlists, requests and tokens per minute, the daily quota, Google's 429.

Limits run on the real stores (SQLite, and Redis when redis-server is installed) with a controlled
clock; the last tests go through the Flask app to check the bytes a client gets.
"""

import json
from datetime import datetime, timezone

import pytest
import responses

from relay.clients.auth import Client, hash_key
from relay.config import Upstream
from relay.errors import PermissionDenied, ResourceExhausted
from relay.clients.limits import Limits, model_allowed
from relay.pipeline.forward import Call
from relay.store import StoreError, open_store
from tests.support import UPSTREAM_URL as UPSTREAM
from tests.support.clock import FakeClock
from tests.support.google import QUOTA_FAILURE, RETRY_INFO

START = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def clock():
    return FakeClock(START)


def managed(name="team-a", **limits):
    return Client(name=name, kind="managed", **limits)


def call_for(client, model="gemini-2.5-flash", upstream_model=None):
    return Call(request_id="req", http_method="POST", version="v1beta", route="", resource="", method="generateContent",
                query=[], headers={}, client=client, requested_model=model, upstream_model=upstream_model or model)


def error_details(error):
    return {detail["@type"]: detail for detail in error.to_dict()["error"]["details"]}


# --- allowlists ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("requested", "upstream", "allowed"), [
    ("gemini-2.5-flash", "gemini-2.5-flash", True),
    ("gemini-3-pro-preview", "gemini-3-pro-preview", True),
    ("gemini-2.0-flash", "gemini-2.0-flash", False),
    ("gemini-2.5-flash-thinking-high", "gemini-2.5-flash", True),  # a thinking suffix of an allowed model
    ("fast", "gemini-2.5-flash", True),  # an alias for an allowed model
    ("gemini-2.5-cheap", "gemini-1.5-pro", False),  # an alias whose name matches a glob cannot widen it
    ("team-default", "gemini-1.5-pro", True),  # an alias listed by its exact name is allowed on purpose
    ("GEMINI-2.5-FLASH", "GEMINI-2.5-FLASH", False),  # model ids are case-sensitive
])
def test_model_allowlist(requested, upstream, allowed):
    assert model_allowed(("gemini-2.5-*", "gemini-3-*", "team-default"), requested, upstream) is allowed


def test_a_model_outside_the_allowlist_is_403_and_uses_no_request(store, clock):
    limits = Limits(store, clock)
    client = managed(rpm=1, models=("gemini-2.5-*",))
    with pytest.raises(PermissionDenied) as refused:
        limits.admit(call_for(client, "gemini-2.0-flash"))
    assert refused.value.code == 403 and refused.value.to_dict()["error"]["status"] == "PERMISSION_DENIED"
    limits.admit(call_for(client, "gemini-2.5-pro"))  # the one request per minute is still there


# --- requests per minute ------------------------------------------------------------------------------------

def test_requests_per_minute(store, clock):
    limits = Limits(store, clock)
    client = managed(rpm=3)
    for _ in range(3):
        limits.admit(call_for(client))
    with pytest.raises(ResourceExhausted) as refused:
        limits.admit(call_for(client))
    error = refused.value
    body = error.to_dict()["error"]
    assert (body["code"], body["status"]) == (429, "RESOURCE_EXHAUSTED")
    details = error_details(error)
    assert details[QUOTA_FAILURE]["violations"] == [{
        "quotaMetric": "relay/requests_per_minute", "quotaId": "RequestsPerMinutePerKey",
        "quotaDimensions": {"client_key": "team-a", "model": "gemini-2.5-flash"}, "quotaValue": "3",
    }]
    assert details[RETRY_INFO]["retryDelay"] == "20s"  # 3 per minute: one request every 20 s
    assert error.headers["Retry-After"] == "20"
    assert "retry in 20.0s" in body["message"]

    clock.advance(19.5)
    with pytest.raises(ResourceExhausted) as refused:
        limits.admit(call_for(client))
    assert error_details(refused.value)[RETRY_INFO]["retryDelay"] == "0.5s"
    clock.advance(0.5)
    limits.admit(call_for(client))


def test_workers_share_one_limit(store_location, clock):
    """Two Limits on two store connections (two workers, or two instances on one Redis) share the budget."""
    first, second = open_store(*store_location), open_store(*store_location)
    try:
        client = managed(rpm=4)
        admitted = 0
        for limits in [Limits(first, clock), Limits(second, clock)] * 4:
            try:
                limits.admit(call_for(client))
                admitted += 1
            except ResourceExhausted:
                pass
        assert admitted == 4
    finally:
        first.close()
        second.close()


def test_keys_have_separate_budgets(store, clock):
    limits = Limits(store, clock)
    limits.admit(call_for(managed("team-a", rpm=1)))
    limits.admit(call_for(managed("team-b", rpm=1)))
    with pytest.raises(ResourceExhausted):
        limits.admit(call_for(managed("team-a", rpm=1)))


# --- tokens per minute --------------------------------------------------------------------------------------

def test_tokens_per_minute(store, clock):
    limits = Limits(store, clock)
    client = managed(tpm=600, rpm=100)  # refills 10 tokens a second
    call = call_for(client)
    limits.admit(call)
    limits.charge(call, 1000)  # known only once the call is done: the bucket goes 400 into debt
    with pytest.raises(ResourceExhausted) as refused:
        limits.admit(call_for(client))
    details = error_details(refused.value)
    assert details[QUOTA_FAILURE]["violations"][0]["quotaId"] == "TokensPerMinutePerKey"
    assert details[QUOTA_FAILURE]["violations"][0]["quotaValue"] == "600"
    assert details[RETRY_INFO]["retryDelay"] == "40.1s"  # until one token is back: 401 tokens at 10/s
    clock.advance(40.1)
    limits.admit(call_for(client))
    # The refused call took no request from the per-minute budget: 2 of 100 are used.
    assert store.take("rpm:team-a", 100, 100 / 60, 98, clock()) == 0.0


def test_calls_within_the_token_budget_pass(store, clock):
    limits = Limits(store, clock)
    client = managed(tpm=1000)
    for _ in range(3):
        call = call_for(client)
        limits.admit(call)
        limits.charge(call, 300)
    limits.admit(call_for(client))  # 100 left


# --- tokens per day -----------------------------------------------------------------------------------------

def test_daily_tokens(store):
    clock = FakeClock(datetime(2026, 3, 1, 23, 0, tzinfo=timezone.utc).timestamp())
    limits = Limits(store, clock)
    client = managed(daily_tokens=500)
    for tokens in (300, 200):
        call = call_for(client)
        limits.admit(call)
        limits.charge(call, tokens)
    with pytest.raises(ResourceExhausted) as refused:
        limits.admit(call_for(client))
    details = error_details(refused.value)
    assert details[QUOTA_FAILURE]["violations"][0]["quotaId"] == "TokensPerDayPerKey"
    assert details[RETRY_INFO]["retryDelay"] == "3600s"  # until 00:00 UTC
    assert refused.value.headers["Retry-After"] == "3600"
    clock.advance(3600)
    limits.admit(call_for(client))  # a new UTC day


def test_failed_calls_cost_no_tokens(store, clock):
    limits = Limits(store, clock)
    client = managed(tpm=10, daily_tokens=10)
    for _ in range(5):
        call = call_for(client)
        limits.admit(call)
        limits.charge(call, 0)


# --- who is limited, and when the store is down -------------------------------------------------------------

class ExplodingStore:
    """A store every call to which fails the test (or raises StoreError when asked to)."""

    def __init__(self, error=None):
        self.error = error

    def __getattr__(self, name):
        def method(*args, **kwargs):
            if self.error is None:
                raise AssertionError(f"the store was called: {name}")
            raise self.error
        return method


@pytest.mark.parametrize("client", [
    Client(name="static:…abcd", kind="static"),
    Client(name="passthrough:…abcd", kind="passthrough", passthrough_key="AIza-caller-key"),
    managed(),  # a managed key without limits
])
def test_unlimited_callers_cost_no_store_call(client):
    limits = Limits(ExplodingStore())
    for _ in range(3):
        call = call_for(client)
        limits.admit(call)
        limits.charge(call, 5000)


def test_an_unreachable_store_lets_calls_through():
    limits = Limits(ExplodingStore(StoreError("connection refused")))
    client = managed(rpm=1, tpm=10, daily_tokens=10)
    for _ in range(3):
        call = call_for(client)
        limits.admit(call)
        limits.charge(call, 100)


def test_last_used_times_are_written_in_batches_and_kept_on_failure(store, clock):
    store.add_client_key({"name": "team-a", "key_hash": hash_key("sk-relay-a"), "created": START})
    limits = Limits(store, clock)
    limits.admit(call_for(managed()))
    clock.advance(5)
    limits.admit(call_for(managed()))
    assert store.list_client_keys()[0]["last_used"] is None  # nothing written on the request path
    broken = Limits(ExplodingStore(StoreError("down")), clock)
    broken.admit(call_for(managed()))
    with pytest.raises(StoreError):
        broken.flush_last_used()
    assert broken._last_used == {"team-a": START + 5}
    limits.flush_last_used()
    assert store.list_client_keys()[0]["last_used"] == START + 5
    limits.flush_last_used()  # nothing new: no write


# --- through the app: the bytes a client gets ---------------------------------------------------------------

UPSTREAM_KEY = "up-key-limits-123456"
CLIENT_KEY = "sk-relay-limits-test-key-000001"
REPLY = {"candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"}, "finishReason": "STOP"}],
         "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1, "totalTokenCount": 5}}


@pytest.fixture
def app_store(tmp_path):
    opened = open_store(None, str(tmp_path / "app.db"))
    yield opened
    opened.close()


@pytest.fixture
def client_of(app_store, app_factory):
    def make(**record):
        app_store.add_client_key({"name": "team-a", "key_hash": hash_key(CLIENT_KEY), "created": START, **record})
        upstreams = (Upstream(name="google", url=UPSTREAM, keys=(UPSTREAM_KEY,)),)
        app = app_factory(environ={}, overrides={"upstreams": upstreams}, store=app_store)
        return app.test_client()
    return make


def post(test_client, model="gemini-2.5-flash", stream=False):
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    response = test_client.post(f"/v1beta/models/{model}:{method}", headers={"x-goog-api-key": CLIENT_KEY},
                                json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    response.get_data()  # read the whole body, as a client would, before the response is closed
    response.close()
    return response


@responses.activate
def test_over_the_limit_a_client_gets_googles_429(client_of, app_store):
    responses.add(responses.POST, f"{UPSTREAM}/v1beta/models/gemini-2.5-flash:generateContent", json=REPLY)
    test_client = client_of(rpm=2)
    assert [post(test_client).status_code for _ in range(2)] == [200, 200]
    refused = post(test_client)
    assert refused.status_code == 429
    assert refused.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert 1 <= int(refused.headers["Retry-After"]) <= 30
    assert refused.data.startswith(b'{\n  "error": {\n    "code": 429,') and refused.data.endswith(b"}\n")
    error = json.loads(refused.data)["error"]
    assert list(error) == ["code", "message", "status", "details"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert [detail["@type"] for detail in error["details"]] == [QUOTA_FAILURE, RETRY_INFO]
    assert error["details"][1]["retryDelay"].endswith("s")
    assert len(responses.calls) == 2  # the refused call never reached the upstream

    sse_refused = post(test_client, stream=True)  # pre-stream errors on alt=sse: plain JSON, SSE content type
    assert sse_refused.status_code == 429 and sse_refused.headers["Content-Type"].startswith("text/event-stream")
    assert json.loads(sse_refused.data)["error"]["details"][0]["@type"] == QUOTA_FAILURE

    services = test_client.application.extensions["relay"]
    services.usage.flush()
    assert sorted(row["status"] for row in app_store.usage_rows(0)) == [200, 200, 429, 429]


@responses.activate
def test_a_model_outside_the_allowlist_gets_403_without_an_upstream_call(client_of):
    test_client = client_of(models=["gemini-3-*"])
    refused = post(test_client, "gemini-2.5-flash")
    assert refused.status_code == 403
    assert json.loads(refused.data)["error"]["status"] == "PERMISSION_DENIED"
    assert len(responses.calls) == 0


@responses.activate
def test_token_limits_use_the_tokens_google_reported(client_of, app_store):
    responses.add(responses.POST, f"{UPSTREAM}/v1beta/models/gemini-2.5-flash:generateContent", json=REPLY)
    test_client = client_of(daily_tokens=10)
    assert [post(test_client).status_code for _ in range(3)] == [200, 200, 429]  # 5 + 5 tokens, then the quota
    error = json.loads(post(test_client).data)["error"]
    assert error["details"][0]["violations"][0]["quotaId"] == "TokensPerDayPerKey"
