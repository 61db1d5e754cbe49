"""Tests for what relay sends upstream: paths and versions, query strings, headers and the exact body bytes."""

import json
import re
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.support import AUTH, CALLER_KEY, CLIENT_KEY, EMBED_MODEL, MODEL, UPSTREAM_KEY
from tests.support import BODY as CONTENTS
from tests.support import EMPTY_ANSWER as ANSWER
from tests.support import UPSTREAM_URL as UPSTREAM

SSE_ANSWER = b'data: {"candidates": [{"content": {"parts": [{"text": "Hi"}],"role": "model"}}]}\r\n\r\n'
ARRAY_ANSWER = b'[{\n  "candidates": []\n}\n]'

# Odd spacing, escapes, non-ASCII, number spellings and fields relay has never heard of: all must arrive as sent.
UNUSUAL_BODY = (
    b'{ "contents" : [ {"role":"user","parts":[{"text":"caf\\u00e9 \xe2\x98\x95 \\"q\\"",'
    b'"futurePartField":{"x":[1,2.50,1e3,-0.0]}}]}],\n'
    b'  "generation_config": {"temperature": 0.70, "response_mime_type": "application/json",'
    b' "thinking_config": {"include_thoughts": true, "thinking_budget": 128}},\n'
    b'  "someFutureField": {"nested": [true, null, {}]},\t"labels": {"team": "a"} }'
)


def method_body(method, collection="models", model=MODEL):
    """A body each model method accepts (batch items must name the path's model)."""
    if method == "embedContent":
        return b'{"content": {"parts": [{"text": "x"}]}, "taskType": "RETRIEVAL_QUERY"}'
    if method == "batchEmbedContents":
        return ('{"requests": [{"model": "%s/%s", "content": {"parts": [{"text": "x"}]}}]}' % (collection, model)).encode()
    return CONTENTS


def mock_method(mock_upstream, url, method):
    if method == "streamGenerateContent":
        mock_upstream.post(url, body=SSE_ANSWER, content_type="text/event-stream")
    else:
        mock_upstream.post(url, body=ANSWER, content_type="application/json; charset=UTF-8")


def post(client, path, body, headers=AUTH, content_type="application/json"):
    return client.post(path, data=body, headers=headers, content_type=content_type)


def only_call(mock_upstream):
    assert len(mock_upstream.calls) == 1, [call.request.url for call in mock_upstream.calls]
    return mock_upstream.calls[0].request


# -- bodies -----------------------------------------------------------------------------------------


def test_a_body_without_model_is_forwarded_byte_for_byte(managed, mock_upstream):
    mock_upstream.post(f"{UPSTREAM}/v1beta/models/{MODEL}:generateContent", body=ANSWER)
    response = post(managed, f"/v1beta/models/{MODEL}:generateContent", UNUSUAL_BODY)

    assert response.status_code == 200, response.data
    assert response.data == ANSWER
    sent = only_call(mock_upstream)
    assert sent.body == UNUSUAL_BODY
    assert sent.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("method", ["generateContent", "streamGenerateContent", "countTokens"])
def test_no_defaults_are_injected(managed, mock_upstream, method):
    mock_method(mock_upstream, f"{UPSTREAM}/v1beta/models/{MODEL}:{method}?alt=sse", method)
    mock_method(mock_upstream, f"{UPSTREAM}/v1beta/models/{MODEL}:{method}", method)
    suffix = "?alt=sse" if method == "streamGenerateContent" else ""
    response = post(managed, f"/v1beta/models/{MODEL}:{method}{suffix}", CONTENTS)

    assert response.status_code == 200, response.data
    sent = only_call(mock_upstream)
    assert sent.body == CONTENTS
    assert set(json.loads(sent.body)) == {"contents"}


@pytest.mark.parametrize("body_model", [f"models/{MODEL}", MODEL])
@pytest.mark.parametrize("method", ["generateContent", "streamGenerateContent", "countTokens", "embedContent"])
def test_a_matching_body_model_is_dropped_and_everything_else_kept_in_order(managed, mock_upstream, method, body_model):
    mock_method(mock_upstream, f"{UPSTREAM}/v1beta/models/{MODEL}:{method}", method)
    mock_method(mock_upstream, f"{UPSTREAM}/v1beta/models/{MODEL}:{method}?alt=sse", method)
    original = json.loads(method_body(method))
    sent_fields = {"zeta": {"b": [1, 2], "a": None}, **original, "alpha": "ü ☕", "snake_field": {"x_y": 1}}
    body = json.dumps({"model": body_model, **sent_fields}).encode()
    suffix = "?alt=sse" if method == "streamGenerateContent" else ""
    response = post(managed, f"/v1beta/models/{MODEL}:{method}{suffix}", body)

    assert response.status_code == 200, response.data
    forwarded = json.loads(only_call(mock_upstream).body)
    assert forwarded == sent_fields
    assert list(forwarded) == list(sent_fields)


def test_the_legacy_count_tokens_form_keeps_its_inner_model_byte_for_byte(managed, mock_upstream):
    mock_upstream.post(f"{UPSTREAM}/v1beta/models/{MODEL}:countTokens", body=b'{\n  "totalTokens": 3\n}\n')
    body = (b'{\n  "generateContentRequest": {\n    "model": "models/gemini-2.5-flash",\n    "contents": '
            b'[{"parts": [{"text": "Hi"}], "role": "user"}],\n    "generationConfig": {}\n  }\n}')
    response = post(managed, f"/v1beta/models/{MODEL}:countTokens", body)

    assert response.status_code == 200, response.data
    assert response.data == b'{\n  "totalTokens": 3\n}\n'
    assert only_call(mock_upstream).body == body


def test_batch_embed_items_keep_their_models_byte_for_byte(managed, mock_upstream):
    url = f"{UPSTREAM}/v1beta/models/{EMBED_MODEL}:batchEmbedContents"
    mock_upstream.post(url, body=b'{"embeddings": [{"values": [0.1]}, {"values": [0.2]}]}')
    body = (b'{"requests": [{"content": {"parts": [{"text": "a"}]}, "model": "models/gemini-embedding-001", "taskType": 2},'
            b' {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "output_dimensionality": 8}]}')
    response = post(managed, f"/v1beta/models/{EMBED_MODEL}:batchEmbedContents", body)

    assert response.status_code == 200, response.data
    assert only_call(mock_upstream).body == body


def test_cached_content_create_is_forwarded_byte_for_byte(managed, mock_upstream):
    mock_upstream.post(f"{UPSTREAM}/v1beta/cachedContents", body=b'{"name": "cachedContents/abc", "model": "models/gemini-2.5-flash"}')
    body = (b'{"model": "models/gemini-2.5-flash", "contents": [{"role": "user", "parts": [{"text": "long"}]}],'
            b' "ttl": "300s", "displayName": "d", "system_instruction": {"parts": [{"text": "be brief"}]}}')
    response = post(managed, "/v1beta/cachedContents", body)

    assert response.status_code == 200, response.data
    sent = only_call(mock_upstream)
    assert sent.method == "POST"
    assert sent.body == body
    assert sent.headers["x-goog-api-key"] == UPSTREAM_KEY


# -- paths and versions -----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/v1"])
@pytest.mark.parametrize("version", ["v1beta", "v1", "v1alpha"])
def test_the_api_version_is_kept_upstream(managed, mock_upstream, prefix, version):
    mock_upstream.post(f"{UPSTREAM}/{version}/models/{MODEL}:generateContent", body=ANSWER)
    mock_upstream.get(f"{UPSTREAM}/{version}/models", body=b'{"models": []}')
    mock_upstream.get(f"{UPSTREAM}/{version}/models/{MODEL}", body=b'{"name": "models/gemini-2.5-flash"}')

    assert post(managed, f"{prefix}/{version}/models/{MODEL}:generateContent", CONTENTS).status_code == 200
    assert managed.get(f"{prefix}/{version}/models", headers=AUTH).status_code == 200
    assert managed.get(f"{prefix}/{version}/models/{MODEL}", headers=AUTH).status_code == 200

    assert [(call.request.method, call.request.url) for call in mock_upstream.calls] == [
        ("POST", f"{UPSTREAM}/{version}/models/{MODEL}:generateContent"),
        ("GET", f"{UPSTREAM}/{version}/models"),
        ("GET", f"{UPSTREAM}/{version}/models/{MODEL}"),
    ]


@pytest.mark.parametrize("collection", ["models", "tunedModels"])
@pytest.mark.parametrize("method", ["generateContent", "streamGenerateContent", "countTokens", "embedContent",
                                    "batchEmbedContents"])
def test_every_model_method_reaches_the_same_path_upstream(managed, mock_upstream, collection, method):
    model = "my-tuned-model.v2_1" if collection == "tunedModels" else MODEL
    url = f"{UPSTREAM}/v1beta/{collection}/{model}:{method}"
    suffix = "?alt=sse" if method == "streamGenerateContent" else ""
    mock_method(mock_upstream, url + suffix, method)
    body = method_body(method, collection, model)
    response = post(managed, f"/v1beta/{collection}/{model}:{method}{suffix}", body)

    assert response.status_code == 200, response.data
    sent = only_call(mock_upstream)
    assert sent.method == "POST"
    assert sent.url == url + suffix
    assert sent.body == body


def test_a_stream_without_alt_is_forwarded_without_alt(managed, mock_upstream):
    url = f"{UPSTREAM}/v1beta/models/{MODEL}:streamGenerateContent"
    mock_upstream.post(url, body=ARRAY_ANSWER, content_type="application/json; charset=UTF-8")
    response = post(managed, f"/v1beta/models/{MODEL}:streamGenerateContent", CONTENTS)

    assert response.status_code == 200
    assert response.data == ARRAY_ANSWER
    assert only_call(mock_upstream).url == url


def test_the_legacy_sdks_dollar_alt_is_passed_through(managed, mock_upstream):
    url = f"{UPSTREAM}/v1beta/models/{MODEL}:streamGenerateContent"
    mock_upstream.post(url, body=ARRAY_ANSWER, content_type="application/json; charset=UTF-8")
    response = post(managed, f"/v1beta/models/{MODEL}:streamGenerateContent?%24alt=json%3Benum-encoding%3Dint", CONTENTS)

    assert response.status_code == 200
    sent = only_call(mock_upstream)
    assert parse_qsl(urlsplit(sent.url).query) == [("$alt", "json;enum-encoding=int")]


def test_models_list_pagination_is_passed_through(managed, mock_upstream):
    mock_upstream.get(f"{UPSTREAM}/v1beta/models", body=b'{"models": [], "nextPageToken": "Ch9tb2RlbHMv"}')
    response = managed.get("/v1beta/models?pageSize=50&pageToken=Ch9tb2RlbHMvdmVvLTMuMS1nZW5lcmF0ZS1wcmV2aWV3",
                           headers=AUTH)

    assert response.status_code == 200
    sent = only_call(mock_upstream)
    assert sent.method == "GET"
    assert urlsplit(sent.url).path == "/v1beta/models"
    assert parse_qsl(urlsplit(sent.url).query) == [
        ("pageSize", "50"), ("pageToken", "Ch9tb2RlbHMvdmVvLTMuMS1nZW5lcmF0ZS1wcmV2aWV3")]


def test_tuned_models_list_and_get_are_relayed(managed, mock_upstream):
    mock_upstream.get(f"{UPSTREAM}/v1beta/tunedModels", body=b'{"tunedModels": []}')
    mock_upstream.get(f"{UPSTREAM}/v1beta/tunedModels/my-tuned", body=b'{"name": "tunedModels/my-tuned"}')

    assert managed.get("/v1beta/tunedModels?pageSize=5", headers=AUTH).status_code == 200
    assert managed.get("/v1beta/tunedModels/my-tuned", headers=AUTH).status_code == 200
    assert [call.request.url for call in mock_upstream.calls] == [
        f"{UPSTREAM}/v1beta/tunedModels?pageSize=5", f"{UPSTREAM}/v1beta/tunedModels/my-tuned"]


@pytest.mark.parametrize("prefix", ["", "/v1"])
def test_cached_contents_calls_are_relayed_with_method_path_query_and_body(passthrough, mock_upstream, prefix):
    headers = {"x-goog-api-key": CALLER_KEY}
    cache = b'{"name": "cachedContents/abc-123", "model": "models/gemini-2.5-flash"}'
    base = f"{UPSTREAM}/v1beta/cachedContents"
    mock_upstream.get(base, body=b'{"cachedContents": []}')
    mock_upstream.get(f"{base}/abc-123", body=cache)
    mock_upstream.patch(f"{base}/abc-123", body=cache)
    mock_upstream.delete(f"{base}/abc-123", body=b"{}\n")
    patch_body = b'{"ttl": "600s", "unknownField": 1}'

    assert passthrough.get(f"{prefix}/v1beta/cachedContents?pageSize=2&pageToken=t", headers=headers).status_code == 200
    assert passthrough.get(f"{prefix}/v1beta/cachedContents/abc-123", headers=headers).status_code == 200
    response = passthrough.patch(f"{prefix}/v1beta/cachedContents/abc-123?updateMask=ttl", data=patch_body,
                                 headers=headers, content_type="application/json")
    assert response.status_code == 200
    assert response.data == cache
    assert passthrough.delete(f"{prefix}/v1beta/cachedContents/abc-123", headers=headers).status_code == 200

    sent = [(call.request.method, call.request.url, call.request.body) for call in mock_upstream.calls]
    assert sent == [
        ("GET", f"{base}?pageSize=2&pageToken=t", None),
        ("GET", f"{base}/abc-123", None),
        ("PATCH", f"{base}/abc-123?updateMask=ttl", patch_body),
        ("DELETE", f"{base}/abc-123", None),
    ]
    assert all(call.request.headers["x-goog-api-key"] == CALLER_KEY for call in mock_upstream.calls)


# -- headers ----------------------------------------------------------------------------------------


def test_client_identification_headers_are_forwarded_and_credentials_are_not(managed, mock_upstream):
    mock_upstream.post(f"{UPSTREAM}/v1beta/models/{MODEL}:generateContent", body=ANSWER)
    headers = {
        "Authorization": f"Bearer {CLIENT_KEY}",
        "User-Agent": "google-genai-sdk/3.4.0 gl-python/3.11.7",
        "x-goog-api-client": "google-genai-sdk/3.4.0 gl-python/3.11.7",
        "x-goog-request-params": "model=models/gemini-2.5-flash",
        "x-goog-user-project": "my-project",
        "Accept": "*/*",
        "Cookie": "session=s3cret-cookie",
        "Proxy-Authorization": "Basic cHJveHk6cGFzcw==",
        "X-HTTP-Method-Override": "DELETE",
        "X-Forwarded-For": "10.0.0.1",
    }
    response = post(managed, f"/v1beta/models/{MODEL}:generateContent", CONTENTS, headers)

    assert response.status_code == 200, response.data
    sent = only_call(mock_upstream).headers
    assert sent["x-goog-api-key"] == UPSTREAM_KEY
    assert sent["User-Agent"] == "google-genai-sdk/3.4.0 gl-python/3.11.7"
    assert sent["x-goog-api-client"] == "google-genai-sdk/3.4.0 gl-python/3.11.7"
    assert sent["x-goog-request-params"] == "model=models/gemini-2.5-flash"
    # Billing attribution is about the upstream key's project, relay's in managed mode: not the caller's to set.
    assert "x-goog-user-project" not in sent
    assert sent["Content-Type"] == "application/json"
    for name in ("Authorization", "Cookie", "Proxy-Authorization", "X-HTTP-Method-Override", "X-Forwarded-For"):
        assert name not in sent
    assert all(CLIENT_KEY not in value for value in sent.values())


def test_the_callers_x_goog_api_key_is_replaced_not_duplicated(managed, mock_upstream):
    mock_upstream.post(f"{UPSTREAM}/v1beta/models/{MODEL}:generateContent", body=ANSWER)
    post(managed, f"/v1beta/models/{MODEL}:generateContent", CONTENTS, {"X-Goog-Api-Key": CLIENT_KEY})

    sent = only_call(mock_upstream).headers
    assert [value for name, value in sent.items() if name.lower() == "x-goog-api-key"] == [UPSTREAM_KEY]


# -- model ids: nothing a caller sends leaves the allowed upstream paths ----------------------------




BAD_IDS = [
    ("POST", "/v1beta/models/..:generateContent"),
    ("POST", "/v1beta/models/a..b:generateContent"),
    ("POST", "/v1beta/models/%2E%2E:generateContent"),
    ("POST", "/v1beta/models/a%2Fb:generateContent"),
    ("POST", "/v1beta/models/..%2F..%2FcachedContents:generateContent"),
    ("POST", "/v1beta/models/a%252Fb:generateContent"),
    ("POST", "/v1beta/models/a%5Cb:generateContent"),
    ("POST", "/v1beta/models/gemini%202.5:generateContent"),
    ("POST", "/v1beta/models/a:b:generateContent"),
    ("POST", "/v1beta/models/gemini:countTokens:generateContent"),
    ("POST", "/v1beta/models/gemini%3Fx=1:generateContent"),
    ("POST", "/v1beta/models/gemini%23frag:generateContent"),
    ("POST", "/v1beta/models/g%C3%A9mini:generateContent"),
    ("POST", "/v1beta/models/:generateContent"),
    ("POST", "/v1beta/models/" + "a" * 257 + ":generateContent"),
    ("POST", "/v1beta/tunedModels/..:generateContent"),
    ("POST", "/v1beta/models/gemini-2.5-flash:generateContent%2F..%2F..%2Ffiles"),
    ("POST", "/v1beta/models/gemini-2.5-flash:deleteEverything"),
    pytest.param("POST", "/v1beta/models/gemini%0A:generateContent", id="POST-newline"),
    ("GET", "/v1beta/models/.."),
    ("GET", "/v1beta/models/a%2Fb"),
    ("GET", "/v1beta/models/a%2F..%2F..%2Fv1%2FcachedContents"),
    ("GET", "/v1beta/models/gemini%20pro"),
    ("GET", "/v1beta/models/%2E%2E"),
    pytest.param("GET", "/v1beta/models/.", id="GET-dot"),
    pytest.param("GET", "/v1beta/models/gemini%0A", id="GET-newline"),
    ("GET", "/v1beta/cachedContents/.."),
    ("GET", "/v1beta/cachedContents/."),
    ("GET", "/v1beta/cachedContents/a%2Fb"),
    ("DELETE", "/v1beta/cachedContents/..%2Fmodels"),
    ("PATCH", "/v1beta/cachedContents/a.b"),
    pytest.param("GET", "/v1beta/cachedContents/abc%0A", id="GET-cache-newline"),
]


@pytest.mark.parametrize("method, path", BAD_IDS)
def test_bad_resource_ids_are_4xx_and_never_reach_the_upstream(passthrough, mock_upstream, method, path):
    # Any upstream call would be answered, so a relayed request cannot hide behind a 503.
    mock_upstream.add_callback(method, re.compile(r".*"), callback=lambda request: (200, {}, b"{}"))
    response = passthrough.open(path, method=method, data=CONTENTS if method in ("POST", "PATCH") else None,
                                headers={"x-goog-api-key": CALLER_KEY}, content_type="application/json")

    assert 400 <= response.status_code < 500, (response.status_code, response.data)
    assert [call.request.url for call in mock_upstream.calls] == []


def test_the_routing_header_names_the_model_relay_calls(managed, mock_upstream):
    """A legacy SDK's ``x-goog-request-params: model=…`` follows a suffix to the upstream model."""
    mock_method(mock_upstream, f"{UPSTREAM}/v1beta/models/{MODEL}:generateContent", "generateContent")
    response = post(managed, f"/v1beta/models/{MODEL}-nothinking:generateContent", CONTENTS,
                    headers={**AUTH, "x-goog-request-params": f"model=models/{MODEL}-nothinking"})
    assert response.status_code == 200, response.data
    assert only_call(mock_upstream).headers["x-goog-request-params"] == f"model=models/{MODEL}"
