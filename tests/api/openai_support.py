"""This module provides what the OpenAI door's Flask-level tests share: keys, an app with the in-process fake
upstream, and readers for what reached the upstream and what the caller got."""

import json

from relay.clients.auth import hash_key
from tests.conftest import UPSTREAM_URL
from tests.fakeupstream import inprocess

UPSTREAM_KEY = "up-key-openai-door-0001"
SECOND_UPSTREAM_KEY = "up-key-openai-door-0002"
CLIENT_KEY = "client-key-openai-door-aaaa"
OTHER_CLIENT_KEY = "client-key-openai-door-bbbb"
LIMITED_KEY = "client-key-openai-door-limited"
MODEL = "gemini-2.5-flash"
GEMINI3 = "gemini-3-pro-preview"
TOOL_CALL_FIXTURE = "function_calling/vercel-ai__google-tool-call-gemini3.json"
TOOL_STREAM_FIXTURE = "function_calling/llm-gemini__test_tools_with_gemini_3_thought_signatures.0.jsonarray.txt"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "weather", "description": "The weather in a place.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}


def bearer(key=CLIENT_KEY):
    return {"Authorization": f"Bearer {key}"}


def make_app(app_factory, mock_upstream, upstream_keys=(UPSTREAM_KEY,), **env):
    """A managed relay with two static client keys, answered by the in-process fake upstream: (app, fake state)."""
    app = app_factory({"RELAY_UPSTREAM_KEYS": ",".join(upstream_keys),
                       "RELAY_API_KEYS": f"{CLIENT_KEY},{OTHER_CLIENT_KEY}", **env})
    return app, inprocess.install(mock_upstream, UPSTREAM_URL)


def add_limited_key(app, **limits):
    """A CLI-style client key (LIMITED_KEY) with limits or a model allowlist."""
    app.extensions["relay"].store.add_client_key(
        {"name": "limited", "key_hash": hash_key(LIMITED_KEY), "created": "2026-01-01", **limits})


def chat(client, key=CLIENT_KEY, path="/v1/chat/completions", **body):
    body.setdefault("model", MODEL)
    body.setdefault("messages", [{"role": "user", "content": "Why is the sky blue?"}])
    response = client.post(path, json=body, headers=bearer(key))
    response.get_data()
    response.close()  # runs the completion callbacks: usage row, signatures of a stream's end
    return response


def sent(state, index=-1):
    """(path, query, upstream key, parsed body) of a request the fake upstream received."""
    entry = state.requests[index]
    body = json.loads(entry["body_text"]) if entry["body_text"] else None
    return entry["path"], entry["query"], entry["key"], body


def openai_error(response, status, code=None, param=None):
    """The OpenAI error object of ``response``, checked for OpenAI's shape and the given status, code, param."""
    assert response.status_code == status, response.data[:2000]
    body = json.loads(response.data)
    assert list(body) == ["error"] and set(body["error"]) == {"message", "type", "param", "code"}, body
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


def sse_chunks(data):
    """The parsed ``data:`` payloads of an SSE body, ``[DONE]`` kept as the string."""
    chunks = []
    for block in data.decode().split("\n\n"):
        if block.startswith("data: "):
            payload = block[len("data: "):]
            chunks.append(payload if payload == "[DONE]" else json.loads(payload))
    return chunks


def usage_rows(app):
    services = app.extensions["relay"]
    services.usage.flush()
    return services.store.usage_rows(0)
