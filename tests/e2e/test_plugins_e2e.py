"""End-to-end tests of relay's plugins through real gunicorn (gevent workers) and the google-genai SDK.

Thinking suffixes (the upstream sees the base model and the right thinkingConfig), cachedContent affinity
(every call naming a cache lands on the key that created it; other client keys can neither use nor see it),
image passthrough (recorded image responses arrive byte-identical, unary and SSE; per-model read timeouts),
and the memory a worker needs to relay a 20 MB image response.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading

import psutil
import pytest
from google.genai import errors, types

from relay.store.sqlite import SqliteStore
from tests.fakeupstream import fixtures

from .harness import FIXTURES, body_bytes, genai_client as make_genai_client, header_values, http, wait_until

pytestmark = pytest.mark.timeout(90)

UPSTREAM_KEYS = ("up-key-plugins-aaaa1111", "up-key-plugins-bbbb2222", "up-key-plugins-cccc3333")
OWNER_KEY = "client-key-plugins-owner-Qm2v"
STRANGER_KEY = "client-key-plugins-stranger-Xr9p"
PROMPT = "why is the sky blue?"
IMAGE_MODEL = "gemini-2.5-flash-image"
IMAGE_UNARY = "image_output/pydantic-ai__test_google_image_and_text_output.json"
IMAGE_SSE = ("image_output/js-genai__Client_Tests_generateContentStream_ML_Dev_should_stream_generate_content_"
             "with_image_output.http.0.sse.txt")
IMAGE_MB = 20
# The worker may hold the response a few times over (socket buffers, one event being framed) but never more.
MEMORY_FACTOR = 4


@pytest.fixture(scope="module")
def managed_relay(module_relay_factory):
    return module_relay_factory(env={"RELAY_UPSTREAM_KEYS": ",".join(UPSTREAM_KEYS),
                                     "RELAY_API_KEYS": f"{OWNER_KEY},{STRANGER_KEY}"})


@pytest.fixture(scope="module")
def single_worker_relay(module_relay_factory):
    """One gevent worker (so its memory can be watched), a short default read timeout, a long one for images."""
    return module_relay_factory(workers=1, env={"RELAY_READ_TIMEOUT": "2", "RELAY_MODEL_TIMEOUTS": "*-image*=60"})


def sdk(relay, key=OWNER_KEY):
    """A google-genai client for the relay; keep a reference to it (a collected client closes its connection)."""
    return make_genai_client(relay.url, key, "v1beta")


def request_id_of(response) -> str:
    headers = {name.lower(): value for name, value in dict(response.sdk_http_response.headers).items()}
    return headers["x-request-id"]


def thinking_config_sent(entry) -> dict:
    body = json.loads(body_bytes(entry))
    generation = body.get("generationConfig") or body.get("generation_config") or {}
    return generation.get("thinkingConfig") or generation.get("thinking_config") or {}


def usage_row(relay, request_id, timeout=10.0) -> dict | None:
    """The usage row relay wrote for a request (the background flusher writes about once a second)."""
    store = SqliteStore(relay.env["RELAY_DB"])
    try:
        def find():
            return next((row for row in store.usage_rows(0) if row["request_id"] == request_id), None)
        return wait_until(find, timeout, interval=0.2)
    finally:
        store.close()


# --- thinking suffixes ----------------------------------------------------------------------------------------

def test_suffix_reaches_upstream_as_base_model_and_thinking_config(managed_relay, fake_upstream):
    client = sdk(managed_relay)
    response = client.models.generate_content(model="gemini-2.5-flash-thinking-1024", contents=PROMPT)
    assert response.text
    [entry] = fake_upstream.requests()
    assert entry["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert thinking_config_sent(entry) == {"includeThoughts": True, "thinkingBudget": 1024}
    assert json.loads(body_bytes(entry))["contents"][0]["parts"][0]["text"] == PROMPT
    assert entry["key"] in UPSTREAM_KEYS

    request_id = request_id_of(response)
    [record] = managed_relay.access_log_for(request_id)
    assert (record["model"], record["upstream_model"]) == ("gemini-2.5-flash-thinking-1024", "gemini-2.5-flash")
    row = usage_row(managed_relay, request_id)
    assert row is not None, "no usage row was written"
    assert (row["requested_model"], row["upstream_model"]) == ("gemini-2.5-flash-thinking-1024", "gemini-2.5-flash")
    assert row["total_tokens"] == response.usage_metadata.total_token_count


@pytest.mark.parametrize("model, upstream_model, expected", [
    ("gemini-2.5-pro-nothinking", "gemini-2.5-pro", {"includeThoughts": False, "thinkingBudget": 128}),
    ("gemini-2.5-flash-lite-thinking-100", "gemini-2.5-flash-lite", {"includeThoughts": True, "thinkingBudget": 512}),
    ("gemini-3-pro-preview-thinking-medium", "gemini-3-pro-preview",
     {"includeThoughts": True, "thinkingLevel": "HIGH"}),
    ("gemini-3-flash-preview-thinking-2048", "gemini-3-flash-preview",
     {"includeThoughts": True, "thinkingLevel": "MEDIUM"}),
])
def test_suffix_on_a_stream_maps_per_family(managed_relay, fake_upstream, model, upstream_model, expected):
    client = sdk(managed_relay)
    chunks = list(client.models.generate_content_stream(model=model, contents=PROMPT))
    assert "".join(chunk.text or "" for chunk in chunks)
    [entry] = fake_upstream.requests()
    assert (entry["path"], entry["query"]) == (f"/v1beta/models/{upstream_model}:streamGenerateContent", "alt=sse")
    assert thinking_config_sent(entry) == expected


def test_fields_the_client_set_win_over_the_suffix(managed_relay, fake_upstream):
    config = types.GenerateContentConfig(temperature=0.5, thinking_config=types.ThinkingConfig(thinking_budget=300))
    client = sdk(managed_relay)
    client.models.generate_content(model="gemini-2.5-flash-thinking-high", contents=PROMPT, config=config)
    [entry] = fake_upstream.requests()
    sent = thinking_config_sent(entry)
    assert sent.get("thinkingBudget", sent.get("thinking_budget")) == 300
    assert sent.get("includeThoughts", sent.get("include_thoughts")) is True
    assert len(sent) == 2  # no second amount (Google rejects a budget next to a level)
    assert json.loads(body_bytes(entry))["generationConfig"]["temperature"] == 0.5


def test_models_list_and_get_show_suffixed_variants(managed_relay, fake_upstream):
    client = sdk(managed_relay)
    names = [model.name for model in client.models.list()]
    assert "models/gemini-2.5-flash-thinking" in names and "models/gemini-2.5-pro-nothinking" in names
    assert "models/gemini-3-pro-preview-thinking-low" in names
    assert not [name for name in names if name.startswith("models/gemini-2.0-flash-") and "thinking" in name]
    model = client.models.get(model="gemini-2.5-flash-thinking-low")
    assert model.name == "models/gemini-2.5-flash-thinking-low"
    assert [entry["path"] for entry in fake_upstream.requests()][-1] == "/v1beta/models/gemini-2.5-flash"


# --- cachedContent affinity ------------------------------------------------------------------------------------

def create_cache(relay, key=OWNER_KEY):
    contents = [types.Content(role="user", parts=[types.Part(text="A long transcript worth caching.")])]
    client = sdk(relay, key)
    return client.caches.create(
        model="gemini-2.5-flash", config=types.CreateCachedContentConfig(contents=contents, ttl="300s"))


def test_cached_calls_stay_on_the_creating_key_while_other_traffic_rotates(managed_relay, fake_upstream):
    client = sdk(managed_relay)
    cache = create_cache(managed_relay)
    [created] = fake_upstream.requests()
    assert created["path"] == "/v1beta/cachedContents"
    creator = created["key"]
    cached_config = types.GenerateContentConfig(cached_content=cache.name)
    for _ in range(12):
        client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT, config=cached_config)
        client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    list(client.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT, config=cached_config))
    client.caches.get(name=cache.name)
    client.caches.update(name=cache.name, config=types.UpdateCachedContentConfig(ttl="600s"))

    entries = fake_upstream.requests()[1:]
    cached = [entry for entry in entries if cache.name.encode() in body_bytes(entry) or cache.name in entry["path"]]
    plain = [entry for entry in entries if entry not in cached]
    assert len(cached) == 15 and len(plain) == 12
    assert {entry["key"] for entry in cached} == {creator}
    assert {entry["key"] for entry in plain} == set(UPSTREAM_KEYS)
    for entry in cached:
        assert header_values(entry, "x-goog-api-key") == [creator]


def test_another_client_key_can_neither_use_nor_see_the_cache(managed_relay, fake_upstream):
    cache = create_cache(managed_relay)
    own_before = len(fake_upstream.requests())
    stranger = sdk(managed_relay, STRANGER_KEY)
    attempts = [
        lambda: stranger.models.generate_content(
            model="gemini-2.5-flash", contents=PROMPT, config=types.GenerateContentConfig(cached_content=cache.name)),
        lambda: stranger.caches.get(name=cache.name),
        lambda: stranger.caches.update(name=cache.name, config=types.UpdateCachedContentConfig(ttl="1s")),
        lambda: stranger.caches.delete(name=cache.name),
    ]
    for attempt in attempts:
        with pytest.raises(errors.ClientError) as raised:
            attempt()
        assert (raised.value.code, raised.value.status) == (403, "PERMISSION_DENIED")
        assert raised.value.message == "CachedContent not found (or permission denied)"
    assert cache.name not in [listed.name for listed in stranger.caches.list()]
    assert len(fake_upstream.requests()) == own_before, "a refused request reached the upstream"
    owner = sdk(managed_relay)
    assert cache.name in [listed.name for listed in owner.caches.list()]
    owner.caches.delete(name=cache.name)
    assert cache.name not in [listed.name for listed in owner.caches.list()]


# --- image generation passthrough ------------------------------------------------------------------------------

IMAGE_REQUEST = {
    "contents": [{"role": "user",
                  "parts": [{"text": "Tell me a two-sentence story about an axolotl with an illustration."}]}],
    "generationConfig": {"responseModalities": ["TEXT", "IMAGE"],
                         "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K",
                                         "imageOutputOptions": {"mimeType": "image/jpeg", "compressionQuality": 80}}},
}


def test_recorded_image_response_arrives_byte_identical_unary(managed_relay, fake_upstream):
    fake_upstream.script({"path_contains": f"{IMAGE_MODEL}:generateContent", "fixture": IMAGE_UNARY})
    expected = fixtures.load(IMAGE_UNARY).body
    sent = json.dumps(IMAGE_REQUEST).encode()
    response = http().post(f"{managed_relay.url}/v1beta/models/{IMAGE_MODEL}:generateContent", data=sent,
                           headers={"x-goog-api-key": OWNER_KEY, "Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 200
    assert len(response.content) == len(expected) and response.content == expected
    [entry] = fake_upstream.requests()
    assert body_bytes(entry) == sent, "the image request must reach the upstream intact"

    row = usage_row(managed_relay, response.headers["X-Request-Id"])
    assert row is not None and row["total_tokens"] == 1353
    assert row["modalities"]["candidates"] == {"IMAGE": 1290}


def test_recorded_image_stream_arrives_byte_identical_sse(managed_relay, fake_upstream):
    fake_upstream.script({"path_contains": f"{IMAGE_MODEL}:streamGenerateContent", "fixture": IMAGE_SSE})
    expected = (FIXTURES / IMAGE_SSE).read_bytes()
    response = http().post(f"{managed_relay.url}/v1beta/models/{IMAGE_MODEL}:streamGenerateContent?alt=sse",
                           data=json.dumps(IMAGE_REQUEST).encode(), stream=True, timeout=60,
                           headers={"x-goog-api-key": OWNER_KEY, "Content-Type": "application/json"})
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    received = b"".join(response.iter_content(chunk_size=None))
    assert len(received) == len(expected) and received == expected

    row = usage_row(managed_relay, response.headers["X-Request-Id"])
    assert row is not None and row["total_tokens"] == 1352
    assert row["modalities"]["candidates"] == {"IMAGE": 1290}


def test_image_config_and_images_pass_through_the_sdk(managed_relay, fake_upstream, genai_client):
    config = types.GenerateContentConfig(
        response_modalities=["TEXT", "IMAGE"],
        # imageOutputOptions is Vertex-only in the SDK; the raw-request tests above send it.
        image_config=types.ImageConfig(aspect_ratio="16:9", image_size="2K"))

    def call(client):
        return client.models.generate_content(model=IMAGE_MODEL, contents=PROMPT, config=config)

    fake_upstream.script({"path_contains": f"{IMAGE_MODEL}:generateContent", "fixture": IMAGE_UNARY})
    call(genai_client(fake_upstream.url, UPSTREAM_KEYS[0], "v1beta"))
    [reference] = fake_upstream.requests()
    fake_upstream.reset()
    fake_upstream.script({"path_contains": f"{IMAGE_MODEL}:generateContent", "fixture": IMAGE_UNARY})
    response = call(sdk(managed_relay))
    [entry] = fake_upstream.requests()
    assert body_bytes(entry) == body_bytes(reference)

    recorded = json.loads(fixtures.load(IMAGE_UNARY).body)["candidates"][0]["content"]["parts"]
    [recorded_image] = [part["inlineData"] for part in recorded if "inlineData" in part]
    [image] = [part.inline_data for part in response.candidates[0].content.parts if part.inline_data]
    assert image.mime_type == recorded_image["mimeType"]
    assert image.data == base64.b64decode(recorded_image["data"])


def test_read_timeouts_are_set_per_model_pattern(single_worker_relay, fake_upstream):
    """The default read timeout is 2 s here; models matching *-image* get 60 s."""
    fake_upstream.script({"path_contains": ":generateContent", "delay_headers_ms": 3500})
    headers = {"x-goog-api-key": "callers-own-google-key", "Content-Type": "application/json"}
    body = json.dumps({"contents": [{"parts": [{"text": PROMPT}]}]}).encode()
    session = http()
    image = session.post(f"{single_worker_relay.url}/v1beta/models/{IMAGE_MODEL}:generateContent", data=body,
                         headers=headers, timeout=60)
    text = session.post(f"{single_worker_relay.url}/v1beta/models/gemini-2.5-flash:generateContent", data=body,
                        headers=headers, timeout=60)
    assert image.status_code == 200
    assert text.status_code == 504 and text.json()["error"]["status"] == "DEADLINE_EXCEEDED"


# --- memory while relaying a 20 MB image ----------------------------------------------------------------------

def worker_of(relay) -> psutil.Process:
    master = psutil.Process(relay.process.pid)
    workers = wait_until(lambda: master.children(), timeout=10)
    assert len(workers) == 1, f"expected one gunicorn worker, found {workers}"
    return workers[0]


class PeakRss:
    """Samples a process's RSS in a thread until stopped; ``peak`` is the largest sample."""

    def __init__(self, process, interval=0.01):
        self.process, self.interval = process, interval
        self.peak = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, self.process.memory_info().rss)


def relay_image(relay, path):
    """POST through the relay, reading the answer in 1 MB pieces; returns (status, size, sha256)."""
    digest, size = hashlib.sha256(), 0
    body = json.dumps(IMAGE_REQUEST).encode()
    headers = {"x-goog-api-key": "callers-own-google-key", "Content-Type": "application/json"}
    with http().post(relay.url + path, data=body, headers=headers, stream=True, timeout=60) as response:
        for piece in response.iter_content(chunk_size=1024 * 1024):
            digest.update(piece)
            size += len(piece)
        return response.status_code, size, digest.hexdigest()


@pytest.mark.parametrize("path, expected_body", [
    (f"/v1beta/models/{IMAGE_MODEL}:generateContent", lambda: fixtures.image_body(IMAGE_MB)),
    (f"/v1beta/models/{IMAGE_MODEL}:streamGenerateContent?alt=sse",
     lambda: b"".join(event.sse_bytes() for event in fixtures.image_events(IMAGE_MB))),
], ids=["unary", "sse"])
def test_relaying_a_20mb_image_keeps_worker_memory_bounded(single_worker_relay, fake_upstream, path, expected_body):
    expected = expected_body()
    expected_size, expected_sha = len(expected), hashlib.sha256(expected).hexdigest()
    del expected
    fake_upstream.script({"path_contains": IMAGE_MODEL, "image_mb": 0.25, "times": 1})
    assert relay_image(single_worker_relay, path)[0] == 200  # warm the code path with a small image first
    worker = worker_of(single_worker_relay)
    baseline = worker.memory_info().rss

    fake_upstream.script({"path_contains": IMAGE_MODEL, "image_mb": IMAGE_MB})
    with PeakRss(worker) as memory:
        status, size, sha = relay_image(single_worker_relay, path)

    assert status == 200
    assert (size, sha) == (expected_size, expected_sha), "the client did not receive exactly what the upstream sent"
    growth = memory.peak - baseline
    assert growth <= MEMORY_FACTOR * expected_size, (
        f"worker RSS grew by {growth / 2**20:.1f} MB relaying {expected_size / 2**20:.1f} MB")
