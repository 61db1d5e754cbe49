"""End-to-end: the legacy google-generativeai SDK (REST transport) through real gunicorn to the fake upstream.

The legacy SDK is what many teams still run: it sends ``$alt=json;enum-encoding=int`` on every call,
streams as a JSON array (no ``alt=sse``), calls ``embedContent`` and the legacy ``countTokens`` form.
"""
from __future__ import annotations

import json
import warnings

import pytest

from .harness import body_bytes, header_values

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    legacy = pytest.importorskip("google.generativeai")

pytestmark = pytest.mark.timeout(60)

UPSTREAM_KEY = "up-key-legacy-Qq81"
CLIENT_KEY = "client-key-legacy-Ww72"
MODEL = "gemini-2.0-flash"


@pytest.fixture(scope="module")
def relay(module_relay_factory):
    return module_relay_factory(env={"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY})


@pytest.fixture
def model(relay):
    legacy.configure(api_key=CLIENT_KEY, transport="rest", client_options={"api_endpoint": relay.url})
    return legacy.GenerativeModel(MODEL)


def only_upstream_key(entry):
    assert header_values(entry, "x-goog-api-key") == [UPSTREAM_KEY]
    assert CLIENT_KEY not in json.dumps(entry["headers"]) + entry["query"]


def test_generate(model, fake_upstream):
    response = model.generate_content("why is the sky blue?")
    assert "Rayleigh" in response.text
    [entry] = fake_upstream.requests()
    assert entry["path"] == f"/v1beta/models/{MODEL}:generateContent"
    assert "enum-encoding" in entry["query"]  # $alt=json;enum-encoding=int passed through untouched
    only_upstream_key(entry)
    assert json.loads(body_bytes(entry))["contents"][0]["parts"][0]["text"] == "why is the sky blue?"


def test_stream_is_a_json_array(model, fake_upstream):
    chunks = list(model.generate_content("hi", stream=True))
    assert len(chunks) >= 2
    [entry] = fake_upstream.requests()
    assert entry["path"] == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert "sse" not in entry["query"]
    only_upstream_key(entry)


def test_count_tokens_legacy_form(model, fake_upstream):
    assert model.count_tokens("hi").total_tokens > 0
    [entry] = fake_upstream.requests()
    body = json.loads(body_bytes(entry))
    assert body["generateContentRequest"]["model"] == f"models/{MODEL}"  # kept: Google requires it there


def test_embed_content(relay, model, fake_upstream):
    result = legacy.embed_content(model="models/gemini-embedding-001", content="hello")
    assert len(result["embedding"]) > 0
    [entry] = fake_upstream.requests()
    assert entry["path"] == "/v1beta/models/gemini-embedding-001:embedContent"
    only_upstream_key(entry)


def test_list_models(model, fake_upstream):
    names = [info.name for info in legacy.list_models()]
    assert "models/gemini-2.0-flash" in names
    assert all(entry["path"] == "/v1beta/models" for entry in fake_upstream.requests())
