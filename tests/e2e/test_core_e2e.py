"""End-to-end acceptance tests of the core relay: real gunicorn + gevent relay, real SDK, fake upstream.

Every test asserts on what the fake upstream RECEIVED (path with version, query, key header, body bytes
compared with what the same SDK call sends straight to the fake) as well as on what the client got.
"""
from __future__ import annotations

import json
import time

import pytest
import requests
from google.genai import errors

from .harness import FIXTURES, body_bytes, header_values, http, wait_until

pytestmark = pytest.mark.timeout(60)

UPSTREAM_KEY = "up-key-e2e-7Qm2vXr"
OTHER_UPSTREAM_KEY = "up-key-e2e-gemini-env-4Tt"
CLIENT_KEY = "client-key-e2e-Zx91aa"
SECOND_CLIENT_KEY = "client-key-e2e-Zx92bb"
WRONG_KEY = "wrong-key-e2e-Pp00cc"
CALLER_KEY = "caller-key-e2e-Hk55dd"
ALL_KEYS = (UPSTREAM_KEY, OTHER_UPSTREAM_KEY, CLIENT_KEY, SECOND_CLIENT_KEY, WRONG_KEY, CALLER_KEY)

MODEL = "gemini-2.0-flash"
PROMPT = "why is the sky blue?"
UNARY_FIXTURE = "generate_text/js-genai__Chats_Tests_sendMessage_Google_AI_with_text.http.json"
SSE_FIXTURE = "stream_sse/js-genai__Chats_Tests_sendMessage_Google_AI_with_text_stream.http.0.sse.txt"
ARRAY_FIXTURE = "stream_json_array/llm-gemini__test_prompt.0.jsonarray.txt"
EMBED_FIXTURE = "embeddings/llm-gemini__test_embedding_gemini-embedding-001.json"
MODELS_FIXTURE = "models_list/llm-gemini__test_model_list.json"
RAW_BODY = json.dumps({"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}).encode()


def recorded_body(reference: str) -> bytes:
    return json.loads((FIXTURES / reference).read_text())["interactions"][0]["response"]["body_raw"].encode()


def sse_events(raw: bytes) -> list[bytes]:
    return [block + b"\r\n\r\n" for block in raw.split(b"\r\n\r\n")[:-1]]


def event_text(event: bytes) -> str:
    payload = json.loads(event[len(b"data: "):])
    return "".join(part.get("text", "") for part in payload["candidates"][0]["content"]["parts"])


UNARY_TEXT = json.loads(recorded_body(UNARY_FIXTURE))["candidates"][0]["content"]["parts"][0]["text"]
SSE_BYTES = (FIXTURES / SSE_FIXTURE).read_bytes()
SSE_TEXTS = [event_text(event) for event in sse_events(SSE_BYTES)]


@pytest.fixture(scope="module")
def managed_relay(module_relay_factory):
    return module_relay_factory(env={"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY,
                                     "RELAY_API_KEYS": f"{CLIENT_KEY},{SECOND_CLIENT_KEY}"})


@pytest.fixture(scope="module")
def passthrough_relay(module_relay_factory):
    return module_relay_factory(env={})


def direct_reference(fake, genai_client, call, api_version="v1beta") -> dict:
    """What the SDK sends when pointed straight at the fake (then the fake is reset)."""
    call(genai_client(fake.url, UPSTREAM_KEY, api_version))
    [entry] = fake.requests()
    fake.reset()
    return entry


def assert_forwarded(entry: dict, *, path: str, query: str = "", upstream_key: str = UPSTREAM_KEY,
                     reference: dict | None = None, body: bytes | None = None) -> None:
    """The upstream request carries exactly the upstream key, in the header, and nothing of the client's."""
    assert entry["path"] == path
    assert entry["query"] == query
    assert header_values(entry, "x-goog-api-key") == [upstream_key]
    assert header_values(entry, "authorization") == []
    for key in set(ALL_KEYS) - {upstream_key}:
        assert key not in json.dumps(entry["headers"]) and key not in entry["query"]
    if reference is not None:
        assert body_bytes(entry) == body_bytes(reference), "relay changed the request body"
        assert entry["method"] == reference["method"]
    if body is not None:
        assert body_bytes(entry) == body


def request_id_of(headers) -> str:
    value = {name.lower(): value for name, value in dict(headers).items()}.get("x-request-id")
    assert value, f"no X-Request-Id in {dict(headers)}"
    return value


def relay_post(relay, path: str, key_headers=None, body: bytes = RAW_BODY, stream: bool = False):
    headers = {"Content-Type": "application/json", **(key_headers or {})}
    return http().post(relay.url + path, data=body, headers=headers, stream=stream, timeout=30)


# --- generate / stream ---------------------------------------------------------------------------------------

def test_generate_content_via_sdk(managed_relay, fake_upstream, genai_client):
    def call(client):
        return client.models.generate_content(model=MODEL, contents=PROMPT)
    reference = direct_reference(fake_upstream, genai_client, call)
    response = call(genai_client(managed_relay.url, CLIENT_KEY, "v1beta"))
    assert response.text == UNARY_TEXT
    assert response.usage_metadata.total_token_count == 429
    request_id_of(response.sdk_http_response.headers)
    [entry] = fake_upstream.requests()
    assert_forwarded(entry, path=f"/v1beta/models/{MODEL}:generateContent", reference=reference)


def test_sse_stream_via_sdk(managed_relay, fake_upstream, genai_client):
    def call(client):
        return list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))
    reference = direct_reference(fake_upstream, genai_client, call)
    chunks = call(genai_client(managed_relay.url, CLIENT_KEY, "v1beta"))
    assert [chunk.text for chunk in chunks] == SSE_TEXTS
    assert chunks[-1].candidates[0].finish_reason == "STOP"
    [entry] = fake_upstream.requests()
    assert_forwarded(entry, path=f"/v1beta/models/{MODEL}:streamGenerateContent", query="alt=sse",
                     reference=reference)


def test_sse_events_reach_the_sdk_before_upstream_finishes(managed_relay, fake_upstream, genai_client):
    fake_upstream.script({"path_contains": "streamGenerateContent", "fixture": SSE_FIXTURE, "gap_ms": 400})
    client = genai_client(managed_relay.url, CLIENT_KEY, "v1beta")
    received_at, texts = [], []
    for chunk in client.models.generate_content_stream(model=MODEL, contents=PROMPT):
        received_at.append(time.time())
        texts.append(chunk.text)
    assert texts == SSE_TEXTS
    [entry] = fake_upstream.requests()
    sent_at = entry["event_times"]
    assert len(sent_at) == len(texts)
    assert received_at[0] < sent_at[-1] - 2.0, "first chunk only arrived near the end of the upstream stream"
    late = [i for i in range(len(sent_at) - 1) if received_at[i] >= sent_at[i + 1]]
    assert not late, f"events {late} reached the client only after the upstream sent the next one (buffering)"


def test_sse_bytes_are_identical_to_upstream(managed_relay, fake_upstream):
    with relay_post(managed_relay, f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                    {"x-goog-api-key": CLIENT_KEY}, stream=True) as response:
        content = b"".join(response.iter_content(chunk_size=None))
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        request_id_of(response.headers)
    assert content == SSE_BYTES
    [entry] = fake_upstream.requests()
    assert_forwarded(entry, path=f"/v1beta/models/{MODEL}:streamGenerateContent", query="alt=sse", body=RAW_BODY)


@pytest.mark.parametrize("query", ["", "?alt=sse"])
def test_repeated_upstream_headers_reach_the_caller_apart(managed_relay, fake_upstream, query):
    """Google sends Vary three times; relay passes each one on, as sent (not folded into one line)."""
    method = "streamGenerateContent" if query else "generateContent"
    with relay_post(managed_relay, f"/v1beta/models/{MODEL}:{method}{query}", {"x-goog-api-key": CLIENT_KEY},
                    stream=True) as response:
        b"".join(response.iter_content(chunk_size=None))
        assert response.status_code == 200
        assert response.raw.headers.getlist("Vary") == ["Origin", "X-Origin", "Referer"]
        assert response.raw.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]


def test_json_array_stream_bytes_are_identical_to_upstream(managed_relay, fake_upstream):
    with relay_post(managed_relay, "/v1beta/models/gemini-flash-latest:streamGenerateContent",
                    {"x-goog-api-key": CLIENT_KEY}, stream=True) as response:
        content = b"".join(response.iter_content(chunk_size=None))
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/json")
    assert content == (FIXTURES / ARRAY_FIXTURE).read_bytes()
    [entry] = fake_upstream.requests()
    assert_forwarded(entry, path="/v1beta/models/gemini-flash-latest:streamGenerateContent", body=RAW_BODY)


# --- other model methods -------------------------------------------------------------------------------------

def test_embeddings_via_sdk(managed_relay, fake_upstream, genai_client):
    def call(client):
        return client.models.embed_content(model="gemini-embedding-001", contents="Some text goes here")
    reference = direct_reference(fake_upstream, genai_client, call)
    result = call(genai_client(managed_relay.url, CLIENT_KEY, "v1beta"))
    expected = json.loads(recorded_body(EMBED_FIXTURE))["embeddings"][0]["values"]
    assert result.embeddings[0].values == expected
    [entry] = fake_upstream.requests()
    assert_forwarded(entry, path="/v1beta/models/gemini-embedding-001:batchEmbedContents", reference=reference)


def test_count_tokens_via_sdk(managed_relay, fake_upstream, genai_client):
    def call(client):
        return client.models.count_tokens(model="gemini-1.5-flash", contents="The quick brown fox")
    reference = direct_reference(fake_upstream, genai_client, call)
    assert call(genai_client(managed_relay.url, CLIENT_KEY, "v1beta")).total_tokens == 11
    [entry] = fake_upstream.requests()
    assert_forwarded(entry, path="/v1beta/models/gemini-1.5-flash:countTokens", reference=reference)


def test_models_list_and_get_via_sdk(managed_relay, fake_upstream, genai_client):
    listing = direct_reference(fake_upstream, genai_client, lambda client: list(client.models.list()))
    client = genai_client(managed_relay.url, CLIENT_KEY, "v1beta")
    names = [model.name for model in client.models.list()]
    upstream_names = [model["name"] for model in json.loads(recorded_body(MODELS_FIXTURE))["models"]]
    # The relay may add models of its own (e.g. variants); every upstream model must still be listed, in order.
    assert [name for name in names if name in upstream_names] == upstream_names
    model = client.models.get(model="gemini-2.5-flash")
    assert model.display_name == "Gemini 2.5 Flash" and model.input_token_limit == 1048576
    listed, got = fake_upstream.requests()
    assert_forwarded(listed, path="/v1beta/models", query=listing["query"])
    assert listed["method"] == got["method"] == "GET"
    assert_forwarded(got, path="/v1beta/models/gemini-2.5-flash")


def test_tuned_models_route(managed_relay, fake_upstream):
    response = relay_post(managed_relay, "/v1beta/tunedModels/my-tuned-7:generateContent",
                          {"x-goog-api-key": CLIENT_KEY})
    assert response.status_code == 200 and response.content == recorded_body(UNARY_FIXTURE)
    [entry] = fake_upstream.requests()
    assert_forwarded(entry, path="/v1beta/tunedModels/my-tuned-7:generateContent", body=RAW_BODY)


@pytest.mark.parametrize("collection", ["models", "tunedModels"])
@pytest.mark.parametrize("method", ["generateContent", "countTokens", "embedContent", "batchEmbedContents"])
def test_model_methods_are_forwarded_verbatim(managed_relay, fake_upstream, collection, method):
    body = {"embedContent": b'{"content": {"parts": [{"text": "hi"}]}}',
            "batchEmbedContents": b'{"requests": [{"model": "%s/m-1", "content": {"parts": [{"text": "hi"}]}}]}'
            % collection.encode()}.get(method, RAW_BODY)
    response = relay_post(managed_relay, f"/v1beta/{collection}/m-1:{method}", {"x-goog-api-key": CLIENT_KEY},
                          body)
    assert response.status_code == 200, response.text[:300]
    upstream = http().post(f"{fake_upstream.url}/v1beta/{collection}/m-1:{method}", data=body,
                           headers={"x-goog-api-key": UPSTREAM_KEY})
    assert response.content == upstream.content
    assert_forwarded(fake_upstream.requests()[0], path=f"/v1beta/{collection}/m-1:{method}", body=body)


def test_cached_contents_crud(managed_relay, fake_upstream):
    session, headers = http(), {"x-goog-api-key": CLIENT_KEY, "Content-Type": "application/json"}
    create_body = json.dumps({"model": "models/gemini-2.5-flash", "ttl": "300s",
                              "contents": [{"role": "user", "parts": [{"text": "cache me"}]}]}).encode()
    created = session.post(managed_relay.url + "/v1beta/cachedContents", data=create_body, headers=headers)
    assert created.status_code == 200, created.text
    name = created.json()["name"]
    listed = session.get(managed_relay.url + "/v1beta/cachedContents", headers=headers)
    assert listed.status_code == 200 and name in [cache["name"] for cache in listed.json()["cachedContents"]]
    assert session.get(f"{managed_relay.url}/v1beta/{name}", headers=headers).json()["name"] == name
    patched = session.patch(f"{managed_relay.url}/v1beta/{name}", data=b'{"ttl": "600s"}', headers=headers)
    assert patched.status_code == 200 and patched.json()["name"] == name
    deleted = session.delete(f"{managed_relay.url}/v1beta/{name}", headers=headers)
    assert deleted.status_code == 200 and deleted.json() == {}
    # In managed mode the relay may answer the listing from its own ownership records (each client sees
    # only its caches), so the upstream GET /cachedContents is optional.
    entries = [e for e in fake_upstream.requests() if (e["method"], e["path"]) != ("GET", "/v1beta/cachedContents")]
    assert [(e["method"], e["path"]) for e in entries] == [
        ("POST", "/v1beta/cachedContents"), ("GET", f"/v1beta/{name}"), ("PATCH", f"/v1beta/{name}"),
        ("DELETE", f"/v1beta/{name}")]
    assert_forwarded(entries[0], path="/v1beta/cachedContents", body=create_body)
    assert body_bytes(entries[2]) == b'{"ttl": "600s"}'


# --- auth ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["bearer", "x-goog-api-key", "query"])
def test_client_key_forms_are_accepted_and_stripped(managed_relay, fake_upstream, form):
    path, headers = f"/v1beta/models/{MODEL}:generateContent", {}
    if form == "bearer":
        headers["Authorization"] = f"Bearer {SECOND_CLIENT_KEY}"
    elif form == "x-goog-api-key":
        headers["x-goog-api-key"] = SECOND_CLIENT_KEY
    else:
        path += f"?key={SECOND_CLIENT_KEY}"
    response = relay_post(managed_relay, path, headers)
    assert response.status_code == 200, response.text
    assert response.content == recorded_body(UNARY_FIXTURE)
    request_id_of(response.headers)
    [entry] = fake_upstream.requests()
    assert_forwarded(entry, path=f"/v1beta/models/{MODEL}:generateContent", body=RAW_BODY)


def test_query_key_is_stripped_but_other_parameters_kept(managed_relay, fake_upstream):
    with relay_post(managed_relay, f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse&key={CLIENT_KEY}",
                    stream=True) as response:
        assert b"".join(response.iter_content(chunk_size=None)) == SSE_BYTES
    [entry] = fake_upstream.requests()
    assert_forwarded(entry, path=f"/v1beta/models/{MODEL}:streamGenerateContent", query="alt=sse", body=RAW_BODY)


@pytest.mark.parametrize("credentials", [
    {}, {"headers": {"x-goog-api-key": WRONG_KEY}}, {"headers": {"Authorization": f"Bearer {WRONG_KEY}"}},
    {"query": f"?key={WRONG_KEY}"}, {"headers": {"x-goog-api-key": UPSTREAM_KEY}},
], ids=["missing", "wrong-header", "wrong-bearer", "wrong-query", "upstream-key-is-not-a-client-key"])
def test_missing_or_wrong_client_key_is_401_and_nothing_goes_upstream(managed_relay, fake_upstream, credentials):
    for path in (f"/v1beta/models/{MODEL}:generateContent", f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                 "/v1beta/models"):
        url = path + credentials.get("query", "").replace("?", "&" if "?" in path else "?")
        if path == "/v1beta/models":
            response = http().get(managed_relay.url + url, headers=credentials.get("headers", {}), timeout=30)
        else:
            response = relay_post(managed_relay, url, credentials.get("headers"))
        assert response.status_code == 401, (path, response.status_code, response.text[:300])
        error = response.json()["error"]
        assert error["code"] == 401 and error["status"] == "UNAUTHENTICATED" and error["message"]
        request_id_of(response.headers)
        for key in ALL_KEYS:
            assert key not in response.text
    time.sleep(0.2)
    assert fake_upstream.requests() == []


@pytest.mark.parametrize("form", ["bearer", "x-goog-api-key", "query"])
def test_passthrough_forwards_the_callers_key(passthrough_relay, fake_upstream, form):
    path, headers = f"/v1beta/models/{MODEL}:generateContent", {}
    if form == "bearer":
        headers["Authorization"] = f"Bearer {CALLER_KEY}"
    elif form == "x-goog-api-key":
        headers["x-goog-api-key"] = CALLER_KEY
    else:
        path += f"?key={CALLER_KEY}"
    response = relay_post(passthrough_relay, path, headers)
    assert response.status_code == 200, response.text
    [entry] = fake_upstream.requests()
    assert_forwarded(entry, path=f"/v1beta/models/{MODEL}:generateContent", upstream_key=CALLER_KEY, body=RAW_BODY)


def test_passthrough_via_sdk_and_no_key_in_logs(passthrough_relay, fake_upstream, genai_client):
    client = genai_client(passthrough_relay.url, CALLER_KEY, "v1beta")
    chunks = list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))
    assert [chunk.text for chunk in chunks] == SSE_TEXTS
    [entry] = fake_upstream.requests()
    assert entry["key"] == CALLER_KEY and header_values(entry, "authorization") == []
    time.sleep(0.3)
    assert CALLER_KEY not in passthrough_relay.output_text()


def test_gemini_api_key_is_used_when_upstream_keys_unset(relay_factory, fake_upstream):
    relay = relay_factory(env={"GEMINI_API_KEY": OTHER_UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY})
    response = relay_post(relay, f"/v1beta/models/{MODEL}:generateContent", {"x-goog-api-key": CLIENT_KEY})
    assert response.status_code == 200, response.text
    [entry] = fake_upstream.requests()
    assert_forwarded(entry, path=f"/v1beta/models/{MODEL}:generateContent", upstream_key=OTHER_UPSTREAM_KEY,
                     body=RAW_BODY)
    assert relay_post(relay, f"/v1beta/models/{MODEL}:generateContent").status_code == 401


def test_relay_refuses_upstream_keys_without_client_keys(relay_factory):
    with pytest.raises(RuntimeError) as failure:
        relay_factory(env={"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY})
    assert "RELAY_API_KEYS" in str(failure.value), "the startup error should name the missing setting"
    assert UPSTREAM_KEY not in str(failure.value)


# --- upstream errors -----------------------------------------------------------------------------------------

def managed_env() -> dict:
    return {"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY}


# A relay may put a key on cooldown after a 429 (or disable it after API_KEY_INVALID), so tests that
# provoke those get a relay of their own instead of the module's shared one.

def test_upstream_429_is_relayed_with_retry_info(relay_factory, fake_upstream, genai_client):
    fake_upstream.script({"status": 429, "retry_delay": "30s"})
    upstream = http().post(fake_upstream.url + f"/v1beta/models/{MODEL}:generateContent", data=RAW_BODY,
                           headers={"x-goog-api-key": UPSTREAM_KEY}).json()
    fake_upstream.reset()
    fake_upstream.script({"status": 429, "retry_delay": "30s"})
    relay = relay_factory(env=managed_env())
    client = genai_client(relay.url, CLIENT_KEY, "v1beta")
    with pytest.raises(errors.ClientError) as failure:
        client.models.generate_content(model=MODEL, contents=PROMPT)
    assert failure.value.code == 429 and failure.value.status == "RESOURCE_EXHAUSTED"
    assert failure.value.details == upstream, "the upstream 429 body must be relayed unchanged"
    details = failure.value.details["error"]["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"} in details
    assert {detail["@type"].rsplit(".", 1)[-1] for detail in details} == {"QuotaFailure", "Help", "RetryInfo"}
    assert len(fake_upstream.requests()) >= 1
    # While the key cools down the relay may answer itself, but it must still be a 429 with RetryInfo.
    response = relay_post(relay, f"/v1beta/models/{MODEL}:generateContent", {"x-goog-api-key": CLIENT_KEY})
    assert response.status_code == 429
    assert any(d["@type"].endswith("google.rpc.RetryInfo") for d in response.json()["error"]["details"])
    request_id_of(response.headers)


def test_upstream_429_before_the_first_byte_of_a_stream(relay_factory, fake_upstream, genai_client):
    fake_upstream.script({"status": 429, "retry_delay": "7s"})
    relay = relay_factory(env=managed_env())
    client = genai_client(relay.url, CLIENT_KEY, "v1beta")
    with pytest.raises(errors.ClientError) as failure:
        list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))
    assert failure.value.code == 429
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"} in \
        failure.value.details["error"]["details"]
    assert fake_upstream.requests()[0]["path"] == f"/v1beta/models/{MODEL}:streamGenerateContent"


def test_upstream_404_is_relayed(managed_relay, fake_upstream, genai_client):
    client = genai_client(managed_relay.url, CLIENT_KEY, "v1beta")
    with pytest.raises(errors.ClientError) as failure:
        client.models.generate_content(model="nope", contents=PROMPT)
    assert failure.value.code == 404 and failure.value.status == "NOT_FOUND"
    assert failure.value.message.startswith("models/nope is not found for API version v1beta")
    response = relay_post(managed_relay, "/v1beta/models/missing-model:streamGenerateContent?alt=sse",
                          {"x-goog-api-key": CLIENT_KEY})
    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith("models/missing-model is not found")
    assert [entry["path"] for entry in fake_upstream.requests()] == [
        "/v1beta/models/nope:generateContent", "/v1beta/models/missing-model:streamGenerateContent"]


def test_upstream_error_body_never_carries_the_upstream_key(relay_factory, fake_upstream):
    leaky = {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                       "status": "INVALID_ARGUMENT", "details": [
                           {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                            "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
                           {"@type": "type.googleapis.com/google.rpc.DebugInfo",
                            "detail": f"Invalid API key: {UPSTREAM_KEY}"}]}}
    fake_upstream.script({"status": 400, "body": leaky})
    relay = relay_factory(env=managed_env())
    response = relay_post(relay, f"/v1beta/models/{MODEL}:generateContent", {"x-goog-api-key": CLIENT_KEY})
    # Google rejected relay's own key: the caller learns the service is unavailable, not that *its* key is bad.
    assert response.status_code == 503
    assert response.json()["error"]["status"] == "UNAVAILABLE"
    assert UPSTREAM_KEY not in response.text


def test_upstream_error_body_never_echoes_the_callers_key_in_passthrough(passthrough_relay, fake_upstream):
    leaky = {"error": {"code": 400, "message": f"API key not valid: {CALLER_KEY}", "status": "INVALID_ARGUMENT"}}
    fake_upstream.script({"status": 400, "body": leaky})
    response = relay_post(passthrough_relay, f"/v1beta/models/{MODEL}:generateContent", {"x-goog-api-key": CALLER_KEY})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400
    assert CALLER_KEY not in response.text


def test_upstream_response_headers_never_carry_the_upstream_key(managed_relay, fake_upstream):
    fake_upstream.script({"status": 503, "headers": {"X-Debug-Echo": f"key={UPSTREAM_KEY}"}})
    response = relay_post(managed_relay, "/v1beta/models/gemini-503-model:countTokens",
                          {"x-goog-api-key": CLIENT_KEY})
    assert response.status_code == 503
    assert UPSTREAM_KEY not in json.dumps(dict(response.headers))


@pytest.mark.parametrize("cut", [{"cut_mode": "rst"}, {"cut_mode": "close"}, {"cut_mid_event": True}],
                         ids=["rst", "close", "mid-event"])
def test_upstream_cut_mid_stream_makes_the_sdk_raise(managed_relay, fake_upstream, genai_client, cut):
    fake_upstream.script({"path_contains": "streamGenerateContent", "fixture": SSE_FIXTURE,
                          "cut_after_events": 2, "times": 1, **cut})
    client = genai_client(managed_relay.url, CLIENT_KEY, "v1beta")
    texts = []
    with pytest.raises(errors.APIError):
        for chunk in client.models.generate_content_stream(model=MODEL, contents=PROMPT):
            texts.append(chunk.text)
    assert texts == SSE_TEXTS[:2]


@pytest.mark.parametrize("cut", [{"cut_mode": "rst"}, {"cut_mode": "close"}, {"cut_mid_event": True}],
                         ids=["rst", "close", "mid-event"])
def test_upstream_cut_mid_stream_ends_with_one_in_band_error_event(managed_relay, fake_upstream, cut):
    fake_upstream.script({"path_contains": "streamGenerateContent", "fixture": SSE_FIXTURE,
                          "cut_after_events": 2, **cut})
    received = []
    with relay_post(managed_relay, f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                    {"x-goog-api-key": CLIENT_KEY}, stream=True) as response:
        assert response.status_code == 200
        try:
            for chunk in response.iter_content(chunk_size=None):
                received.append(chunk)
        except requests.RequestException as exc:
            pytest.fail(f"relay broke the client connection instead of ending the stream cleanly: {exc!r}")
    content = b"".join(received)
    good = b"".join(sse_events(SSE_BYTES)[:2])
    assert content.startswith(good), "the events before the cut must arrive unchanged"
    tail = content[len(good):]
    assert tail.startswith(b"data: ") and tail.endswith(b"\r\n\r\n") and tail.count(b"\r\n\r\n") == 1, tail[:300]
    error = json.loads(tail[len(b"data: "):])["error"]
    assert isinstance(error["code"], int) and error["message"] and error["status"]
    assert UPSTREAM_KEY not in tail.decode()


def test_client_disconnect_closes_the_upstream_stream(managed_relay, fake_upstream):
    fake_upstream.script({"path_contains": "streamGenerateContent", "stream_forever": True, "gap_ms": 100})
    response = relay_post(managed_relay, f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                          {"x-goog-api-key": CLIENT_KEY}, stream=True)
    assert response.status_code == 200
    first = next(response.iter_content(chunk_size=None))
    assert first.startswith(b"data: ")
    disconnected_at = time.time()
    response.close()
    closed = wait_until(fake_upstream.closed, timeout=5)
    assert closed, "the fake upstream never saw the relay close the upstream stream"
    [entry] = fake_upstream.requests()
    assert closed[0]["request_id"] == entry["id"]
    assert closed[0]["closed_at"] - disconnected_at < 2.0, "relay kept reading upstream after the client left"


@pytest.mark.parametrize("path", [f"/v1beta/models/{MODEL}:generateContent",
                                  f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"], ids=["unary", "sse"])
def test_client_hanging_up_while_the_upstream_thinks_closes_the_upstream(managed_relay, fake_upstream, path):
    # A thinking model can take minutes before its first byte; a caller that gives up must not keep the
    # upstream call (and its quota) running.
    fake_upstream.script({"delay_headers_ms": 20000})
    with pytest.raises(requests.RequestException):
        http().post(managed_relay.url + path, data=RAW_BODY, timeout=1,
                    headers={"Content-Type": "application/json", "x-goog-api-key": CLIENT_KEY})
    hung_up_at = time.time()
    closed = wait_until(fake_upstream.closed, timeout=5)
    assert closed, "relay kept waiting on the upstream after its caller hung up"
    assert closed[0]["closed_at"] - hung_up_at < 2.0
    method = path.split(":")[1].split("?")[0]
    lines = [line for line in managed_relay.access_log() if line["status"] == 499 and line["route"].endswith(method)]
    assert lines and lines[-1]["aborted"] == "client"


# --- limits and timeouts ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tight_relay(module_relay_factory):
    return module_relay_factory(env={"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY,
                                     "RELAY_READ_TIMEOUT": "1", "RELAY_MAX_BODY_MB": "1"})


def test_read_timeout_is_an_idle_gap_not_a_total(tight_relay, fake_upstream):
    fake_upstream.script({"path_contains": "streamGenerateContent", "fixture": SSE_FIXTURE, "gap_ms": 400})
    started = time.monotonic()
    with relay_post(tight_relay, f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                    {"x-goog-api-key": CLIENT_KEY}, stream=True) as response:
        content = b"".join(response.iter_content(chunk_size=None))
    assert time.monotonic() - started > 4, "the scripted stream lasts ~4.8 s"
    assert content == SSE_BYTES, "a stream longer than RELAY_READ_TIMEOUT but never idle must pass"


def test_read_timeout_before_headers_is_a_google_error(tight_relay, fake_upstream):
    fake_upstream.script({"path_contains": ":generateContent", "hang": True, "forever_max_s": 30})
    started = time.monotonic()
    response = relay_post(tight_relay, f"/v1beta/models/{MODEL}:generateContent", {"x-goog-api-key": CLIENT_KEY})
    elapsed = time.monotonic() - started
    assert response.status_code >= 500, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == response.status_code and error["status"] and error["message"]
    assert elapsed < 10, f"RELAY_READ_TIMEOUT=1 but the relay waited {elapsed:.1f}s"
    request_id_of(response.headers)


def test_read_timeout_mid_stream_ends_with_an_error_event(tight_relay, fake_upstream):
    fake_upstream.script({"path_contains": "streamGenerateContent", "fixture": SSE_FIXTURE, "gap_ms": 3000,
                          "forever_max_s": 30})
    with relay_post(tight_relay, f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                    {"x-goog-api-key": CLIENT_KEY}, stream=True) as response:
        content = b"".join(response.iter_content(chunk_size=None))
    first = sse_events(SSE_BYTES)[0]
    assert content.startswith(first)
    tail = content[len(first):]
    assert tail.startswith(b"data: ") and tail.count(b"\r\n\r\n") == 1, tail[:300]
    assert "error" in json.loads(tail[len(b"data: "):])
    assert wait_until(fake_upstream.closed, timeout=3), "the relay should drop the idle upstream stream"


def test_max_body_size(tight_relay, fake_upstream):
    filler = "x" * (900 * 1024)
    small = json.dumps({"contents": [{"role": "user", "parts": [{"text": filler}]}]}).encode()
    response = relay_post(tight_relay, f"/v1beta/models/{MODEL}:countTokens", {"x-goog-api-key": CLIENT_KEY}, small)
    assert response.status_code == 200
    assert body_bytes(fake_upstream.requests()[0]) == small
    fake_upstream.reset()
    big = json.dumps({"contents": [{"role": "user", "parts": [{"text": filler * 2}]}]}).encode()
    response = relay_post(tight_relay, f"/v1beta/models/{MODEL}:countTokens", {"x-goog-api-key": CLIENT_KEY}, big)
    assert response.status_code in (400, 413), response.status_code
    assert response.json()["error"]["code"] == response.status_code
    time.sleep(0.2)
    assert fake_upstream.requests() == []


# --- URL grammar ---------------------------------------------------------------------------------------------

def test_v1_prefix_works(managed_relay, fake_upstream, genai_client):
    client = genai_client(managed_relay.url + "/v1", CLIENT_KEY, "v1beta")
    assert client.models.generate_content(model=MODEL, contents=PROMPT).text == UNARY_TEXT
    with relay_post(managed_relay, f"/v1/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                    {"x-goog-api-key": CLIENT_KEY}, stream=True) as response:
        assert b"".join(response.iter_content(chunk_size=None)) == SSE_BYTES
    assert [entry["path"] for entry in fake_upstream.requests()] == [
        f"/v1beta/models/{MODEL}:generateContent", f"/v1beta/models/{MODEL}:streamGenerateContent"]


@pytest.mark.parametrize("api_version", ["v1", "v1beta", "v1alpha"])
def test_api_version_is_kept(managed_relay, fake_upstream, genai_client, api_version):
    def call(client):
        return client.models.generate_content(model=MODEL, contents=PROMPT)
    reference = direct_reference(fake_upstream, genai_client, call, api_version)
    client = genai_client(managed_relay.url, CLIENT_KEY, api_version)
    assert call(client).text == UNARY_TEXT
    assert list(client.models.list())
    generate, listing = fake_upstream.requests()
    assert_forwarded(generate, path=f"/{api_version}/models/{MODEL}:generateContent", reference=reference)
    assert listing["path"] == f"/{api_version}/models"


def test_healthz(managed_relay):
    response = http().get(managed_relay.url + "/healthz", timeout=10)
    assert response.status_code == 200
    request_id_of(response.headers)


# --- access log (keep last: it also scans everything the module's relay logged) ------------------------------

def test_access_log_one_json_line_per_request_and_no_keys(managed_relay, fake_upstream):
    path = f"/v1beta/models/{MODEL}"
    calls = {
        "generate": relay_post(managed_relay, path + ":generateContent", {"x-goog-api-key": CLIENT_KEY}),
        "stream": relay_post(managed_relay, path + ":streamGenerateContent?alt=sse",
                             {"Authorization": f"Bearer {CLIENT_KEY}"}),
        "unauthenticated": relay_post(managed_relay, path + ":generateContent", {"x-goog-api-key": WRONG_KEY}),
        "not_found": relay_post(managed_relay, "/v1beta/models/nope:generateContent", {"x-goog-api-key": CLIENT_KEY}),
        "list": http().get(managed_relay.url + f"/v1beta/models?key={CLIENT_KEY}", timeout=30),
    }
    assert [response.status_code for response in calls.values()] == [200, 200, 401, 404, 200]
    ids = {name: request_id_of(response.headers) for name, response in calls.items()}
    assert len(set(ids.values())) == len(ids), "request ids must be unique"
    records = {}
    for name, request_id in ids.items():
        matching = managed_relay.access_log_for(request_id)
        assert len(matching) == 1, f"{name}: expected one access-log line for {request_id}, got {matching}"
        records[name] = matching[0]
    for name, record in records.items():
        required = {"request_id", "method", "route", "status", "latency_ms"}
        if name != "unauthenticated":  # nothing was relayed for a 401, so model/upstream fields may be absent
            required |= {"model", "upstream_status", "streamed", "usage"}
        missing = required - set(record)
        assert not missing, f"{name}: access-log line lacks {missing}: {record}"
        assert record["status"] == calls[name].status_code
        assert isinstance(record["latency_ms"], (int, float)) and record["latency_ms"] >= 0
    assert records["generate"]["method"] == "POST" and MODEL in str(records["generate"]["model"])
    assert records["generate"]["upstream_status"] == 200 and records["not_found"]["upstream_status"] == 404
    assert records["stream"]["streamed"] is True and records["generate"]["streamed"] is False
    assert "429" in json.dumps(records["generate"]["usage"]), "usage should carry the response's token counts"
    assert "421" in json.dumps(records["stream"]["usage"]), "stream usage comes from the last event"
    output = managed_relay.output_text()
    leaked = [key for key in ALL_KEYS if key in output]
    assert not leaked, f"relay output contains keys {leaked}"
