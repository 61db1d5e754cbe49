"""Fast checks of the fake upstream itself: exact replay bytes, framing, scripting and the request log."""
from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.e2e.harness import FIXTURES, body_bytes, genai_client, header_values, http, wait_until
from tests.support import fake_upstream

SSE_FIXTURE = "stream_sse/js-genai__Chats_Tests_sendMessage_Google_AI_with_text_stream.http.0.sse.txt"
ARRAY_FIXTURE = "stream_json_array/llm-gemini__test_prompt.0.jsonarray.txt"
UNARY_FIXTURE = "generate_text/js-genai__Chats_Tests_sendMessage_Google_AI_with_text.http.json"

pytestmark = pytest.mark.timeout(60)

fake_process, fake = fake_upstream.fake_process, fake_upstream.fake  # the shared fixtures


def raw_exchange(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, read until the server closes or the chunked body ends."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        while not received.endswith(b"\r\n0\r\n\r\n"):
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
        return received


def post_bytes(path: str, body: bytes = b"{}", key: str | None = "upstream-key") -> bytes:
    key_line = f"x-goog-api-key: {key}\r\n" if key else ""
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\n{key_line}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def split_chunks(raw: bytes) -> tuple[bytes, list[bytes]]:
    head, _, rest = raw.partition(b"\r\n\r\n")
    chunks = []
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        rest = rest[size + 2:]
    return head, chunks


def test_sse_replay_is_byte_exact_with_one_chunk_per_event(fake):
    raw = raw_exchange(fake.port, post_bytes("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"))
    head, chunks = split_chunks(raw)
    expected = (FIXTURES / SSE_FIXTURE).read_bytes()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/event-stream" in head and b"Transfer-Encoding: chunked" in head
    assert b"".join(chunks) == expected
    assert chunks == [event + b"\r\n\r\n" for event in expected.split(b"\r\n\r\n")[:-1]]


def test_json_array_stream_is_split_per_element(fake):
    raw = raw_exchange(fake.port, post_bytes("/v1beta/models/gemini-flash-latest:streamGenerateContent"))
    head, chunks = split_chunks(raw)
    expected = (FIXTURES / ARRAY_FIXTURE).read_bytes()
    assert b"Content-Type: application/json; charset=UTF-8" in head
    assert b"".join(chunks) == expected
    assert chunks[0].startswith(b"[{") and chunks[-1] == b"\n]"
    assert all(chunk.startswith(b"\n,\r\n{") for chunk in chunks[1:-1])
    assert len(chunks) == len(json.loads(expected)) + 1


def test_unary_replay_and_request_log(fake):
    body = b'{"contents": [{"parts": [{"text": "why is the sky blue?"}], "role": "user"}]}'
    response = http().post(fake.url + "/v1alpha/models/gemini-2.0-flash:generateContent?foo=bar&%24alt=json",
                           data=body, headers={"x-goog-api-key": "k-123", "X-Custom": "a"})
    recorded = json.loads((FIXTURES / UNARY_FIXTURE).read_text())["interactions"][0]["response"]["body_raw"]
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert response.content == recorded.encode()
    [entry] = fake.requests()
    assert entry["method"] == "POST" and entry["path"] == "/v1alpha/models/gemini-2.0-flash:generateContent"
    assert entry["query"] == "foo=bar&%24alt=json"
    assert entry["key"] == "k-123" and header_values(entry, "x-custom") == ["a"]
    assert body_bytes(entry) == body and entry["body_text"] == body.decode() and entry["body_len"] == len(body)
    assert entry["outcome"] == "complete" and entry["status"] == 200 and entry["received_at"] <= time.time()


def test_missing_key_is_googles_api_key_invalid(fake):
    response = http().post(fake.url + "/v1beta/models/gemini-2.5-flash:generateContent", json={})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["details"][0]["reason"] == "API_KEY_INVALID"
    streamed = http().post(fake.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent", json={})
    assert streamed.status_code == 400 and streamed.json()[0]["error"]["code"] == 400


def test_unknown_model_is_the_recorded_404(fake):
    response = http().post(fake.url + "/v1beta/models/nope:streamGenerateContent?alt=sse", json={},
                           headers={"x-goog-api-key": "k"})
    assert response.status_code == 404 and response.headers["Content-Type"] == "text/event-stream"
    assert response.json()["error"]["message"].startswith(
        "models/nope is not found for API version v1beta, or is not supported for generateContent.")


def test_script_429_shortcut_times_and_key_match(fake):
    fake.script([{"path_contains": ":generateContent", "key": "k-limited", "status": 429, "retry_delay": "30s",
                  "times": 1}])
    session = http()
    url = fake.url + "/v1beta/models/gemini-2.5-flash:generateContent"
    assert session.post(url, json={}, headers={"x-goog-api-key": "k-other"}).status_code == 200
    limited = session.post(url, json={}, headers={"x-goog-api-key": "k-limited"})
    assert limited.status_code == 429
    details = limited.json()["error"]["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"} in details
    assert {d["@type"].rsplit(".", 1)[-1] for d in details} == {"QuotaFailure", "Help", "RetryInfo"}
    assert session.post(url, json={}, headers={"x-goog-api-key": "k-limited"}).status_code == 200
    assert [entry["rule"] for entry in fake.requests()] == [None, 0, None]


def test_scripted_events_gap_and_cut(fake):
    events = [{"candidates": [{"content": {"parts": [{"text": f"part {n}"}], "role": "model"}}]} for n in range(4)]
    fake.script({"events": events, "gap_ms": 150, "cut_after_events": 2, "cut_mode": "rst"})
    received = []
    with pytest.raises(requests.exceptions.RequestException):
        with http().post(fake.url + "/v1beta/models/m:streamGenerateContent?alt=sse", json={},
                         headers={"x-goog-api-key": "k"}, stream=True) as response:
            for chunk in response.iter_content(chunk_size=None):
                received.append(chunk)
    assert b"".join(received) == b"".join(
        b"data: " + json.dumps(e, separators=(",", ": ")).encode() + b"\r\n\r\n" for e in events[:2])
    [entry] = fake.requests()
    assert entry["outcome"] == "cut" and entry["events_sent"] == 2
    assert entry["event_times"][1] - entry["event_times"][0] >= 0.14


def test_stream_forever_records_client_disconnect(fake):
    fake.script({"path_contains": "streamGenerateContent", "stream_forever": True, "gap_ms": 50})
    response = http().post(fake.url + "/v1beta/models/m:streamGenerateContent?alt=sse", json={},
                           headers={"x-goog-api-key": "k"}, stream=True)
    next(response.iter_content(chunk_size=None))
    closed_at = time.time()
    response.close()
    closed = wait_until(fake.closed, timeout=3)
    assert closed and closed[0]["request_id"] == fake.requests()[0]["id"]
    assert closed[0]["closed_at"] - closed_at < 1.0


def test_image_mb_body_size(fake):
    fake.script({"image_mb": 1})
    response = http().post(fake.url + "/v1beta/models/img:generateContent", json={}, headers={"x-goog-api-key": "k"})
    inline = response.json()["candidates"][0]["content"]["parts"][1]["inlineData"]
    assert inline["mimeType"] == "image/png" and 1_000_000 < len(inline["data"]) < 1_100_000
    assert inline["data"].startswith("iVBORw0KGg")


def test_cached_contents_crud(fake):
    session, headers = http(), {"x-goog-api-key": "k"}
    created = session.post(fake.url + "/v1beta/cachedContents", headers=headers,
                           json={"model": "models/gemini-2.5-flash", "ttl": "300s"}).json()
    assert created["name"].startswith("cachedContents/") and created["model"] == "models/gemini-2.5-flash"
    listed = session.get(fake.url + "/v1beta/cachedContents", headers=headers).json()
    assert [c["name"] for c in listed["cachedContents"]] == [created["name"]]
    patched = session.patch(f"{fake.url}/v1beta/{created['name']}", headers=headers, json={"ttl": "600s"}).json()
    assert patched["expireTime"] > created["expireTime"]
    assert session.delete(f"{fake.url}/v1beta/{created['name']}", headers=headers).json() == {}


def test_google_genai_sdk_against_the_fake(fake):
    client = genai_client(fake.url, "sdk-key", api_version="v1beta")
    recorded = json.loads(json.loads((FIXTURES / UNARY_FIXTURE).read_text())
                          ["interactions"][0]["response"]["body_raw"])
    assert client.models.generate_content(model="gemini-2.0-flash", contents="hi").text == \
        recorded["candidates"][0]["content"]["parts"][0]["text"]
    chunks = list(client.models.generate_content_stream(model="gemini-2.0-flash", contents="hi"))
    assert len(chunks) == (FIXTURES / SSE_FIXTURE).read_bytes().count(b"\r\n\r\n")
    assert len(client.models.embed_content(model="gemini-embedding-001", contents="x").embeddings[0].values) == 3072
    assert client.models.count_tokens(model="gemini-1.5-flash", contents="x").total_tokens == 11
    assert any(model.name == "models/gemini-2.5-flash" for model in client.models.list())
    assert client.models.get(model="gemini-2.5-flash").display_name == "Gemini 2.5 Flash"
    paths = [entry["path"] for entry in fake.requests()]
    assert paths[:4] == ["/v1beta/models/gemini-2.0-flash:generateContent",
                         "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
                         "/v1beta/models/gemini-embedding-001:batchEmbedContents",
                         "/v1beta/models/gemini-1.5-flash:countTokens"]
    assert all(entry["key"] == "sdk-key" for entry in fake.requests())
