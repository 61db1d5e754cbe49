"""Tests for error mapping: relay's own errors in Google's shape, and upstream errors relayed intact but key-free."""

import json
import logging
import socket

import pytest
import requests

import relay.api.gemini
from tests.support import AUTH, CALLER_KEY, ERRORS, GOOGLE_JSON, MANAGED, UPSTREAM_KEY
from tests.support import GENERATE as GENERATE_PATH
from tests.support import STREAM as STREAM_PATH
from tests.support import UPSTREAM_URL as UPSTREAM

BODY = {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}
# Every shape a model call can take: unary, JSON-array stream, SSE stream.
CALL_SHAPES = [("unary", GENERATE_PATH), ("array", STREAM_PATH), ("sse", STREAM_PATH + "?alt=sse")]
SHAPE_IDS = [shape for shape, _ in CALL_SHAPES]


def issue_body(entry_id):
    """The error body of one ``errors/from_issues.json`` entry, as bytes Google would send them."""
    entries = json.loads((ERRORS / "from_issues.json").read_text())["entries"]
    [entry] = [entry for entry in entries if entry["id"] == entry_id]
    if "body_raw" in entry:
        return entry["body_raw"].encode()
    return (json.dumps(entry["body"], indent=2, ensure_ascii=False) + "\n").encode()



def assert_google_bytes(response):
    """Google's byte format: 2-space pretty JSON, keys code/message/status[/details], trailing newline."""
    text = response.data.decode()
    body = json.loads(text.removeprefix("[").removesuffix("]"))
    assert text.removeprefix("[").removesuffix("]") == json.dumps(body, indent=2, ensure_ascii=False) + "\n"
    assert list(body["error"])[:3] == ["code", "message", "status"]


def assert_stream_shaped(response, shape):
    if shape == "array":
        assert response.data.startswith(b"[{") and response.data.endswith(b"}\n]")
        assert response.content_type == GOOGLE_JSON
    elif shape == "sse":
        assert response.data.startswith(b"{\n") and not response.data.startswith(b"data:")
        assert response.content_type.startswith("text/event-stream")
    else:
        assert response.data.startswith(b"{\n")
        assert response.content_type == GOOGLE_JSON


@pytest.fixture
def managed(app_factory):
    """A fresh app: upstream errors (429, invalid key) change its key pool's state."""
    return app_factory(MANAGED).test_client()


@pytest.fixture
def passthrough(app_factory):
    """No upstream keys: the caller's own key goes upstream, so Google's verdict on it is the caller's."""
    return app_factory({}).test_client()


@pytest.fixture(scope="module")
def shared(module_app_factory):
    """One app for the tests that only see relay's own errors (they leave no key state behind)."""
    return module_app_factory(MANAGED).test_client()


@pytest.fixture(scope="module")
def small_limit(module_app_factory):
    return module_app_factory({**MANAGED, "RELAY_MAX_BODY_MB": "1"}).test_client()


@pytest.fixture
def closed_port_url():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- relay's own errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("method, path", [
    ("GET", "/"),
    ("GET", "/v1beta"),
    ("GET", "/v1beta/corpora"),
    ("POST", "/v2/models/gemini-2.5-flash:generateContent"),
    ("POST", "/v1beta/models/gemini-2.5-flash:predictBatch"),
    ("POST", "/v1beta/models/gemini-2.5-flash"),
    ("GET", "/v1beta/models/gemini-2.5-flash/evaluations/x"),
    ("POST", "/v1/v1/v1beta/models/gemini-2.5-flash:generateContent"),
])
def test_unknown_routes_are_google_404s(shared, mock_upstream, google_error, method, path):
    response = shared.open(path, method=method, json=BODY if method == "POST" else None, headers=AUTH)

    google_error(response, 404, "NOT_FOUND")
    assert response.content_type == GOOGLE_JSON
    assert_google_bytes(response)
    assert len(mock_upstream.calls) == 0


@pytest.mark.parametrize("method, path", [
    ("DELETE", GENERATE_PATH),
    ("PUT", GENERATE_PATH),
    ("PUT", "/v1beta/models"),
    ("DELETE", "/v1beta/models"),
    ("PATCH", "/v1beta/cachedContents"),
    ("POST", "/v1beta/cachedContents/abc"),
    ("PUT", "/v1/v1beta/cachedContents/abc"),
    pytest.param("GET", GENERATE_PATH, id="GET-generateContent"),
])
def test_wrong_methods_are_google_405s(shared, mock_upstream, google_error, method, path):
    response = shared.open(path, method=method, json=BODY, headers=AUTH)

    error = google_error(response, 405)
    assert method in error["message"]
    assert response.content_type == GOOGLE_JSON
    assert_google_bytes(response)
    assert len(mock_upstream.calls) == 0


def test_a_405_says_which_methods_are_allowed(shared):
    response = shared.delete(GENERATE_PATH, headers=AUTH)

    assert response.status_code == 405
    assert "POST" in response.headers.get("Allow", "")


@pytest.mark.parametrize("shape, path", CALL_SHAPES, ids=SHAPE_IDS)
def test_an_oversized_body_is_a_google_413_and_nothing_is_sent(small_limit, mock_upstream, google_error, shape, path):
    client = small_limit
    text = "a" * (2 * 1024 * 1024)
    response = client.post(path, json={"contents": [{"parts": [{"text": text}]}]}, headers=AUTH)

    error = google_error(response, 413, wrapped=shape == "array")
    assert "1048576" in error["message"]
    assert_stream_shaped(response, shape)
    assert len(mock_upstream.calls) == 0


def test_a_body_just_under_the_limit_is_relayed(small_limit, mock_upstream):
    client = small_limit
    mock_upstream.post(UPSTREAM + GENERATE_PATH, body=b"{}")
    body = json.dumps({"contents": [{"parts": [{"text": "a" * (1024 * 1024 - 100)}]}]}).encode()
    assert len(body) <= 1024 * 1024

    response = client.post(GENERATE_PATH, data=body, content_type="application/json", headers=AUTH)
    assert response.status_code == 200
    assert mock_upstream.calls[0].request.body == body


@pytest.mark.parametrize("shape, path", CALL_SHAPES, ids=SHAPE_IDS)
def test_an_unreachable_upstream_is_a_google_503(app_factory, google_error, closed_port_url, shape, path):
    client = app_factory({**MANAGED, "RELAY_UPSTREAM_URL": closed_port_url}).test_client()
    response = client.post(path, json=BODY, headers=AUTH)

    error = google_error(response, 503, "UNAVAILABLE", wrapped=shape == "array")
    assert str(closed_port_url.rsplit(":", 1)[1]) not in error["message"]
    assert_stream_shaped(response, shape)
    assert_google_bytes(response)


def test_an_unreachable_upstream_on_a_models_list_is_a_google_503(app_factory, google_error, closed_port_url):
    client = app_factory({"RELAY_UPSTREAM_URL": closed_port_url}).test_client()
    response = client.get("/v1beta/models", headers={"x-goog-api-key": CALLER_KEY})
    google_error(response, 503, "UNAVAILABLE")


@pytest.mark.parametrize("shape, path", CALL_SHAPES, ids=SHAPE_IDS)
def test_an_upstream_timeout_is_a_google_504(shared, mock_upstream, google_error, shape, path):
    mock_upstream.post(UPSTREAM + path, body=requests.exceptions.ReadTimeout("read timed out"))
    response = shared.post(path, json=BODY, headers=AUTH)

    google_error(response, 504, "DEADLINE_EXCEEDED", wrapped=shape == "array")
    assert_stream_shaped(response, shape)
    assert len(mock_upstream.calls) == 1


@pytest.mark.parametrize("shape, path", CALL_SHAPES, ids=SHAPE_IDS)
def test_an_unexpected_bug_is_a_google_500_without_a_traceback(shared, mock_upstream, google_error, monkeypatch,
                                                               caplog, shape, path):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals at /srv/relay/x.py line 7")

    monkeypatch.setattr(relay.api.gemini, "validate_body", broken)
    with caplog.at_level(logging.ERROR, logger="relay"):
        response = shared.post(path, json=BODY, headers=AUTH)

    error = google_error(response, 500, "INTERNAL", wrapped=shape == "array")
    assert_stream_shaped(response, shape)
    for leak in (b"Traceback", b"RuntimeError", b"secret internals", b".py", b"File \""):
        assert leak not in response.data
    request_id = response.headers["X-Request-Id"]
    assert request_id in error["message"]
    [record] = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert request_id in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert len(mock_upstream.calls) == 0


def test_a_bug_in_the_upstream_call_is_a_google_500_too(shared, mock_upstream, google_error, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("unexpected")

    monkeypatch.setattr("relay.pipeline.forward.send", broken)
    response = shared.post(GENERATE_PATH, json=BODY, headers=AUTH)

    google_error(response, 500, "INTERNAL")
    assert b"KeyError" not in response.data


def test_relay_errors_carry_a_request_id_header(shared):
    response = shared.post(GENERATE_PATH, json=BODY)
    assert response.status_code == 401
    assert len(response.headers["X-Request-Id"]) >= 16


# -- upstream errors --------------------------------------------------------------------------------


def test_an_upstream_429_is_relayed_byte_for_byte_with_its_retry_info(managed, mock_upstream):
    body = (ERRORS / "vercel-ai__google-429-retry-info.json").read_bytes()
    mock_upstream.post(UPSTREAM + GENERATE_PATH, status=429, body=body, content_type=GOOGLE_JSON)
    response = managed.post(GENERATE_PATH, json=BODY, headers=AUTH)

    assert response.status_code == 429
    assert response.data == body
    assert response.content_type == GOOGLE_JSON
    details = json.loads(response.data)["error"]["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "34.4s"} in details


def test_an_upstream_429_with_quota_failure_and_help_is_relayed_byte_for_byte(managed, mock_upstream):
    body = issue_body("429-quota-freetier-full")
    mock_upstream.post(UPSTREAM + GENERATE_PATH, status=429, body=body, content_type=GOOGLE_JSON)
    response = managed.post(GENERATE_PATH, json=BODY, headers=AUTH)

    assert response.status_code == 429
    assert response.data == body


@pytest.mark.parametrize("entry_id, status", [
    ("503-high-demand", 503),
    ("400-location-unsupported", 400),
    ("400-badrequest-fieldviolations-with-field", 400),
])
def test_upstream_errors_are_relayed_with_status_and_body(managed, mock_upstream, entry_id, status):
    body = issue_body(entry_id)
    mock_upstream.post(UPSTREAM + GENERATE_PATH, status=status, body=body, content_type=GOOGLE_JSON)
    response = managed.post(GENERATE_PATH, json=BODY, headers=AUTH)

    assert response.status_code == status
    assert response.data == body


def test_an_upstream_404_on_an_sse_stream_is_relayed_as_plain_json(managed, mock_upstream):
    recording = json.loads((ERRORS / "js-genai__Chats_Tests_sendMessage_Send_message_stream_with_error.http.json").read_text())
    recorded = recording["interactions"][0]["response"]
    body = recorded["body_raw"].encode()
    mock_upstream.post(f"{UPSTREAM}/v1beta/models/custom-gemini-2.0-flash:streamGenerateContent?alt=sse",
                       status=404, body=body, content_type="text/event-stream")
    response = managed.post("/v1beta/models/custom-gemini-2.0-flash:streamGenerateContent?alt=sse",
                            json=recording["interactions"][0]["request"]["body_json"], headers=AUTH)

    assert response.status_code == 404
    assert response.data == body
    assert response.content_type.startswith("text/event-stream")


def test_an_invalid_caller_key_is_relayed_as_google_said_in_passthrough(passthrough, mock_upstream):
    body = issue_body("400-api-key-invalid-unary")
    mock_upstream.post(UPSTREAM + GENERATE_PATH, status=400, body=body, content_type=GOOGLE_JSON)
    response = passthrough.post(GENERATE_PATH, json=BODY, headers=AUTH)

    assert response.status_code == 400
    assert response.data == body


def test_an_upstream_array_wrapped_error_is_relayed_as_sent(passthrough, mock_upstream):
    body = issue_body("400-api-key-invalid-array-wrapped")
    mock_upstream.post(UPSTREAM + STREAM_PATH, status=400, body=body, content_type=GOOGLE_JSON)
    response = passthrough.post(STREAM_PATH, json=BODY, headers=AUTH)

    assert response.status_code == 400
    assert response.data == body


def test_google_rejecting_relays_own_key_is_a_503_not_an_invalid_key_for_the_caller(managed, mock_upstream, google_error):
    body = issue_body("400-api-key-invalid-unary")
    mock_upstream.post(UPSTREAM + GENERATE_PATH, status=400, body=body, content_type=GOOGLE_JSON)
    response = managed.post(GENERATE_PATH, json=BODY, headers=AUTH)

    google_error(response, 503, "UNAVAILABLE")
    assert b"API key not valid" not in response.data


@pytest.mark.parametrize("shape, path", CALL_SHAPES, ids=SHAPE_IDS)
def test_an_upstream_key_echoed_in_an_error_body_is_redacted(managed, mock_upstream, shape, path):
    body = (b'{\n  "error": {\n    "code": 400,\n    "message": "API key not valid: ' + UPSTREAM_KEY.encode()
            + b' (x-goog-api-key=' + UPSTREAM_KEY.encode() + b')",\n    "status": "INVALID_ARGUMENT"\n  }\n}\n')
    mock_upstream.post(UPSTREAM + path, status=400, body=body, content_type=GOOGLE_JSON)
    response = managed.post(path, json=BODY, headers=AUTH)

    assert response.status_code == 400
    assert UPSTREAM_KEY.encode() not in response.data
    assert UPSTREAM_KEY[-12:].encode() not in response.data
    error = json.loads(response.data)["error"]
    assert error["message"].startswith("API key not valid: ")
    assert error["status"] == "INVALID_ARGUMENT"


def test_a_passthrough_key_echoed_in_an_error_body_is_redacted(app_factory, mock_upstream):
    client = app_factory({}).test_client()
    body = b'{"error": {"code": 400, "message": "API key not valid: ' + CALLER_KEY.encode() + b'", "status": "INVALID_ARGUMENT"}}'
    mock_upstream.post(UPSTREAM + GENERATE_PATH, status=400, body=body, content_type=GOOGLE_JSON)
    response = client.post(f"{GENERATE_PATH}?key={CALLER_KEY}", json=BODY)

    assert response.status_code == 400
    assert CALLER_KEY.encode() not in response.data
    assert json.loads(response.data)["error"]["message"].startswith("API key not valid: ")


def test_an_upstream_key_echoed_in_an_error_header_is_not_relayed(managed, mock_upstream):
    mock_upstream.post(UPSTREAM + GENERATE_PATH, status=403, content_type=GOOGLE_JSON,
                       headers={"X-Debug-Request": f"POST {GENERATE_PATH} key={UPSTREAM_KEY}"},
                       body=b'{"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}')
    response = managed.post(GENERATE_PATH, json=BODY, headers=AUTH)

    assert response.status_code == 403
    assert all(UPSTREAM_KEY not in value for value in response.headers.values())


def test_no_relay_response_carries_the_upstream_key(managed, mock_upstream):
    mock_upstream.post(UPSTREAM + GENERATE_PATH, body=b'{"candidates": []}')
    responses_seen = [
        managed.post(GENERATE_PATH, json=BODY, headers=AUTH),
        managed.post(GENERATE_PATH, json=BODY, headers={"x-goog-api-key": "wrong-key-0000000000"}),
        managed.post(GENERATE_PATH, json={"contents": []}, headers=AUTH),
        managed.get("/v1beta/nowhere", headers=AUTH),
    ]
    for response in responses_seen:
        assert UPSTREAM_KEY.encode() not in response.data
        assert all(UPSTREAM_KEY not in value for value in response.headers.values())


# -- relay's errors on stream calls, before the first byte ------------------------------------------


@pytest.mark.parametrize("shape, path", CALL_SHAPES, ids=SHAPE_IDS)
def test_a_401_keeps_the_stream_shape(shared, mock_upstream, google_error, shape, path):
    response = shared.post(path, json=BODY)

    google_error(response, 401, "UNAUTHENTICATED", wrapped=shape == "array")
    assert_stream_shaped(response, shape)
    assert_google_bytes(response)


@pytest.mark.parametrize("shape, path", CALL_SHAPES, ids=SHAPE_IDS)
def test_an_upstream_connection_error_keeps_the_stream_shape(shared, mock_upstream, google_error, shape, path):
    mock_upstream.post(UPSTREAM + path, body=requests.exceptions.ConnectionError("refused"))
    response = shared.post(path, json=BODY, headers=AUTH)

    google_error(response, 503, "UNAVAILABLE", wrapped=shape == "array")
    assert_stream_shaped(response, shape)


@pytest.mark.parametrize("shape, path", [
    ("unary", "/v1beta/models/bad..id:generateContent"),
    pytest.param("array", "/v1beta/models/bad..id:streamGenerateContent",
        id="array"),
    pytest.param("sse", "/v1beta/models/bad..id:streamGenerateContent?alt=sse",
        id="sse"),
])
def test_a_bad_model_id_keeps_the_stream_shape(shared, mock_upstream, google_error, shape, path):
    response = shared.post(path, json=BODY, headers=AUTH)

    google_error(response, 400, "INVALID_ARGUMENT", wrapped=shape == "array")
    assert_stream_shaped(response, shape)
    assert len(mock_upstream.calls) == 0
