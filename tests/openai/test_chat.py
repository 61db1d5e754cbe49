"""This module provides tests of the chat request translation: exact Gemini bodies for OpenAI requests."""

import orjson
import pytest

from relay.openai.chat import translate_request
from relay.openai.messages import SIGNATURE_PLACEHOLDER, unsigned_tool_call_ids
from relay.openai.responses import to_chat_completion
from relay.schemas import validate_body
from tests.openai import recordings

PNG = "iVBORw0KGgo="
SIGNATURE = "EqoeCqceAdHtim+cXhv3WM3Av2yBDu1t4su/bUCXEv2uoKmDxR=="


def chat(messages, **params):
    return {"model": "gemini-2.5-flash", "messages": messages, **params}


def user(text="Hi"):
    return {"role": "user", "content": text}


def body_for(**params):
    return translate_request(chat([user()], **params)).body


def test_a_whole_conversation_translates_to_the_exact_gemini_body():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg?size=2"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
            {"type": "file", "file": {"file_data": "JVBERi0=", "filename": "b.PDF"}},
        ]},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "cat"}'},
             "extra_content": {"google": {"thought_signature": SIGNATURE}}},
            {"id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "pdf"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "a cat"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "pdf"}]},
        {"role": "user", "content": "Thanks."},
        {"role": "assistant", "content": [{"type": "text", "text": "De rien."}]},
        {"role": "user", "content": "Bye."},
        {"role": "user", "content": "Really."},
    ]
    assert translate_request(chat(messages)).body == {
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]},
        "contents": [
            {"role": "user", "parts": [
                {"text": "What is in these?"},
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
                {"fileData": {"fileUri": "https://example.com/cat.jpg?size=2", "mimeType": "image/jpeg"}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                {"inlineData": {"mimeType": "audio/mp3", "data": "SUQz"}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
            ]},
            {"role": "model", "parts": [
                {"text": "Let me look."},
                {"functionCall": {"id": "call_a", "name": "lookup", "args": {"q": "cat"}}, "thoughtSignature": SIGNATURE},
                {"functionCall": {"id": "call_b", "name": "lookup", "args": {"q": "pdf"}}},
            ]},
            # Both results in one turn (Gemini's rule), and the next user message joins that turn.
            {"role": "user", "parts": [
                {"functionResponse": {"id": "call_a", "name": "lookup", "response": {"output": "a cat"}}},
                {"functionResponse": {"id": "call_b", "name": "lookup", "response": {"output": "a pdf"}}},
                {"text": "Thanks."},
            ]},
            {"role": "model", "parts": [{"text": "De rien."}]},
            {"role": "user", "parts": [{"text": "Bye."}, {"text": "Really."}]},
        ],
    }


def test_the_body_passes_relays_own_gemini_validation_and_serialises():
    messages = [user(), {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
    translated = translate_request(chat(
        messages, tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        temperature=0.5, top_p=0.9, max_tokens=10, n=2, reasoning_effort="high", stop=["x"],
    ))
    validate_body("generateContent", translated.body)
    assert orjson.loads(orjson.dumps(translated.body)) == translated.body


def test_a_system_only_conversation_becomes_the_prompt():
    body = translate_request(chat([{"role": "system", "content": "Tell a joke."}])).body
    assert body == {"contents": [{"role": "user", "parts": [{"text": "Tell a joke."}]}]}


def test_an_empty_assistant_message_is_left_out_and_refusals_are_text():
    messages = [user("a"), {"role": "assistant", "content": None}, user("b"),
                {"role": "assistant", "content": None, "refusal": "No."},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "Still no."}]}]
    assert translate_request(chat(messages)).body["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "No."}, {"text": "Still no."}]},
    ]


def tool_turn(*calls):
    return [user(), {"role": "assistant", "content": None, "tool_calls": list(calls)}]


def call(call_id, signature=None):
    item = {"id": call_id, "type": "function", "function": {"name": "f", "arguments": ""}}
    if signature:
        item["extra_content"] = {"google": {"thought_signature": signature}}
    return item


def model_parts(body):
    return [part.get("thoughtSignature") for part in body["contents"][1]["parts"]]


def test_signatures_come_from_the_message_then_the_memory_then_the_placeholder_on_a_first_call():
    asked = []

    def lookup(call_id):
        asked.append(call_id)
        return {"c2": "bWVtb3J5"}.get(call_id)

    body = translate_request(chat(tool_turn(call("c1", SIGNATURE), call("c2"), call("c3"))), lookup_signature=lookup).body
    assert model_parts(body) == [SIGNATURE, "bWVtb3J5", None]
    assert asked == ["c2", "c3"]  # the memory is not asked for a signature the client sent back
    body = translate_request(chat(tool_turn(call("c4"), call("c5")))).body
    assert model_parts(body) == [SIGNATURE_PLACEHOLDER, None]
    assert SIGNATURE_PLACEHOLDER == "skip_thought_signature_validator"


def test_the_memory_is_asked_only_about_the_current_turn():
    """Gemini checks signatures after the last user message only; older calls need no lookup."""
    messages = [*tool_turn(call("old1"), call("old2")), {"role": "tool", "tool_call_id": "old1", "content": "a"},
                {"role": "tool", "tool_call_id": "old2", "content": "b"}, user("next"),
                {"role": "assistant", "tool_calls": [call("new1", SIGNATURE), call("new2")]},
                {"role": "tool", "tool_call_id": "new1", "content": "c"}, {"role": "tool", "tool_call_id": "new2", "content": "d"},
                {"role": "assistant", "tool_calls": [call("new3")]}]
    asked = []
    body = translate_request(chat(messages), lookup_signature=lambda call_id: asked.append(call_id)).body
    assert asked == ["new2", "new3"] == unsigned_tool_call_ids(messages)
    signatures = [part.get("thoughtSignature") for content in body["contents"] for part in content["parts"]
                  if "functionCall" in part]
    assert signatures == [SIGNATURE_PLACEHOLDER, None, SIGNATURE, None, SIGNATURE_PLACEHOLDER]
    assert unsigned_tool_call_ids("junk") == [] and unsigned_tool_call_ids([user(), 5, {"role": "assistant"}]) == []


def test_a_text_answers_signature_comes_back_on_its_last_part():
    messages = [user(), {"role": "assistant", "content": "Hello", "extra_content": {"google": {"thought_signature": SIGNATURE}}}]
    assert translate_request(chat(messages)).body["contents"][1] == {
        "role": "model", "parts": [{"text": "Hello", "thoughtSignature": SIGNATURE}]}


def test_a_recorded_gemini_3_tool_round_trip_rebuilds_the_request_gemini_accepted():
    """llm-gemini's Gemini 3 recording: the answer's call, echoed back by an OpenAI client, is the same turn."""
    name = "function_calling/llm-gemini__test_tools_with_gemini_3_thought_signatures.json"
    answer = recordings.events(name)[0]
    completion, stored = to_chat_completion(answer, "gemini-3-flash-preview", created=1)
    assistant = completion["choices"][0]["message"]
    sent = recordings.request(name, 1)["contents"]
    call_id = assistant["tool_calls"][0]["id"]
    messages = [user("What is 5 times 3?"), assistant, {"role": "tool", "tool_call_id": call_id, "content": "15"}]
    contents = translate_request(chat(messages, model="gemini-3-flash-preview")).body["contents"]
    recorded_call = sent[1]["parts"][1]
    assert contents[1]["parts"] == [{
        "functionCall": {"id": call_id, "name": "multiply", "args": recorded_call["function_call"]["args"]},
        "thoughtSignature": recorded_call["thoughtSignature"],
    }]
    assert contents[2]["parts"] == [{"functionResponse": {"id": call_id, **sent[2]["parts"][0]["function_response"]}}]
    # A client that drops extra_content gets the signature back from the memory the pipeline filled.
    del assistant["tool_calls"][0]["extra_content"]
    memory = dict(stored)
    contents = translate_request(chat(messages), lookup_signature=memory.get).body["contents"]
    assert contents[1]["parts"][0]["thoughtSignature"] == recorded_call["thoughtSignature"]


TOOLS = [{"type": "function", "function": {"name": name, "description": f"{name} it", "strict": True,
                                            "parameters": {"type": "object", "properties": {}}}}
         for name in ("get", "put")]


@pytest.mark.parametrize("choice, tool_config, names", [
    (None, None, ["get", "put"]),
    ("auto", {"functionCallingConfig": {"mode": "AUTO"}}, ["get", "put"]),
    ("none", {"functionCallingConfig": {"mode": "NONE"}}, ["get", "put"]),
    ("required", {"functionCallingConfig": {"mode": "ANY"}}, ["get", "put"]),
    ({"type": "function", "function": {"name": "put"}},
     {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["put"]}}, ["get", "put"]),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "get"}}]}},
     {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get"]}}, ["get", "put"]),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "get"}}]}},
     {"functionCallingConfig": {"mode": "AUTO"}}, ["get"]),
])
def test_tools_and_tool_choice(choice, tool_config, names):
    params = {"tools": TOOLS} if choice is None else {"tools": TOOLS, "tool_choice": choice}
    body = body_for(**params)
    assert body["tools"] == [{"functionDeclarations": [
        {"name": name, "description": f"{name} it", "parametersJsonSchema": {"type": "object", "properties": {}}}
        for name in names]}]
    assert body.get("toolConfig") == tool_config


def test_web_search_options_ask_for_google_search():
    assert body_for(web_search_options={})["tools"] == [{"googleSearch": {}}]


PARSE_SCHEMA = {  # what client.chat.completions.parse(response_format=Person) sends (OAI-SDK lib/_pydantic.py)
    "$defs": {"Pet": {"type": "object", "properties": {"name": {"title": "Name", "type": "string"}},
                      "required": ["name"], "title": "Pet", "additionalProperties": False}},
    "type": "object", "title": "Person",
    "properties": {"name": {"title": "Name", "type": "string"},
                   "pets": {"items": {"$ref": "#/$defs/Pet"}, "title": "Pets", "type": "array"}},
    "required": ["name", "pets"], "additionalProperties": False,
}


@pytest.mark.parametrize("response_format, config", [
    ({"type": "text"}, None),
    ({"type": "json_object"}, {"responseMimeType": "application/json"}),
    ({"type": "json_schema", "json_schema": {"schema": PARSE_SCHEMA, "name": "Person", "strict": True}},
     {"responseMimeType": "application/json", "responseJsonSchema": PARSE_SCHEMA}),
])
def test_response_format(response_format, config):
    assert body_for(response_format=response_format, stream=False).get("generationConfig") == config


def test_generation_parameters():
    assert body_for(
        temperature=0.3, top_p=0.5, max_tokens=99, max_completion_tokens=100, stop="END", n=3, seed=7,
        presence_penalty=0.5, frequency_penalty=-0.5, logprobs=True, top_logprobs=4, modalities=["text", "image"],
    )["generationConfig"] == {
        "temperature": 0.3, "topP": 0.5, "seed": 7, "maxOutputTokens": 100, "stopSequences": ["END"],
        "candidateCount": 3, "presencePenalty": 0.5, "frequencyPenalty": -0.5, "responseLogprobs": True,
        "logprobs": 4, "responseModalities": ["TEXT", "IMAGE"],
    }
    assert body_for(max_tokens=12, stop=["a", "b"])["generationConfig"] == {"maxOutputTokens": 12, "stopSequences": ["a", "b"]}


def test_defaults_are_left_out():
    assert "generationConfig" not in body_for(n=1, presence_penalty=0, frequency_penalty=0.0, logprobs=False, stop=[])


@pytest.mark.parametrize("model, effort, thinking", [
    ("gemini-2.5-flash", "none", {"includeThoughts": False, "thinkingBudget": 0}),
    ("gemini-2.5-flash", "minimal", {"thinkingBudget": 1024}),
    ("gemini-2.5-flash", "low", {"thinkingBudget": 1024}),
    ("gemini-2.5-flash", "medium", {"thinkingBudget": 8192}),
    ("gemini-2.5-flash", "high", {"thinkingBudget": 24576}),
    ("gemini-2.5-pro", "none", {"includeThoughts": False, "thinkingBudget": 128}),  # 2.5 Pro cannot stop thinking
    ("gemini-2.5-pro", "max", {"thinkingBudget": 32768}),
    ("gemini-2.5-flash-lite", "none", {"includeThoughts": False, "thinkingBudget": 0}),
    ("gemini-3-pro-preview", "minimal", {"thinkingLevel": "LOW"}),
    ("gemini-3-pro-preview", "medium", {"thinkingLevel": "HIGH"}),  # 3 Pro has no MEDIUM
    ("gemini-3-pro-preview", "none", {"includeThoughts": False, "thinkingLevel": "LOW"}),
    ("gemini-3.1-pro-preview", "medium", {"thinkingLevel": "MEDIUM"}),
    ("gemini-3-flash-preview", "minimal", {"thinkingLevel": "MINIMAL"}),
    ("gemini-3.7-flash", "minimal", {"thinkingLevel": "LOW"}),  # 3.7 Flash refuses MINIMAL
    ("gemini-3-flash-preview", "xhigh", {"thinkingLevel": "HIGH"}),
    ("my-alias", "medium", {"thinkingBudget": 8192}),  # a model relay does not know: Google's budget as written
])
def test_reasoning_effort_follows_the_models_thinking_family(model, effort, thinking):
    translated = translate_request(chat([user()], model="client-name", reasoning_effort=effort), upstream_model=model)
    assert translated.body["generationConfig"] == {"thinkingConfig": thinking}
    assert translated.model == "client-name"


def test_the_request_model_decides_the_family_without_an_upstream_model():
    request = chat([user()], model="gemini-3-pro-preview", reasoning_effort="low")
    assert translate_request(request).body["generationConfig"] == {"thinkingConfig": {"thinkingLevel": "LOW"}}


@pytest.mark.parametrize("where", ["google", "extra_body"])
def test_google_extras_from_either_place(where):
    google = {"thinking_config": {"include_thoughts": True, "thinking_level": "low"}, "cached_content": "abc123",
              "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]}
    params = {"google": google} if where == "google" else {"extra_body": {"google": google}}
    translated = translate_request(chat([user()], **params))
    assert translated.body == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "generationConfig": {"thinkingConfig": {"includeThoughts": True, "thinkingLevel": "LOW"}},
        "safetySettings": google["safety_settings"],
        "cachedContent": "cachedContents/abc123",
    }
    assert translated.cached_content == "cachedContents/abc123"


def test_the_literal_extra_body_wins_and_camel_case_is_read():
    translated = translate_request(chat(
        [user()], reasoning_effort="low",
        google={"cachedContent": "cachedContents/a", "thinkingConfig": {"includeThoughts": True}},
        extra_body={"google": {"cached_content": "cachedContents/b"}},
    ))
    assert translated.cached_content == "cachedContents/b"
    assert translated.body["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}}


def test_include_thoughts_beats_the_effort_none_default():
    translated = translate_request(chat([user()], reasoning_effort="none",
                                        google={"thinking_config": {"include_thoughts": True}}))
    assert translated.body["generationConfig"] == {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 0}}


def test_ignored_parameters_change_nothing():
    plain = translate_request(chat([user()])).body
    assert translate_request(chat(
        [{"role": "user", "content": "Hi", "name": "ann"}], user="u1", metadata={"a": "b"}, store=True,
        service_tier="flex", parallel_tool_calls=True, prompt_cache_key="k", safety_identifier="s",
        logit_bias={"50256": -100}, prediction={"type": "content", "content": "x"}, verbosity="low",
        stream_options={"include_obfuscation": False}, some_future_field={"x": 1},
    )).body == plain


def test_stream_flags_and_method():
    streamed = translate_request(chat([user()], stream=True, stream_options={"include_usage": True}))
    assert (streamed.stream, streamed.include_usage, streamed.method) == (True, True, "streamGenerateContent")
    unary = translate_request(chat([user()], stream_options={"include_usage": True}))
    assert (unary.stream, unary.include_usage, unary.method) == (False, False, "generateContent")
    assert unary.cached_content is None
