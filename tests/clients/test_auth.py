"""Tests for client authentication: the three ways to present a key, 401s, stripping, passthrough, the access log."""

import hmac
import json
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.support import BODY, CALLER_KEY, CLIENT_KEY, MODEL, UPSTREAM_KEY
from tests.support import EMPTY_ANSWER as ANSWER
from tests.support import GENERATE as GENERATE_PATH
from tests.support import UPSTREAM_URL as UPSTREAM

OTHER_CLIENT_KEY = "relay-other-client-key-9876543210"
WRONG_KEY = "relay-wrong-key-aaaaaaaaaaaaaaaaaa"
# conftest's managed app takes these settings: two client keys, the other one listed first.
MANAGED = {"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": f"{OTHER_CLIENT_KEY},{CLIENT_KEY}"}
GENERATE_URL = UPSTREAM + GENERATE_PATH


def present(way, key):
    """(headers, query string) presenting ``key`` the given way."""
    return {
        "x-goog-api-key": ({"x-goog-api-key": key}, ""),
        "bearer": ({"Authorization": f"Bearer {key}"}, ""),
        "bearer-lowercase-scheme": ({"Authorization": f"bearer {key}"}, ""),
        "query": ({}, f"key={key}"),
        "query-percent-encoded-name": ({}, f"%6Bey={key}"),
        "query-twice": ({}, f"key={key}&key={key}"),
    }[way]


WAYS = ["x-goog-api-key", "bearer", "bearer-lowercase-scheme", "query", "query-percent-encoded-name", "query-twice"]

# Every relayed endpoint, each with a body it accepts.
ENDPOINTS = [
    ("POST", GENERATE_PATH, BODY),
    ("POST", f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", BODY),
    ("POST", f"/v1beta/models/{MODEL}:streamGenerateContent", BODY),
    ("POST", f"/v1beta/models/{MODEL}:countTokens", BODY),
    ("POST", "/v1beta/models/gemini-embedding-001:embedContent", b'{"content": {"parts": [{"text": "x"}]}}'),
    ("POST", "/v1beta/models/gemini-embedding-001:batchEmbedContents",
     b'{"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "x"}]}}]}'),
    ("POST", "/v1beta/tunedModels/my-tuned:generateContent", BODY),
    ("POST", f"/v1/v1beta/models/{MODEL}:generateContent", BODY),
    ("GET", "/v1beta/models", None),
    ("GET", f"/v1beta/models/{MODEL}", None),
    ("GET", "/v1beta/cachedContents", None),
    ("POST", "/v1beta/cachedContents", b'{"model": "models/gemini-2.5-flash", "contents": [{"parts": [{"text": "x"}]}]}'),
    ("GET", "/v1beta/cachedContents/abc123", None),
    ("PATCH", "/v1beta/cachedContents/abc123", b'{"ttl": "300s"}'),
    ("DELETE", "/v1beta/cachedContents/abc123", None),
]


def send(client, method, path, body=None, headers=None):
    return client.open(path, method=method, data=body, headers=headers or {},
                       content_type="application/json" if body is not None else None)


def with_query(path, query):
    if not query:
        return path
    return f"{path}{'&' if '?' in path else '?'}{query}"


def query_pairs(url):
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def assert_no_client_credentials(sent, *keys):
    """Nothing the caller authenticated with reaches the upstream: not in the URL, a header or the body."""
    assert "Authorization" not in sent.headers
    assert all(name != "key" for name, _ in query_pairs(sent.url))
    for key in keys:
        assert key not in sent.url
        assert all(key not in value for name, value in sent.headers.items() if name.lower() != "x-goog-api-key")
        assert key.encode() not in (sent.body or b"")


# -- managed mode -----------------------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_a_valid_key_is_accepted_and_never_forwarded(managed, mock_upstream, way):
    mock_upstream.post(GENERATE_URL, body=ANSWER, content_type="application/json; charset=UTF-8")
    headers, query = present(way, CLIENT_KEY)
    response = send(managed, "POST", with_query(GENERATE_PATH + "?alt=json&pageSize=3", query), BODY, headers)

    assert response.status_code == 200, response.data
    assert response.data == ANSWER
    [call] = mock_upstream.calls
    assert call.request.headers["x-goog-api-key"] == UPSTREAM_KEY
    assert query_pairs(call.request.url) == [("alt", "json"), ("pageSize", "3")]
    assert_no_client_credentials(call.request, CLIENT_KEY)
    assert call.request.body == BODY


def test_the_query_key_is_stripped_wherever_it_sits_among_other_parameters(managed, mock_upstream):
    mock_upstream.post(GENERATE_URL, body=ANSWER)
    response = send(managed, "POST", f"{GENERATE_PATH}?a=1&key={CLIENT_KEY}&b=2&key={CLIENT_KEY}&c=3", BODY)

    assert response.status_code == 200
    [call] = mock_upstream.calls
    assert call.request.url == f"{GENERATE_URL}?a=1&b=2&c=3"


def test_the_second_static_key_is_accepted_too(managed, mock_upstream):
    mock_upstream.post(GENERATE_URL, body=ANSWER)
    response = send(managed, "POST", GENERATE_PATH, BODY, {"x-goog-api-key": OTHER_CLIENT_KEY})
    assert response.status_code == 200
    assert mock_upstream.calls[0].request.headers["x-goog-api-key"] == UPSTREAM_KEY


@pytest.mark.parametrize("method, path, body", ENDPOINTS)
def test_a_missing_key_is_401_on_every_endpoint_and_nothing_is_sent(managed, mock_upstream, google_error, method, path, body):
    response = send(managed, method, path, body)

    stream_array = ":streamGenerateContent" in path and "alt=sse" not in path
    google_error(response, 401, "UNAUTHENTICATED", wrapped=stream_array)
    assert len(mock_upstream.calls) == 0


@pytest.mark.parametrize("method, path, body", ENDPOINTS)
def test_a_wrong_key_is_401_on_every_endpoint_and_nothing_is_sent(managed, mock_upstream, google_error, method, path, body):
    response = send(managed, method, path, body, {"x-goog-api-key": WRONG_KEY})

    stream_array = ":streamGenerateContent" in path and "alt=sse" not in path
    error = google_error(response, 401, "UNAUTHENTICATED", wrapped=stream_array)
    assert WRONG_KEY not in error["message"]
    assert len(mock_upstream.calls) == 0


@pytest.mark.parametrize("way", WAYS)
def test_a_wrong_key_is_401_whichever_way_it_is_presented(managed, mock_upstream, google_error, way):
    headers, query = present(way, WRONG_KEY)
    response = send(managed, "POST", with_query(GENERATE_PATH, query), BODY, headers)

    google_error(response, 401, "UNAUTHENTICATED")
    assert WRONG_KEY.encode() not in response.data
    assert len(mock_upstream.calls) == 0


@pytest.mark.parametrize("headers", [
    {"Authorization": f"Basic {CLIENT_KEY}"},
    {"Authorization": "Bearer "},
    {"Authorization": CLIENT_KEY},
    {"x-goog-api-key": ""},
    {"x-goog-api-key": CLIENT_KEY[:-1]},
    {"x-goog-api-key": CLIENT_KEY + "x"},
    {"x-goog-api-key": UPSTREAM_KEY},  # the upstream key is not a client key
], ids=["basic-scheme", "empty-bearer", "no-scheme", "empty-header", "prefix", "extended", "upstream-key"])
def test_near_misses_are_401(managed, mock_upstream, google_error, headers):
    response = send(managed, "POST", GENERATE_PATH, BODY, headers)
    google_error(response, 401, "UNAUTHENTICATED")
    assert len(mock_upstream.calls) == 0


def test_the_presented_key_is_compared_in_constant_time_against_every_static_key(managed, mock_upstream, monkeypatch):
    compared = []
    real_compare = hmac.compare_digest

    def spy(left, right):
        compared.append((left, right))
        return real_compare(left, right)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    mock_upstream.post(GENERATE_URL, body=ANSWER)

    # OTHER_CLIENT_KEY is listed first: a loop that stopped at the match would compare once.
    assert send(managed, "POST", GENERATE_PATH, BODY, {"x-goog-api-key": OTHER_CLIENT_KEY}).status_code == 200
    assert len(compared) >= 2
    compared.clear()
    assert send(managed, "POST", GENERATE_PATH, BODY, {"x-goog-api-key": WRONG_KEY}).status_code == 401
    assert len(compared) >= 2
    # What is compared are digests, never the raw key.
    assert all(WRONG_KEY not in str(side) for pair in compared for side in pair)


# -- passthrough mode -------------------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_passthrough_forwards_the_callers_own_key_as_x_goog_api_key(passthrough, mock_upstream, way):
    mock_upstream.post(GENERATE_URL, body=ANSWER)
    headers, query = present(way, CALLER_KEY)
    response = send(passthrough, "POST", with_query(GENERATE_PATH + "?alt=json", query), BODY, headers)

    assert response.status_code == 200, response.data
    [call] = mock_upstream.calls
    assert call.request.headers["x-goog-api-key"] == CALLER_KEY
    assert query_pairs(call.request.url) == [("alt", "json")]
    assert "Authorization" not in call.request.headers
    assert CALLER_KEY not in call.request.url


def test_passthrough_without_a_key_is_401_and_nothing_is_sent(passthrough, mock_upstream, google_error):
    response = send(passthrough, "POST", GENERATE_PATH, BODY)
    google_error(response, 401, "UNAUTHENTICATED")
    assert len(mock_upstream.calls) == 0


def test_passthrough_relays_each_callers_key_to_its_own_request(passthrough, mock_upstream):
    mock_upstream.post(GENERATE_URL, body=ANSWER)
    send(passthrough, "POST", GENERATE_PATH, BODY, {"x-goog-api-key": CALLER_KEY})
    send(passthrough, "POST", f"{GENERATE_PATH}?key={CALLER_KEY[::-1]}", BODY)

    assert [call.request.headers["x-goog-api-key"] for call in mock_upstream.calls] == [CALLER_KEY, CALLER_KEY[::-1]]


# -- the access log ---------------------------------------------------------------------------------


def test_the_access_log_has_one_json_line_per_request_and_no_key(app_factory, mock_upstream, access_log):
    client = app_factory(MANAGED).test_client()
    mock_upstream.post(GENERATE_URL, body=ANSWER, content_type="application/json; charset=UTF-8")
    mock_upstream.get(f"{UPSTREAM}/v1beta/models/missing-model", status=404,
                      body=b'{\n  "error": {\n    "code": 404,\n    "message": "not found",\n    "status": "NOT_FOUND"\n  }\n}\n')
    requests_made = [
        ("POST", f"{GENERATE_PATH}?key={CLIENT_KEY}", BODY, {}),
        ("POST", GENERATE_PATH, BODY, {"Authorization": f"Bearer {CLIENT_KEY}"}),
        ("POST", f"{GENERATE_PATH}?key={WRONG_KEY}", BODY, {}),
        ("GET", "/v1beta/models/missing-model", None, {"x-goog-api-key": CLIENT_KEY}),
        ("GET", "/v1beta/nowhere", None, {"x-goog-api-key": CLIENT_KEY}),
    ]
    statuses = []
    for method, path, body, headers in requests_made:
        with send(client, method, path, body, headers) as response:
            statuses.append(response.status_code)
            request_id = response.headers["X-Request-Id"]
        assert access_log[-1]["request_id"] == request_id

    assert statuses == [200, 200, 401, 404, 404]
    assert len(access_log) == len(requests_made)
    assert [line["status"] for line in access_log] == statuses
    assert [line["method"] for line in access_log] == [method for method, *_ in requests_made]
    text = json.dumps(access_log, ensure_ascii=False)
    for secret in (CLIENT_KEY, WRONG_KEY, UPSTREAM_KEY, OTHER_CLIENT_KEY):
        assert secret not in text
    assert "key=" not in text
    assert all("?" not in line["route"] for line in access_log)
