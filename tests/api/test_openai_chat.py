"""Flask-level tests of the OpenAI door's chat completions: what reached the upstream (path, query, key, Gemini
body) and what the caller got, unary and streamed, tools, thought-signature memory, cache pinning, usage."""

import json

import pytest

from tests.api.openai_support import (
    CLIENT_KEY, GEMINI3, MODEL, OTHER_CLIENT_KEY, TOOL_CALL_FIXTURE, TOOL_STREAM_FIXTURE, UPSTREAM_KEY, WEATHER_TOOL,
    bearer, chat, make_app, openai_error, sent, sse_chunks, usage_rows,
)
from tests.fakeupstream import fixtures

PLACEHOLDER = "skip_thought_signature_validator"


@pytest.fixture
def door(app_factory, mock_upstream):
    app, state = make_app(app_factory, mock_upstream)
    return app, app.test_client(), state


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1beta/openai/chat/completions"])
def test_a_unary_chat_reaches_generate_content_translated(door, access_log, path):
    app, client, state = door
    response = chat(client, path=path, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}])
    assert response.status_code == 200, response.data
    completion = response.get_json()
    assert completion["object"] == "chat.completion" and completion["model"] == MODEL
    assert completion["choices"][0]["message"]["content"].startswith("The sky is blue")
    assert completion["usage"]["total_tokens"] == 429
    assert sent(state) == (f"/v1beta/models/{MODEL}:generateContent", "", UPSTREAM_KEY, {
        "contents": [{"role": "user", "parts": [{"text": "Why is the sky blue?"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]}})
    [row] = usage_rows(app)
    assert (row["door"], row["route"], row["requested_model"], row["total_tokens"]) == (
        "openai", "generateContent", MODEL, 429)
    assert access_log[-1]["door"] == "openai" and access_log[-1]["status"] == 200


def test_a_stream_is_translated_event_by_event_and_ends_with_usage_and_done(door):
    app, client, state = door
    response = chat(client, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    chunks = sse_chunks(response.data)
    assert chunks[-1] == "[DONE]"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"] == [] and chunks[-2]["usage"]["total_tokens"] > 0
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks[:-2]][-1] == "stop"
    path, query, key, _ = sent(state)
    assert (path, query, key) == (f"/v1beta/models/{MODEL}:streamGenerateContent", "alt=sse", UPSTREAM_KEY)
    [row] = usage_rows(app)
    assert row["door"] == "openai" and row["streamed"] is True and row["route"] == "streamGenerateContent"


def test_tools_reach_the_upstream_as_declarations_and_calls_come_back_signed(door):
    app, client, state = door
    state.add_rules({"path_contains": ":generateContent", "fixture": TOOL_CALL_FIXTURE})
    response = chat(client, model=GEMINI3, tools=[WEATHER_TOOL], tool_choice="required")
    [tool_call] = response.get_json()["choices"][0]["message"]["tool_calls"]
    assert response.get_json()["choices"][0]["finish_reason"] == "tool_calls"
    assert tool_call["function"] == {"name": "weather", "arguments": '{"location":"San Francisco"}'}
    assert len(tool_call["id"]) <= 40 and tool_call["extra_content"]["google"]["thought_signature"]
    _, _, _, body = sent(state)
    assert body["tools"] == [{"functionDeclarations": [{
        "name": "weather", "description": "The weather in a place.",
        "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"]}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


def tool_turn(tool_call, keep_signature):
    """The history an OpenAI client sends back after running the tool (with or without extra_content)."""
    returned = dict(tool_call) if keep_signature else {key: value for key, value in tool_call.items()
                                                       if key != "extra_content"}
    return [{"role": "user", "content": "Weather in SF?"},
            {"role": "assistant", "content": None, "tool_calls": [returned]},
            {"role": "tool", "tool_call_id": tool_call["id"], "content": "Sunny, 21 C"}]


@pytest.mark.parametrize("keep_signature", [True, False])
def test_a_signature_is_kept_or_restored_from_memory(door, keep_signature):
    app, client, state = door
    state.add_rules({"path_contains": ":generateContent", "fixture": TOOL_CALL_FIXTURE, "times": 1})
    [tool_call] = chat(client, model=GEMINI3, tools=[WEATHER_TOOL]).get_json()["choices"][0]["message"]["tool_calls"]
    signature = tool_call["extra_content"]["google"]["thought_signature"]
    response = chat(client, model=GEMINI3, tools=[WEATHER_TOOL], messages=tool_turn(tool_call, keep_signature))
    assert response.status_code == 200, response.data  # the fake rejects a Gemini 3 call without one
    model_turn = sent(state)[3]["contents"][1]
    assert model_turn["parts"][0]["thoughtSignature"] == signature
    assert model_turn["parts"][0]["functionCall"]["id"] == tool_call["id"]


def test_an_unknown_id_gets_the_placeholder_and_another_clients_id_is_not_restored(door):
    app, client, state = door
    state.add_rules({"path_contains": ":generateContent", "fixture": TOOL_CALL_FIXTURE, "times": 1})
    [tool_call] = chat(client, model=GEMINI3, tools=[WEATHER_TOOL]).get_json()["choices"][0]["message"]["tool_calls"]
    stranger = chat(client, key=OTHER_CLIENT_KEY, model=GEMINI3, tools=[WEATHER_TOOL],
                    messages=tool_turn(tool_call, keep_signature=False))
    assert stranger.status_code == 200, stranger.data
    assert sent(state)[3]["contents"][1]["parts"][0]["thoughtSignature"] == PLACEHOLDER
    unknown = dict(tool_call, id="call_never_issued")
    chat(client, model=GEMINI3, tools=[WEATHER_TOOL], messages=tool_turn(unknown, keep_signature=False))
    assert sent(state)[3]["contents"][1]["parts"][0]["thoughtSignature"] == PLACEHOLDER


def test_a_streamed_tool_call_is_remembered_when_the_stream_is_complete(door):
    app, client, state = door
    events = [json.loads(event.sse_text) for event in fixtures.load(TOOL_STREAM_FIXTURE).events]
    state.add_rules({"path_contains": "streamGenerateContent", "fixture": TOOL_STREAM_FIXTURE})
    stored = []
    memory_store = app.extensions["relay"].store
    real_put = memory_store.put_values
    memory_store.put_values = lambda values, expire_at: (stored.append(dict(values)), real_put(values, expire_at))
    chunks = sse_chunks(chat(client, model="gemini-3-flash-preview", stream=True, tools=[WEATHER_TOOL]).data)
    [call_delta] = [delta for chunk in chunks[:-1] for delta in chunk["choices"][0]["delta"].get("tool_calls", ())]
    assert call_delta["index"] == 0 and call_delta["function"]["name"] == "multiply"
    assert len(stored) == 1, "one store write per answer, not one per event"
    messages = tool_turn({key: call_delta[key] for key in ("id", "type", "function")}, keep_signature=False)
    chat(client, model="gemini-3-flash-preview", tools=[WEATHER_TOOL], messages=messages)
    restored = sent(state)[3]["contents"][1]["parts"][0]["thoughtSignature"]
    assert restored == events[0]["candidates"][0]["content"]["parts"][0]["thoughtSignature"]


def test_suffixes_and_reasoning_effort_reach_the_upstream_as_thinking_config(door):
    app, client, state = door
    chat(client, model="gemini-2.5-flash-thinking-8192")
    path, _, _, body = sent(state)
    assert path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert body["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 8192}
    chat(client, model="gemini-3-pro-preview", reasoning_effort="low")
    assert sent(state)[3]["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "LOW"}
    assert usage_rows(app)[0]["requested_model"] == "gemini-3-pro-preview"


def test_a_cached_content_is_pinned_to_its_owner_and_refused_to_others(app_factory, mock_upstream):
    app, state = make_app(app_factory, mock_upstream, upstream_keys=(UPSTREAM_KEY, "up-key-openai-door-0002"))
    client = app.test_client()
    created = client.post("/v1beta/cachedContents", headers={"x-goog-api-key": CLIENT_KEY},
                          json={"model": f"models/{MODEL}", "contents": [{"role": "user", "parts": [{"text": "x"}]}]})
    assert created.status_code == 200, created.data
    name, creator_key = created.get_json()["name"], state.requests[-1]["key"]
    for _ in range(3):
        assert chat(client, google={"cached_content": name}).status_code == 200
        _, _, key, body = sent(state)
        assert key == creator_key and body["cachedContent"] == name
    before = len(state.requests)
    refused = chat(client, key=OTHER_CLIENT_KEY, extra_body={"google": {"cached_content": name}})
    openai_error(refused, 403)
    assert len(state.requests) == before, "another client's cache never reaches the upstream"


def test_an_image_data_url_goes_in_and_an_image_comes_out(door):
    app, client, state = door
    state.add_rules({"path_contains": ":generateContent", "image_mb": 0.01})
    image = "data:image/png;base64,iVBORw0KGgo="
    response = chat(client, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Describe and redraw"}, {"type": "image_url", "image_url": {"url": image}}]}])
    message = response.get_json()["choices"][0]["message"]
    assert message["images"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert sent(state)[3]["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}


def test_a_hostile_request_never_reaches_the_upstream(door):
    app, client, state = door
    cases = [
        ({"model": "../../v1/files"}, "model"),
        ({"model": MODEL, "messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": "f", "arguments": "[" * 5000}}]}]},
         "messages[0].tool_calls[0].function.arguments"),
        ({"model": MODEL, "messages": [{"role": "tool", "tool_call_id": "call_of_someone_else", "content": "x"}]},
         "messages[0].tool_call_id"),
        ({"model": MODEL, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}, "messages[0].content[0].image_url.url"),
    ]
    for body, param in cases:
        response = client.post("/v1/chat/completions", json=body, headers=bearer())
        openai_error(response, 400, param=param)
    assert state.requests == []
