"""Unit tests of the failover loop (relay.pipeline.forward.open_upstream) through the Flask test client, upstreams
mocked with ``responses`` (conftest's ``mock_upstream``), key state in the app's real SQLite store.

Upstreams come from a relay.toml with one key each and distinct priorities (tests/upstream/conftest.py's
``relay``), so the order of attempts is known: ``key-0`` first, then ``key-1``, ...
"""

import json
import time

import pytest
import requests
import responses
from responses import matchers

from relay.upstream.pool import key_id
from tests.support import ADMIN_TOKEN, ANSWER, CLIENT_KEY, GENERATE, MODEL, REQUEST
from tests.support import UPSTREAM_URL as UPSTREAM
from tests.support.google import ERROR_INFO, answer, quota_error
from tests.support.google import error as google_error

STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
SSE_BODY = (b'data: {"candidates": [{"content": {"parts": [{"text": "h"}],"role": "model"}}]}\r\n\r\n'
            b'data: {"candidates": [{"content": {"parts": [{"text": "i"}],"role": "model"}},"finishReason": "STOP"}]}\r\n\r\n')


KEY_INVALID = google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                           {"@type": ERROR_INFO, "reason": "API_KEY_INVALID", "domain": "googleapis.com"})
KEY_BLOCKED = google_error(403, "PERMISSION_DENIED", "Requests to this API are blocked.",
                           {"@type": ERROR_INFO, "reason": "API_KEY_SERVICE_BLOCKED", "domain": "googleapis.com"})
KEY_SUSPENDED = google_error(403, "PERMISSION_DENIED", "Permission denied: Consumer has been suspended.",
                             {"@type": ERROR_INFO, "reason": "CONSUMER_SUSPENDED"})


@pytest.fixture
def upstream(mock_upstream):
    return mock_upstream


def fail(mock, key, exception, path=GENERATE):
    mock.add(responses.POST, UPSTREAM + path.split("?")[0], body=exception,
             match=[matchers.header_matcher({"x-goog-api-key": key})])


def keys_called(mock):
    return [call.request.headers["x-goog-api-key"] for call in mock.calls]


def post(client, path=GENERATE, body=REQUEST):
    return client.post(path, json=body, headers={"x-goog-api-key": CLIENT_KEY})


def blocked(services):
    return services.store.blocked_keys(time.time())


# --- what is retried ----------------------------------------------------------------------------------------------


def test_429_moves_to_the_next_key_and_cools_the_first_for_retry_delay(relay, upstream):
    client, services = relay()
    answer(upstream, "key-0", 429, quota_error("30s"))
    answer(upstream, "key-1")
    response = post(client)
    assert response.status_code == 200 and response.get_json() == ANSWER
    assert keys_called(upstream) == ["key-0", "key-1"]
    until, state = blocked(services)[key_id("u0", "key-0")]
    assert state == "cooling" and until == pytest.approx(time.time() + 30, abs=5)

    assert post(client).status_code == 200
    assert keys_called(upstream) == ["key-0", "key-1", "key-1"]


@pytest.mark.parametrize("status, status_name", [(500, "INTERNAL"), (502, "UNAVAILABLE"), (503, "UNAVAILABLE"),
                                                 (504, "DEADLINE_EXCEEDED")])
def test_server_errors_move_to_the_next_upstream_without_blocking_the_key(relay, upstream, status, status_name):
    client, services = relay()
    answer(upstream, "key-0", status, google_error(status, status_name, "The model is overloaded."))
    answer(upstream, "key-1")
    assert post(client).status_code == 200
    assert keys_called(upstream) == ["key-0", "key-1"]
    assert blocked(services) == {}


@pytest.mark.parametrize("exception", [requests.ConnectionError("refused"), requests.ConnectTimeout("connect"),
                                       requests.ReadTimeout("first byte")])
def test_connection_errors_and_timeouts_move_on(relay, upstream, exception):
    client, _ = relay()
    fail(upstream, "key-0", exception)
    answer(upstream, "key-1")
    assert post(client).status_code == 200
    assert keys_called(upstream) == ["key-0", "key-1"]


@pytest.mark.parametrize("status, body", [
    (400, google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unknown name \"foo\".")),
    (401, google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")),
    (403, google_error(403, "PERMISSION_DENIED", "You do not have permission to access tuned model tunedModels/x.")),
    (404, google_error(404, "NOT_FOUND", f"models/{MODEL} is not found for API version v1beta.")),
])
def test_caller_errors_are_never_retried(relay, upstream, status, body):
    client, services = relay()
    answer(upstream, "key-0", status, body)
    answer(upstream, "key-1")
    response = post(client)
    assert response.status_code == status and response.get_json() == body
    assert keys_called(upstream) == ["key-0"]
    assert blocked(services) == {}


@pytest.mark.parametrize("status, body", [(400, KEY_INVALID), (403, KEY_BLOCKED), (403, KEY_SUSPENDED)])
def test_a_rejected_key_is_disabled_and_the_next_one_answers(relay, upstream, status, body):
    client, services = relay(env={"RELAY_REPROBE_SECONDS": "900"})
    answer(upstream, "key-0", status, body)
    answer(upstream, "key-1")
    assert post(client).status_code == 200
    until, state = blocked(services)[key_id("u0", "key-0")]
    assert state == "disabled" and until == pytest.approx(time.time() + 900, abs=5)
    assert post(client).status_code == 200
    assert keys_called(upstream) == ["key-0", "key-1", "key-1"]


# --- limits -------------------------------------------------------------------------------------------------------


def test_at_most_max_attempts(relay, upstream):
    client, _ = relay(upstreams=4, env={"RELAY_MAX_ATTEMPTS": "2"})
    for index in range(4):
        answer(upstream, f"key-{index}", 503, google_error(503, "UNAVAILABLE", "The model is overloaded."))
    response = post(client)
    assert response.status_code == 503
    assert keys_called(upstream) == ["key-0", "key-1"]


def test_default_is_three_attempts(relay, upstream):
    client, _ = relay(upstreams=5)
    for index in range(5):
        fail(upstream, f"key-{index}", requests.ConnectionError("refused"))
    assert post(client).status_code == 503
    assert keys_called(upstream) == ["key-0", "key-1", "key-2"]


def test_no_attempt_starts_after_the_deadline(relay, upstream):
    client, _ = relay(upstreams=3, env={"RELAY_RETRY_DEADLINE": "0.05"})

    def slow_overloaded(request):
        time.sleep(0.2)
        return 503, {}, json.dumps(google_error(503, "UNAVAILABLE", "The model is overloaded."))

    for index in range(3):
        upstream.add_callback(responses.POST, UPSTREAM + GENERATE, callback=slow_overloaded,
                              match=[matchers.header_matcher({"x-goog-api-key": f"key-{index}"})])
    assert post(client).status_code == 503
    assert keys_called(upstream) == ["key-0"]


# --- when nothing is left -----------------------------------------------------------------------------------------


def test_every_key_cooling_answers_429_with_retry_info_without_calling_upstream(relay, upstream):
    client, _ = relay()
    answer(upstream, "key-0", 429, quota_error("45s"))
    answer(upstream, "key-1", 429, quota_error("20s"))
    first = post(client)
    assert first.status_code == 429 and first.get_json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert keys_called(upstream) == ["key-0", "key-1"]

    second = post(client)
    assert len(upstream.calls) == 2
    assert second.status_code == 429
    error = second.get_json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED" and error["code"] == 429
    [retry] = [detail for detail in error["details"] if detail["@type"] == "type.googleapis.com/google.rpc.RetryInfo"]
    assert 15 < float(retry["retryDelay"].rstrip("s")) <= 20
    assert 15 < int(second.headers["Retry-After"]) <= 20


def test_every_upstream_503_answers_503_unavailable(relay, upstream):
    client, _ = relay()
    for key in ("key-0", "key-1"):
        answer(upstream, key, 503, google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."))
    response = post(client)
    assert response.status_code == 503 and response.get_json()["error"]["status"] == "UNAVAILABLE"
    assert keys_called(upstream) == ["key-0", "key-1"]


def test_every_upstream_unreachable_answers_503_unavailable(relay, upstream):
    client, _ = relay()
    for key in ("key-0", "key-1"):
        fail(upstream, key, requests.ConnectionError("refused"))
    response = post(client)
    assert response.status_code == 503 and response.get_json()["error"]["status"] == "UNAVAILABLE"


def test_every_upstream_timing_out_answers_504(relay, upstream):
    client, _ = relay()
    for key in ("key-0", "key-1"):
        fail(upstream, key, requests.ReadTimeout("first byte"))
    response = post(client)
    assert response.status_code == 504 and response.get_json()["error"]["status"] == "DEADLINE_EXCEEDED"


def test_every_key_disabled_answers_503_without_calling_upstream(relay, upstream):
    client, _ = relay()
    answer(upstream, "key-0", 400, KEY_INVALID)
    answer(upstream, "key-1", 403, KEY_BLOCKED)
    post(client)
    assert keys_called(upstream) == ["key-0", "key-1"]
    response = post(client)
    assert response.status_code == 503 and response.get_json()["error"]["status"] == "UNAVAILABLE"
    assert len(upstream.calls) == 2


# --- streams ------------------------------------------------------------------------------------------------------


def test_a_stream_fails_over_before_its_first_byte(relay, upstream):
    client, _ = relay()
    answer(upstream, "key-0", 429, quota_error("30s"), path=STREAM, content_type="text/event-stream")
    answer(upstream, "key-1", body=SSE_BODY, path=STREAM, content_type="text/event-stream")
    response = post(client, path=STREAM)
    assert response.status_code == 200 and response.data == SSE_BODY
    assert keys_called(upstream) == ["key-0", "key-1"]
    assert all(call.request.url.endswith(":streamGenerateContent?alt=sse") for call in upstream.calls)


def test_a_stream_with_every_key_cooling_gets_429_before_streaming(relay, upstream):
    client, _ = relay()
    for key in ("key-0", "key-1"):
        answer(upstream, key, 429, quota_error("30s"), path=STREAM, content_type="text/event-stream")
    post(client, path=STREAM)
    response = post(client, path=STREAM)
    assert response.status_code == 429
    assert json.loads(response.data)["error"]["status"] == "RESOURCE_EXHAUSTED"


# --- routing: models and aliases ----------------------------------------------------------------------------------


def test_model_patterns_and_aliases_route_to_the_serving_upstream(relay, upstream):
    client, _ = relay(aliases={"fast": MODEL}, u0=["gemini-2.5-pro"], u1=["gemini-2.5-flash*"])
    answer(upstream, "key-1")
    response = post(client, path="/v1beta/models/fast:generateContent")
    assert response.status_code == 200
    [call] = upstream.calls
    assert call.request.url == UPSTREAM + GENERATE and call.request.headers["x-goog-api-key"] == "key-1"


def test_a_model_no_upstream_serves_is_404_without_calling_upstream(relay, upstream):
    client, _ = relay(u0=["gemini-2.5-pro"], u1=["gemini-2.5-pro"])
    response = post(client)
    assert response.status_code == 404 and response.get_json()["error"]["status"] == "NOT_FOUND"
    assert len(upstream.calls) == 0


# --- admin view ---------------------------------------------------------------------------------------------------


def test_admin_view_needs_the_token_and_masks_keys(relay, upstream):
    client, services = relay()
    answer(upstream, "key-0", 429, quota_error("30s"))
    answer(upstream, "key-1")
    post(client)
    services.pool.flush_counts()
    assert client.get("/relay/upstreams").status_code == 401
    assert client.get("/relay/upstreams", headers={"Authorization": f"Bearer {CLIENT_KEY}"}).status_code == 401
    response = client.get("/relay/upstreams", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200
    upstreams = response.get_json()["upstreams"]
    assert [entry["name"] for entry in upstreams] == ["u0", "u1"]
    first, second = upstreams[0]["keys"][0], upstreams[1]["keys"][0]
    assert first["key"] == "…ey-0" and first["state"] == "cooling" and first["until"] > time.time() + 20
    assert first["counters"]["rate_limited"] == 1
    assert second["state"] == "healthy" and second["until"] is None and second["counters"]["requests"] == 1
    assert "key-0" not in response.get_data(as_text=True) and "key-1" not in response.get_data(as_text=True)


# --- every attempt failed on a key: answer for the pool, not for the last key --------------------------------------


def test_every_key_rejected_in_one_request_is_503_not_the_upstream_key_error(relay, upstream):
    client, _ = relay()
    answer(upstream, "key-0", 400, KEY_INVALID)
    answer(upstream, "key-1", 400, KEY_INVALID)
    response = post(client)
    assert response.status_code == 503 and response.get_json()["error"]["status"] == "UNAVAILABLE"


def test_every_key_429_in_one_request_reports_when_the_first_key_frees_up(relay, upstream):
    client, _ = relay()
    answer(upstream, "key-0", 429, quota_error("10s"))
    answer(upstream, "key-1", 429, quota_error("40s"))
    response = post(client)
    assert response.status_code == 429
    [retry] = [detail for detail in response.get_json()["error"]["details"] if detail["@type"].endswith("RetryInfo")]
    assert float(retry["retryDelay"].rstrip("s")) <= 10


# --- per-model quotas: a 429 for one model leaves the key serving the others -------------------------------------


def per_model_quota_error(delay, model):
    violation = {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                 "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                 "quotaDimensions": {"location": "global", "model": model}, "quotaValue": "10"}
    return google_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.",
                        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})


OTHER_MODEL = "gemini-2.5-pro"
OTHER_GENERATE = f"/v1beta/models/{OTHER_MODEL}:generateContent"


def test_a_per_model_429_cools_the_key_for_that_model_only(relay, upstream):
    client, services = relay()
    answer(upstream, "key-0", 429, per_model_quota_error("30s", MODEL))
    answer(upstream, "key-1", 200)
    answer(upstream, "key-0", 200, path=OTHER_GENERATE)

    assert post(client).status_code == 200  # key-0 429s for MODEL, key-1 answers
    assert post(client, OTHER_GENERATE).status_code == 200  # key-0 still serves the other model
    assert post(client).status_code == 200

    sent = [(call.request.url.rsplit("/", 1)[1], call.request.headers["x-goog-api-key"]) for call in upstream.calls]
    assert sent == [(f"{MODEL}:generateContent", "key-0"), (f"{MODEL}:generateContent", "key-1"),
                    (f"{OTHER_MODEL}:generateContent", "key-0"), (f"{MODEL}:generateContent", "key-1")]
    assert key_id("u0", "key-0") not in blocked(services)
    assert f"{key_id('u0', 'key-0')}|{MODEL}" in blocked(services)


def test_a_429_without_a_model_dimension_cools_the_whole_key(relay, upstream):
    client, services = relay()
    answer(upstream, "key-0", 429, quota_error("30s"))
    answer(upstream, "key-1", 200)
    answer(upstream, "key-1", 200, path=OTHER_GENERATE)

    assert post(client).status_code == 200
    assert post(client, OTHER_GENERATE).status_code == 200

    assert [call.request.headers["x-goog-api-key"] for call in upstream.calls] == ["key-0", "key-1", "key-1"]
    assert key_id("u0", "key-0") in blocked(services)


def test_the_admin_view_shows_per_model_cooldowns(relay, upstream):
    client, _ = relay()
    answer(upstream, "key-0", 429, per_model_quota_error("30s", MODEL))
    answer(upstream, "key-1", 200)
    post(client)

    report = client.get("/relay/upstreams", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).get_json()
    first = report["upstreams"][0]["keys"][0]
    assert first["state"] == "healthy"
    assert [entry["model"] for entry in first["model_cooldowns"]] == [MODEL]
    assert first["model_cooldowns"][0]["until"] > time.time() + 20
