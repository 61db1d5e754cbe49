"""Tests of usage accounting: token counts from usageMetadata, extraction from recorded streams, the queue.

Streams are the real recordings in tests/fixtures/gemini, pushed through relay's own stream relaying
(relay.pipeline.streams.relay_stream) in several chunkings; the expected numbers come from parsing the same bytes
with the json module, independently of relay's framing code.
"""

import json
import time

import pytest
import urllib3

from relay.clients.auth import hash_key
from relay.config import Upstream
from relay.pipeline.forward import Call
from relay.pipeline.streams import relay_stream, relay_unary_chunks
from relay.store import StoreError, open_store
from relay.clients.usage import UsageRecorder, token_counts, usage_row
from tests.support import FIXTURES, UPSTREAM_URL


# Recorded streams where Google's last usageMetadata differs from the earlier ones (promptTokenCount is
# revised on the last event), ends in a usage-only event, or reports IMAGE tokens.
PROMPT_CHANGES_ON_LAST_EVENT = [
    "stream_sse/js-genai__Chats_Tests_sendMessage_Google_AI_with_text_stream.http.0.sse.txt",  # 7 → 6
    "stream_sse/pydantic-ai__test_google_model_stream.0.sse.txt",  # 15 → 13
    "code_execution/pydantic-ai__test_code_execution_stream.0.sse.txt",  # 46 → 147, tool-use tokens
    "function_calling/pydantic-ai__test_google_model_iter_stream.2.sse.txt",  # 169 → 79
    "stream_sse/vercel-ai__issue-10781.2.chunks.txt",  # 133 → 311 (LF-separated SSE)
    "function_calling/llm-gemini__test_tools_with_gemini_3_thought_signatures.1.jsonarray.txt",  # 89 → 121
]
USAGE_ONLY_EVENT = "stream_sse/vercel-ai__google-usage-raw-live.chunks.txt"
PROMPT_BLOCKED = "prompt_blocked/vercel-ai__issue-19758-prompt-block.chunks.txt"
IMAGE_STREAM = "image_output/js-genai__Client_Tests_generateContentStream_ML_Dev_should_stream_generate_content_with_image_output.http.0.sse.txt"
IMAGE_STREAM_WITH_THOUGHTS = "image_output/vercel-ai__issue-10660-image-thought-signature.chunks.txt"
ARRAY_STREAM = "stream_json_array/llm-gemini__test_prompt.0.jsonarray.txt"
EMBEDDING_2 = "embeddings/llm-gemini__test_embedding_gemini-embedding-2.json"


# --- helpers ------------------------------------------------------------------------------------------------

def stream_kind(reference):
    return "array" if reference.endswith(".jsonarray.txt") else "sse"


def recorded_stream(reference):
    """The stream body as Google sent it; vercel's one-JSON-per-line chunk files get Google's SSE framing back."""
    raw = (FIXTURES / reference).read_bytes()
    if reference.endswith(".chunks.txt") and not raw.startswith(b"data:"):
        raw = b"".join(b"data: " + line + b"\r\n\r\n" for line in raw.splitlines() if line.strip())
    return raw


def events_of(raw, kind):
    """Every streamed GenerateContentResponse, parsed with json (the oracle, independent of relay.gemini.framing)."""
    if kind == "array":
        return json.loads(raw)
    text = raw.decode().replace("\r\n", "\n")
    return [json.loads(block[len("data:"):]) for block in text.split("\n\n") if block.strip()]


def last_usage(events):
    return [event["usageMetadata"] for event in events if "usageMetadata" in event][-1]


def chunked(raw, size):
    return [raw[start:start + size] for start in range(0, len(raw), size)] if size else [raw]


class FakeRaw:
    """Just enough of urllib3's response for relay.upstream.http.iter_body: chunked, then a failure maybe."""

    chunked = True

    def __init__(self, chunks, failure=None):
        self.chunks = chunks
        self.failure = failure

    def stream(self, amount, decode_content=True):
        yield from self.chunks
        if self.failure is not None:
            raise self.failure


class FakeUpstreamResponse:
    def __init__(self, chunks, failure=None, status_code=200):
        self.raw = FakeRaw(chunks, failure)
        self.status_code = status_code
        self.closed = False

    def close(self):
        self.closed = True


def new_call(stream, method="streamGenerateContent"):
    return Call(request_id="req-1", http_method="POST", version="v1beta", route="", resource="",
                method=method, query=[], headers={}, stream=stream, requested_model="gemini-2.5-flash",
                upstream_model="gemini-2.5-flash")


def relayed(raw, kind, chunk_size=0, failure=None):
    call = new_call(kind)
    upstream = FakeUpstreamResponse(chunked(raw, chunk_size), failure)
    sent = b"".join(relay_stream(call, upstream))
    return call, sent


# --- token_counts -------------------------------------------------------------------------------------------

def test_token_counts_are_the_reported_numbers():
    usage = {
        "promptTokenCount": 147, "candidatesTokenCount": 108, "totalTokenCount": 783, "thoughtsTokenCount": 168,
        "cachedContentTokenCount": 4, "toolUsePromptTokenCount": 360,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 140}, {"modality": "IMAGE", "tokenCount": 7}],
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 100}, {"modality": "TEXT", "tokenCount": 8}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 4}],
        "toolUsePromptTokensDetails": [{"modality": "TEXT", "tokenCount": 360}],
    }
    assert token_counts(usage) == {
        "prompt_tokens": 147, "candidates_tokens": 108, "thoughts_tokens": 168, "cached_tokens": 4,
        "tool_use_tokens": 360, "total_tokens": 783,
        "modalities": {"prompt": {"TEXT": 140, "IMAGE": 7}, "candidates": {"IMAGE": 100, "TEXT": 8},
                       "cached": {"TEXT": 4}, "tool_use": {"TEXT": 360}},
    }


def test_total_is_never_recomputed_when_google_reported_it():
    # Google's total includes thoughts and tool-use tokens; relay must not "fix" it from the parts.
    counts = token_counts({"promptTokenCount": 12, "candidatesTokenCount": 71, "totalTokenCount": 237})
    assert counts["total_tokens"] == 237
    assert token_counts({"promptTokenCount": 9, "totalTokenCount": 0})["total_tokens"] == 0


def test_embedding_usage_without_a_total_counts_the_prompt():
    body = json.loads(json.loads((FIXTURES / EMBEDDING_2).read_text())["interactions"][0]["response"]["body_raw"])
    usage = body["usageMetadata"]
    assert "totalTokenCount" not in usage and "promptTokenDetails" in usage  # singular, as Google sends it
    counts = token_counts(usage)
    assert counts["prompt_tokens"] == counts["total_tokens"] == usage["promptTokenCount"]
    assert counts["modalities"]["prompt"] == {detail["modality"]: detail["tokenCount"]
                                              for detail in usage["promptTokenDetails"]}


@pytest.mark.parametrize("usage", [None, {}, "oops", {"promptTokenCount": "x", "promptTokensDetails": "TEXT"},
                                   {"promptTokenCount": True, "candidatesTokensDetails": [None, 3]}])
def test_malformed_usage_counts_zero(usage):
    counts = token_counts(usage)
    assert all(counts[name] == 0 for name in counts if name != "modalities")
    assert counts["modalities"] in ({}, {"candidates": {}})


# --- streams ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_size", [0, 1, 7, 4096])
@pytest.mark.parametrize("reference", PROMPT_CHANGES_ON_LAST_EVENT)
def test_stream_usage_is_the_last_reported_never_a_sum(reference, chunk_size):
    raw = recorded_stream(reference)
    kind = stream_kind(reference)
    events = events_of(raw, kind)
    prompts = [event["usageMetadata"]["promptTokenCount"] for event in events if "usageMetadata" in event]
    assert len(set(prompts)) > 1, "fixture no longer has a changing promptTokenCount"

    call, sent = relayed(raw, kind, chunk_size)

    assert sent == raw
    expected = last_usage(events)
    assert call.usage == expected
    row = usage_row(call)
    assert row["prompt_tokens"] == expected["promptTokenCount"] == prompts[-1]
    assert row["total_tokens"] == expected["totalTokenCount"]
    assert row["tool_use_tokens"] == expected.get("toolUsePromptTokenCount", 0)
    assert row["thoughts_tokens"] == expected.get("thoughtsTokenCount", 0)
    assert row["total_tokens"] < sum(event["usageMetadata"]["totalTokenCount"] for event in events
                                     if "usageMetadata" in event)
    assert row["streamed"] is True and row["aborted"] is False


@pytest.mark.parametrize("chunk_size", [0, 5])
def test_a_usage_only_last_event_is_the_one_recorded(chunk_size):
    # A normal recorded stream followed by Google's usage-only event (no candidates, bigger totals).
    body = recorded_stream(PROMPT_CHANGES_ON_LAST_EVENT[0]) + recorded_stream(USAGE_ONLY_EVENT)
    events = events_of(body, "sse")
    assert "candidates" not in events[-1]
    call, sent = relayed(body, "sse", chunk_size)
    assert sent == body
    assert call.usage == events[-1]["usageMetadata"]
    row = usage_row(call)
    assert (row["prompt_tokens"], row["candidates_tokens"], row["cached_tokens"], row["tool_use_tokens"],
            row["thoughts_tokens"], row["total_tokens"]) == (12, 71, 4, 65, 89, 237)
    assert row["modalities"]["cached"] == {"TEXT": 4}


def test_a_blocked_prompt_stream_of_one_usage_only_event():
    raw = recorded_stream(PROMPT_BLOCKED)
    [event] = events_of(raw, "sse")
    assert "candidates" not in event and event["promptFeedback"]["blockReason"]
    call, _ = relayed(raw, "sse")
    row = usage_row(call)
    assert row["prompt_tokens"] == row["total_tokens"] == 9 and row["candidates_tokens"] == 0


@pytest.mark.parametrize("reference", [IMAGE_STREAM, IMAGE_STREAM_WITH_THOUGHTS])
def test_image_output_tokens_are_recorded_per_modality(reference):
    raw = recorded_stream(reference)
    expected = last_usage(events_of(raw, "sse"))
    call, sent = relayed(raw, "sse", 65536)
    assert sent == raw
    row = usage_row(call)
    image_tokens = {detail["modality"]: detail["tokenCount"] for detail in expected["candidatesTokensDetails"]}
    assert row["modalities"]["candidates"] == image_tokens and "IMAGE" in image_tokens
    assert row["candidates_tokens"] == expected["candidatesTokenCount"]
    assert row["total_tokens"] == expected["totalTokenCount"]


def test_json_array_stream():
    raw = recorded_stream(ARRAY_STREAM)
    call, sent = relayed(raw, "array", 3)
    assert sent == raw
    assert call.usage == last_usage(events_of(raw, "array"))


def test_a_stream_cut_by_the_upstream_records_what_arrived():
    raw = recorded_stream(PROMPT_CHANGES_ON_LAST_EVENT[2])
    events = events_of(raw, "sse")
    blocks = raw.split(b"\r\n\r\n")
    arrived = b"\r\n\r\n".join(blocks[:3]) + b"\r\n\r\n" + blocks[3][:20]  # three events and a bit
    call, sent = relayed(arrived, "sse", 11, failure=urllib3.exceptions.ProtocolError("connection reset"))
    assert call.aborted == "upstream"
    assert call.usage == events[2]["usageMetadata"]
    # The three whole events go out; the partial fourth does not; one in-band error closes the stream.
    assert sent.startswith(b"\r\n\r\n".join(blocks[:3]) + b"\r\n\r\n") and sent.count(b"data: ") == 4
    assert b'"status":"UNAVAILABLE"' in sent.split(b"\r\n\r\n")[-2]
    row = usage_row(call)
    assert row["aborted"] is True and row["prompt_tokens"] == events[2]["usageMetadata"]["promptTokenCount"]


def test_a_stream_the_client_abandons_records_what_arrived():
    raw = recorded_stream(PROMPT_CHANGES_ON_LAST_EVENT[0])
    events = events_of(raw, "sse")
    call = new_call("sse")
    upstream = FakeUpstreamResponse([block + b"\r\n\r\n" for block in raw.split(b"\r\n\r\n")[:-1]])
    body = relay_stream(call, upstream)
    for _ in range(4):
        next(body)
    body.close()  # what the WSGI server does when the client goes away
    assert call.aborted == "client" and upstream.closed
    assert call.usage == events[3]["usageMetadata"]
    assert usage_row(call)["aborted"] is True


def test_a_large_unary_body_is_read_from_its_tail():
    body = json.dumps({"candidates": [{"content": {"parts": [{"text": "x" * 3_000_000}]}}],
                       "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1290, "totalTokenCount": 1295,
                                         "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}]}},
                      indent=2).encode()
    call = new_call(None, method="generateContent")
    upstream = FakeUpstreamResponse(chunked(body, 65536))
    assert b"".join(relay_unary_chunks(call, upstream)) == body
    row = usage_row(call)
    assert row["total_tokens"] == 1295 and row["modalities"] == {"candidates": {"IMAGE": 1290}}
    assert row["streamed"] is False


def test_usage_row_names_everything_but_never_a_key():
    raw = recorded_stream(PROMPT_CHANGES_ON_LAST_EVENT[1])
    call, _ = relayed(raw, "sse")
    call.status, call.upstream_status, call.latency_ms = 200, 200, 12.3456
    row = usage_row(call)
    assert row["request_id"] == "req-1" and row["route"] == "streamGenerateContent"
    assert row["requested_model"] == row["upstream_model"] == "gemini-2.5-flash"
    assert (row["status"], row["upstream_status"], row["latency_ms"]) == (200, 200, 12.35)
    assert row["client"] is None and row["upstream"] is None and row["key_id"] is None


# --- the queue ----------------------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    opened = open_store(None, str(tmp_path / "usage.db"))
    yield opened
    opened.close()


def finished_call(number):
    call = new_call(None, method="generateContent")
    call.request_id, call.status, call.usage = f"req-{number}", 200, {"promptTokenCount": number, "totalTokenCount": number}
    return call


def test_recorder_queues_without_io_and_flush_writes_batches(store, monkeypatch):
    monkeypatch.setattr("relay.clients.usage.BATCH_ROWS", 3)
    written = []
    real_write = store.write_usage
    monkeypatch.setattr(store, "write_usage", lambda rows: (written.append(len(rows)), real_write(rows)))
    recorder = UsageRecorder(store)
    for number in range(1, 8):
        recorder.record(finished_call(number))
    assert written == [] and len(recorder.queue) == 7
    recorder.flush()
    assert written == [3, 3, 1] and not recorder.queue
    rows = store.usage_rows(0)
    assert sorted(row["request_id"] for row in rows) == sorted(f"req-{number}" for number in range(1, 8))
    assert sum(row["total_tokens"] for row in rows) == 28


def test_rows_stay_queued_in_order_when_the_store_fails(store, monkeypatch):
    monkeypatch.setattr("relay.clients.usage.BATCH_ROWS", 2)
    recorder = UsageRecorder(store)
    for number in range(1, 6):
        recorder.record(finished_call(number))
    calls = []

    def failing_second_batch(rows):
        calls.append([row["request_id"] for row in rows])
        if len(calls) == 2:
            raise StoreError("database is locked")
        store.__class__.write_usage(store, rows)

    monkeypatch.setattr(store, "write_usage", failing_second_batch)
    with pytest.raises(StoreError):
        recorder.flush()
    assert [row["request_id"] for row in recorder.queue] == ["req-3", "req-4", "req-5"]
    monkeypatch.undo()
    recorder.flush()
    assert sorted(row["request_id"] for row in store.usage_rows(0)) == [f"req-{number}" for number in range(1, 6)]


# --- the usage views ----------------------------------------------------------------------------------------

ADMIN_TOKEN = "admin-token-usage-view-1"
TEAM_KEY = "sk-relay-usage-view-team-key-0001"


@pytest.fixture
def usage_app(app_factory):
    """``usage_app(store, **settings)`` → a test client of an app on ``store`` with an admin token."""

    def build(store, **overrides):
        settings = {"upstreams": (Upstream(name="google", url=UPSTREAM_URL, keys=("up-key-view-123456",)),),
                    "admin_token": ADMIN_TOKEN, **overrides}
        return app_factory(environ={}, overrides=settings, store=store).test_client()

    return build


@pytest.fixture
def view_store(store):
    store.add_client_key({"name": "team", "key_hash": hash_key(TEAM_KEY), "created": 0})
    now = time.time()
    store.write_usage([
        {"ts": now - 60, "request_id": "a", "client": "team", "requested_model": "gemini-2.5-flash", "status": 200,
         "prompt_tokens": 5, "candidates_tokens": 7, "total_tokens": 12},
        {"ts": now - 30, "request_id": "b", "client": "other", "requested_model": "gemini-2.5-pro", "status": 429,
         "total_tokens": 0},
        {"ts": now - 10 * 86400, "request_id": "c", "client": "team", "requested_model": "gemini-2.5-flash",
         "status": 200, "total_tokens": 1000},
    ])
    return store


def test_the_admin_sees_everyones_usage(view_store, usage_app):
    client = usage_app(view_store)
    answer = client.get("/relay/usage?group=key&days=7", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json
    assert answer["client"] is None and answer["days"] == 7 and answer["group"] == "key"
    assert [(row["key"], row["requests"], row["errors"], row["total_tokens"]) for row in answer["rows"]] == [
        ("other", 1, 1, 0), ("team", 1, 0, 12)]
    everything = client.get("/relay/usage?group=model&days=30", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert {row["model"]: row["total_tokens"] for row in everything.json["rows"]} == {
        "gemini-2.5-flash": 1012, "gemini-2.5-pro": 0}


@pytest.mark.parametrize("headers", [{"x-goog-api-key": TEAM_KEY}, {"Authorization": f"Bearer {TEAM_KEY}"}])
def test_a_client_key_sees_only_its_own_usage(view_store, headers, usage_app):
    answer = usage_app(view_store).get("/relay/usage?group=status", headers=headers)
    assert answer.status_code == 200
    assert answer.json["client"] == "team"
    assert answer.json["rows"] == [{"status": 200, "requests": 1, "errors": 0, "prompt_tokens": 5,
                                    "candidates_tokens": 7, "thoughts_tokens": 0, "cached_tokens": 0,
                                    "tool_use_tokens": 0, "total_tokens": 12}]


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401), ({"x-goog-api-key": "sk-relay-wrong"}, 401), ({"Authorization": "Bearer not-the-token"}, 401),
])
def test_strangers_see_no_usage(view_store, headers, status, usage_app):
    answer = usage_app(view_store).get("/relay/usage", headers=headers)
    assert answer.status_code == status and answer.json["error"]["status"] == "UNAUTHENTICATED"


def test_passthrough_callers_have_no_usage_view(store, usage_app):
    client = usage_app(store, upstreams=(Upstream(name="google", url=UPSTREAM_URL),))
    answer = client.get("/relay/usage", headers={"x-goog-api-key": "AIza-some-google-key-1234"})
    assert answer.status_code == 403 and answer.json["error"]["status"] == "PERMISSION_DENIED"
    assert client.get("/relay/usage", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200


@pytest.mark.parametrize("query", ["days=0", "days=367", "days=seven", "group=client", "group="])
def test_bad_usage_queries_are_400(view_store, query, usage_app):
    answer = usage_app(view_store).get(f"/relay/usage?{query}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 400 and answer.json["error"]["status"] == "INVALID_ARGUMENT"


def test_the_view_includes_rows_still_queued_in_this_worker(store, usage_app):
    client = usage_app(store)
    services = client.application.extensions["relay"]
    services.usage.record(finished_call(42))
    answer = client.get("/relay/usage?group=model", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.json["rows"][0]["total_tokens"] == 42 and not services.usage.queue


def test_an_unreachable_store_is_503_and_keeps_the_queue(store, monkeypatch, usage_app):
    client = usage_app(store)
    services = client.application.extensions["relay"]
    services.usage.record(finished_call(1))

    def down(*args):
        raise StoreError("connection refused")
    monkeypatch.setattr(store, "write_usage", down)
    monkeypatch.setattr(store, "key_report", down)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for path in ("/relay/usage", "/relay/upstreams"):
        answer = client.get(path, headers=admin)
        assert answer.status_code == 503 and answer.json["error"]["status"] == "UNAVAILABLE"
        assert "connection refused" not in answer.get_data(as_text=True)
    assert len(services.usage.queue) == 1


def test_upstream_health_is_for_the_admin_only(store, usage_app):
    client = usage_app(store)
    assert client.get("/relay/upstreams").status_code == 401
    assert client.get("/relay/upstreams", headers={"x-goog-api-key": TEAM_KEY}).status_code == 401
    [upstream] = client.get("/relay/upstreams", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json["upstreams"]
    assert upstream["name"] == "google" and upstream["keys"][0]["key"] == "…3456"
    assert "up-key-view-123456" not in json.dumps(upstream)
    closed = usage_app(store, admin_token=None)
    answer = closed.get("/relay/upstreams", headers={"Authorization": "Bearer anything"})
    assert answer.status_code == 403 and "RELAY_ADMIN_TOKEN" in answer.json["error"]["message"]


def test_the_page_is_served_to_anyone_without_data(store, usage_app):
    answer = usage_app(store).get("/relay/")
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert answer.headers["Cache-Control"] == "no-store"
    page = answer.get_data(as_text=True)
    assert 'id="token"' in page and "sessionStorage" in page and ADMIN_TOKEN not in page
