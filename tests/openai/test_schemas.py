"""This module provides tests of request validation: hostile and unsupported inputs fail naming their param."""

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.errors import InvalidArgument
from relay.openai.chat import translate_request
from relay.openai.embeddings import translate_embeddings
from relay.openai.errors import from_relay_error
from relay.openai.params import CHAT_IGNORED_PARAMS, CHAT_MAPPED_PARAMS, CHAT_REJECTED_PARAMS


def chat(messages, **params):
    return {"model": "gemini-2.5-flash", "messages": messages, **params}


def user(text="Hi"):
    return {"role": "user", "content": text}


def fields_of(request, translate=translate_request):
    with pytest.raises(InvalidArgument) as caught:
        translate(request)
    return [violation["field"] for violation in caught.value.details[0]["fieldViolations"]]


def assistant_calling(arguments, call_id="c1"):
    return {"role": "assistant", "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": "f", "arguments": arguments}}]}


@pytest.mark.parametrize("messages, fields", [
    ([], ["messages"]),
    ("hello", ["messages"]),
    ([1, "x", None], ["messages[0]", "messages[1]", "messages[2]"]),
    ([{"role": "wizard", "content": "x"}], ["messages[0].role"]),
    ([{"role": "function", "name": "f", "content": "x"}], ["messages[0].role"]),
    ([{"content": "x"}], ["messages[0].role"]),
    ([{"role": "user"}], ["messages[0].content"]),
    ([{"role": "user", "content": 5}], ["messages[0].content"]),
    ([{"role": "user", "content": [{"type": "video", "video": "x"}]}], ["messages[0].content[0].type"]),
    ([{"role": "user", "content": ["text"]}], ["messages[0].content[0]"]),
    ([{"role": "user", "content": [{"type": "text", "text": 5}]}], ["messages[0].content[0].text"]),
    ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://a/b.png"}}]}],
     ["messages[0].content[0].type"]),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], ["messages[0].content[0].image_url.url"]),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "midi"}}]}],
     ["messages[0].content[0].input_audio.format"]),
    ([{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}],
     ["messages[0].content[0].file.file_id"]),
    ([{"role": "tool", "content": "x"}], ["messages[0].tool_call_id"]),
    ([{"role": "assistant", "tool_calls": "f()"}], ["messages[0].tool_calls"]),
    ([{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}],
     ["messages[0].tool_calls[0].id"]),
    ([{"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]}], ["messages[0].tool_calls[0].type"]),
    ([{"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}],
     ["messages[0].tool_calls[0].function.name"]),
    ([assistant_calling(5)], ["messages[0].tool_calls[0].function.arguments"]),
])
def test_malformed_messages_name_the_param(messages, fields):
    assert fields_of(chat(messages)) == fields


@pytest.mark.parametrize("messages, field, description", [
    ([user(), {"role": "tool", "tool_call_id": "nobody", "content": "x"}], "messages[1].tool_call_id",
     "Answers no tool call of an earlier assistant message."),
    ([user(), assistant_calling("{not json")], "messages[1].tool_calls[0].function.arguments",
     "Must be a JSON object encoded as a string; it is not valid JSON."),
    ([user(), assistant_calling("[1, 2]")], "messages[1].tool_calls[0].function.arguments", "Must encode a JSON object."),
    ([user(), assistant_calling('{"a":' * 100 + "1" + "}" * 100)], "messages[1].tool_calls[0].function.arguments",
     "Nests deeper than 64 levels."),
    ([user(), assistant_calling("[" * 5000 + "]" * 5000)], "messages[1].tool_calls[0].function.arguments",
     "Must be a JSON object encoded as a string; it is not valid JSON."),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:text/plain,hello"}}]}],
     "messages[0].content[0].image_url.url", "Must be a base64 data URL: data:<mime type>;base64,<data>."),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,not base64!"}}]}],
     "messages[0].content[0].image_url.url", "Must be base64-encoded bytes."),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "javascript:alert(1)"}}]}],
     "messages[0].content[0].image_url.url", "Must be a data: URL or an http(s) URL."),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}]}],
     "messages[0].content[0].input_audio.data", "Must be base64-encoded bytes."),
    ([{"role": "user", "content": [{"type": "file", "file": {"file_data": "JVBERi0=", "filename": "blob"}}]}],
     "messages[0].content[0].file.file_data",
     "Must be a data: URL (data:<mime type>;base64,<data>), or name a file whose extension gives its type."),
    ([user(), {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"},
                                                    "extra_content": {"google": {"thought_signature": "not base64!"}}}]}],
     "messages[1].tool_calls[0].extra_content.google.thought_signature", "Must be the base64 string relay returned."),
])
def test_hostile_content_fails_while_translating_naming_the_param(messages, field, description):
    with pytest.raises(InvalidArgument) as caught:
        translate_request(chat(messages))
    assert caught.value.details[0]["fieldViolations"] == [{"field": field, "description": description}]
    error = from_relay_error(caught.value)
    assert (error.status, error.param, error.type) == (400, field, "invalid_request_error")


def test_giant_arguments_translate():
    arguments = {"rows": [{"id": index, "text": "x" * 100} for index in range(20_000)]}
    request = chat([user(), assistant_calling(orjson.dumps(arguments).decode())])
    assert translate_request(request).body["contents"][1]["parts"][0]["functionCall"]["args"] == arguments


@pytest.mark.parametrize("params, fields", [
    ({"audio": {"voice": "alloy", "format": "wav"}}, ["audio"]),
    ({"modalities": ["text", "audio"]}, ["modalities"]),
    ({"modalities": ["smell"]}, ["modalities[0]"]),
    ({"n": 2, "stream": True}, ["n"]),
    ({"n": 9}, ["n"]),
    ({"parallel_tool_calls": False}, ["parallel_tool_calls"]),
    ({"functions": [{"name": "f"}], "function_call": "auto"}, ["function_call", "functions"]),
    ({"top_logprobs": 3}, ["top_logprobs"]),
    ({"temperature": 3}, ["temperature"]),
    ({"temperature": "warm", "top_p": 2, "max_tokens": 0, "seed": 1.5}, ["max_tokens", "seed", "temperature", "top_p"]),
    ({"stop": 5}, ["stop"]),
    ({"reasoning_effort": "extreme"}, ["reasoning_effort"]),
    ({"reasoning_effort": "low", "google": {"thinking_config": {"thinking_budget": 10}}}, ["reasoning_effort"]),
    ({"google": {"thinking_config": {"thinking_budget": 10, "thinking_level": "low"}}}, ["google.thinking_config.thinking_level"]),
    ({"extra_body": {"google": {"thinking_config": {"thinking_level": "huge"}}}}, ["extra_body.google.thinking_config.thinking_level"]),
    ({"google": {"cached_content": 5}}, ["google.cached_content"]),
    ({"response_format": {"type": "yaml"}}, ["response_format.type"]),
    ({"response_format": {"type": "json_schema"}}, ["response_format.json_schema"]),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, ["tools[0].function", "tools[0].type"]),
    ({"tools": [{"type": "function", "function": {"name": "1st"}}]}, ["tools[0].function.name"]),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": [1]}}]}, ["tools[0].function.parameters"]),
    ({"tool_choice": "required"}, ["tool_choice"]),
    ({"tool_choice": "sometimes", "tools": []}, ["tool_choice"]),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}},
     ["tool_choice.function.name"]),
    ({"tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "any", "tools": []}}}, ["tool_choice.allowed_tools.mode"]),
])
def test_unsupported_and_invalid_parameters_name_themselves(params, fields):
    assert fields_of(chat([user()], **params)) == fields


def test_deep_schemas_are_refused_before_they_break_serialisation():
    schema = {"type": "object"}
    for _ in range(100):
        schema = {"type": "object", "properties": {"x": schema}}
    request = chat([user()], response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert fields_of(request) == ["response_format.json_schema.schema"]


@pytest.mark.parametrize("request_body", [None, [], "text", 5])
def test_a_body_that_is_not_an_object(request_body):
    assert fields_of(request_body) == ["request"]
    assert fields_of(request_body, translate_embeddings) == ["request"]


@pytest.mark.parametrize("params, fields", [
    ({}, ["input"]),
    ({"input": ""}, ["input[0]"]),
    ({"input": []}, ["input"]),
    ({"input": [1, 2, 3]}, ["input[0]", "input[1]", "input[2]"]),
    ({"input": [[1, 2]]}, ["input[0]"]),
    ({"input": ["ok", None, ""]}, ["input[1]", "input[2]"]),
    ({"input": ["x"] * 2049}, ["input"]),
    ({"input": "x", "encoding_format": "int8"}, ["encoding_format"]),
    ({"input": "x", "dimensions": 0}, ["dimensions"]),
])
def test_embeddings_validation(params, fields):
    assert fields_of({"model": "gemini-embedding-001", **params}, translate_embeddings) == fields


def test_the_parameter_tables_cover_what_relay_says_it_does():
    assert {"temperature", "tools", "tool_choice", "reasoning_effort", "response_format"} <= set(CHAT_MAPPED_PARAMS)
    assert {"user", "metadata", "store", "service_tier", "parallel_tool_calls (true)"} <= set(CHAT_IGNORED_PARAMS)
    assert {"audio", "n (above 1, with stream)", "parallel_tool_calls (false)"} <= set(CHAT_REJECTED_PARAMS)
    assert not set(CHAT_MAPPED_PARAMS) & set(CHAT_IGNORED_PARAMS)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "x", "data:", "data:a;base64,!", "auto"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["role", "content", "type", "text", "tool_calls", "id", "function", "name", "arguments",
                         "tool_call_id", "image_url", "url", "file", "file_data", "input_audio", "data", "format"]),
        children, max_size=4),
    max_leaves=20,
)
ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "x"])
MESSAGES = st.lists(st.fixed_dictionaries({"role": ROLES}, optional={
    "content": JSON, "tool_calls": JSON, "tool_call_id": st.sampled_from(["c1", "c2", 5]),
}), max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=MESSAGES | JSON, extra=st.dictionaries(st.sampled_from(
    ["tools", "tool_choice", "stop", "n", "response_format", "google", "extra_body", "stream", "modalities"]), JSON))
def test_any_json_translates_or_fails_with_a_validation_error(messages, extra):
    try:
        translated = translate_request(chat(messages, **extra))
    except InvalidArgument as error:
        assert from_relay_error(error).param
    else:
        orjson.dumps(translated.body)


@pytest.mark.parametrize("message, param", [
    ({"role": {"x": 1}, "content": "hi"}, "messages[0].role"),
    ({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": ["wav"]}}]},
     "messages[0].content[0].input_audio.format"),
])
def test_values_of_the_wrong_type_are_400_not_500(message, param):
    with pytest.raises(InvalidArgument) as raised:
        translate_request({"model": "gemini-2.5-flash", "messages": [message]})
    assert raised.value.details[0]["fieldViolations"][0]["field"] == param
