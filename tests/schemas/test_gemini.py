"""Tests for request validation: every rule Google would reject on, reported all at once, nothing sent upstream."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import BAD_REQUEST_TYPE
from tests.support import AUTH, EMBED_MODEL, MODEL
from tests.support import EMPTY_ANSWER as ANSWER
from tests.support import UPSTREAM_URL as UPSTREAM

TEXT_PART = {"text": "Hello"}
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def generate(**fields):
    """A valid generateContent body with ``fields`` added or replaced."""
    return {"contents": [{"role": "user", "parts": [TEXT_PART]}], **fields}


def contents(*parts, role="user"):
    return [{"role": role, "parts": list(parts)}]


def embed_item(model=f"models/{EMBED_MODEL}", text="x"):
    return {"model": model, "content": {"parts": [{"text": text}]}}


@pytest.fixture(scope="module")
def client(managed):
    """conftest's managed app (tests.support.MANAGED)."""
    return managed


@pytest.fixture
def relayed(client, mock_upstream):
    """POST a body (dict or bytes) to a model method and return (response, bytes the upstream received or None)."""

    def post(method, body, model=MODEL, content_type="application/json", query=""):
        url = f"{UPSTREAM}/v1beta/models/{model}:{method}{query}"
        if method == "streamGenerateContent":
            mock_upstream.post(url, body=b'data: {"candidates": []}\r\n\r\n', content_type="text/event-stream")
        else:
            mock_upstream.post(url, body=ANSWER, content_type="application/json; charset=UTF-8")
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = client.post(f"/v1beta/models/{model}:{method}{query}", data=raw, headers=AUTH, content_type=content_type)
        sent = [call.request.body for call in mock_upstream.calls]
        assert len(sent) <= 1
        return response, (sent[0] if sent else None)

    return post


def field_violations(response, google_error, wrapped=False):
    """{field: description} from the 400's single google.rpc.BadRequest detail."""
    error = google_error(response, 400, "INVALID_ARGUMENT", wrapped=wrapped)
    [detail] = error["details"]
    assert detail["@type"] == BAD_REQUEST_TYPE
    violations = detail["fieldViolations"]
    assert all(set(violation) == {"field", "description"} and violation["description"] for violation in violations)
    fields = [violation["field"] for violation in violations]
    assert len(fields) == len(set(fields)), fields
    for violation in violations:
        assert violation["field"] in error["message"]
    return {violation["field"]: violation["description"] for violation in violations}


# -- one violation at a time ------------------------------------------------------------------------

GENERATE_VIOLATIONS = {
    "missing contents": ({"generationConfig": {"temperature": 1}}, "contents"),
    "empty contents": ({"contents": []}, "contents"),
    "null contents": ({"contents": None}, "contents"),
    "role system": ({"contents": contents(TEXT_PART, role="system")}, "contents[0].role"),
    "role assistant in second turn": (
        {"contents": contents(TEXT_PART) + contents(TEXT_PART, role="assistant")}, "contents[1].role"),
    "empty part": ({"contents": contents({})}, "contents[0].parts[0]"),
    "part with only thought": ({"contents": contents({"thought": True})}, "contents[0].parts[0]"),
    "part with only an unknown field": ({"contents": contents(TEXT_PART, {"image": "x.png"})}, "contents[0].parts[1]"),
    "data URI": (
        {"contents": contents({"inlineData": {"mimeType": "image/png", "data": f"data:image/png;base64,{PNG_BASE64}"}})},
        "contents[0].parts[0].inlineData.data"),
    "data URI, snake_case": (
        {"contents": contents({"inline_data": {"mime_type": "image/png", "data": f"data:image/png;base64,{PNG_BASE64}"}})},
        "contents[0].parts[0].inlineData.data"),
    "not base64": (
        {"contents": contents({"inlineData": {"mimeType": "image/png", "data": "not base64!"}})},
        "contents[0].parts[0].inlineData.data"),
    "temperature above 2": (generate(generationConfig={"temperature": 2.01}), "generationConfig.temperature"),
    "temperature below 0": (generate(generationConfig={"temperature": -0.1}), "generationConfig.temperature"),
    "topP above 1": (generate(generationConfig={"topP": 1.5}), "generationConfig.topP"),
    "topP below 0": (generate(generationConfig={"topP": -0.01}), "generationConfig.topP"),
    "top_p above 1, snake_case": (generate(generation_config={"top_p": 1.5}), "generationConfig.topP"),
    "topK 0": (generate(generationConfig={"topK": 0}), "generationConfig.topK"),
    "top_k -3, snake_case": (generate(generation_config={"top_k": -3}), "generationConfig.topK"),
    "maxOutputTokens 0": (generate(generationConfig={"maxOutputTokens": 0}), "generationConfig.maxOutputTokens"),
    "max_output_tokens -1, snake_case": (
        generate(generation_config={"max_output_tokens": -1}), "generationConfig.maxOutputTokens"),
    "candidateCount 0": (generate(generationConfig={"candidateCount": 0}), "generationConfig.candidateCount"),
    "candidate_count 0, snake_case": (generate(generation_config={"candidate_count": 0}), "generationConfig.candidateCount"),
    "body model differs": (generate(model="models/gemini-2.5-pro"), "model"),
    "body model differs, no prefix": (generate(model="gemini-2.5-pro"), "model"),
    "body model names a tuned model": (generate(model=f"tunedModels/{MODEL}"), "model"),
}
THINKING_BOTH = {
    "camelCase": generate(generationConfig={"thinkingConfig": {"thinkingBudget": 1024, "thinkingLevel": "LOW"}}),
    "snake_case": generate(generation_config={"thinking_config": {"thinking_budget": 1024, "thinking_level": "LOW"}}),
    "mixed": generate(generationConfig={"thinking_config": {"thinkingBudget": 0, "thinking_level": "HIGH"}}),
}


@pytest.mark.parametrize("method", ["generateContent", "streamGenerateContent"])
@pytest.mark.parametrize("case", list(GENERATE_VIOLATIONS))
def test_each_generate_violation_is_a_400_naming_the_field(relayed, google_error, method, case):
    body, field = GENERATE_VIOLATIONS[case]
    query = "?alt=sse" if method == "streamGenerateContent" else ""
    response, sent = relayed(method, body, query=query)

    assert field_violations(response, google_error).keys() == {field}
    assert sent is None


@pytest.mark.parametrize("data", [f"data:image/png;base64,{PNG_BASE64}", "data:,"])
def test_a_data_uri_is_explained(relayed, google_error, data):
    body = {"contents": contents({"inlineData": {"mimeType": "image/png", "data": data}})}
    response, sent = relayed("generateContent", body)

    description = field_violations(response, google_error)["contents[0].parts[0].inlineData.data"]
    assert "data:" in description and "mimeType" in description
    assert sent is None


@pytest.mark.parametrize("spelling", list(THINKING_BOTH))
def test_thinking_budget_and_level_together_are_rejected(relayed, google_error, spelling):
    response, sent = relayed("generateContent", THINKING_BOTH[spelling])

    [field] = field_violations(response, google_error)
    assert field.startswith("generationConfig.thinkingConfig")
    assert sent is None


def test_every_violation_is_reported_at_once(relayed, google_error):
    body = {
        "contents": [
            {"role": "system", "parts": [{}, {"inlineData": {"mimeType": "image/png", "data": "data:image/png;base64,AAAA"}}]},
            {"role": "model", "parts": [TEXT_PART, {"thought": True}]},
        ],
        "generationConfig": {
            "temperature": 3, "topP": 1.5, "topK": 0, "maxOutputTokens": 0, "candidateCount": 0,
            "thinkingConfig": {"thinkingBudget": 8, "thinkingLevel": "LOW"},
        },
    }
    response, sent = relayed("generateContent", body)

    violations = field_violations(response, google_error)
    expected = {
        "contents[0].role", "contents[0].parts[0]", "contents[0].parts[1].inlineData.data", "contents[1].parts[1]",
        "generationConfig.temperature", "generationConfig.topP", "generationConfig.topK",
        "generationConfig.maxOutputTokens", "generationConfig.candidateCount",
    }
    assert expected <= violations.keys()
    assert len([field for field in violations if field.startswith("generationConfig.thinkingConfig")]) == 1
    assert len(violations) == len(expected) + 1
    assert sent is None


def test_snake_case_violations_are_reported_at_once_too(relayed, google_error):
    body = {
        "contents": [{"role": "user", "parts": [{"inline_data": {"mime_type": "image/png", "data": "data:,x"}}]}],
        "generation_config": {"top_p": 2, "top_k": 0, "max_output_tokens": 0, "candidate_count": 0, "temperature": 9},
    }
    response, sent = relayed("generateContent", body)

    assert field_violations(response, google_error).keys() == {
        "contents[0].parts[0].inlineData.data", "generationConfig.topP", "generationConfig.topK",
        "generationConfig.maxOutputTokens", "generationConfig.candidateCount", "generationConfig.temperature",
    }
    assert sent is None


def test_a_mismatched_body_model_is_reported_with_the_schema_violations(relayed, google_error):
    response, sent = relayed("generateContent", generate(model="models/gemini-2.5-pro", generationConfig={"topK": 0}))

    assert field_violations(response, google_error).keys() == {"model", "generationConfig.topK"}
    assert sent is None


def test_stream_validation_errors_keep_the_stream_shape(relayed, google_error):
    response, sent = relayed("streamGenerateContent", {"contents": []})
    assert field_violations(response, google_error, wrapped=True).keys() == {"contents"}
    assert response.content_type == "application/json; charset=UTF-8"

    response, sent = relayed("streamGenerateContent", {"contents": []}, query="?alt=sse")
    assert field_violations(response, google_error).keys() == {"contents"}
    assert response.content_type.startswith("text/event-stream")
    assert sent is None


# -- countTokens, embedContent, batchEmbedContents ---------------------------------------------------

OTHER_VIOLATIONS = {
    "countTokens with neither form": ("countTokens", MODEL, {"model": f"models/{MODEL}"}, {"contents"}),
    "countTokens with a bad role": ("countTokens", MODEL, {"contents": contents(TEXT_PART, role="bot")}, {"contents[0].role"}),
    "legacy countTokens without contents": (
        "countTokens", MODEL, {"generateContentRequest": {"model": f"models/{MODEL}"}}, {"generateContentRequest.contents"}),
    "legacy countTokens, bad temperature": (
        "countTokens", MODEL,
        {"generateContentRequest": {"model": f"models/{MODEL}", "contents": contents(TEXT_PART),
                                    "generationConfig": {"temperature": 5}}},
        {"generateContentRequest.generationConfig.temperature"}),
    "legacy countTokens, snake_case, bad part": (
        "countTokens", MODEL, {"generate_content_request": {"contents": contents({})}},
        {"generateContentRequest.contents[0].parts[0]"}),
    "legacy countTokens, other model": (
        "countTokens", MODEL, {"generateContentRequest": {"model": "models/gemini-2.5-pro", "contents": contents(TEXT_PART)}},
        {"generateContentRequest.model"}),
    "embedContent without content": ("embedContent", EMBED_MODEL, {"taskType": "RETRIEVAL_QUERY"}, {"content"}),
    "embedContent with an empty part": ("embedContent", EMBED_MODEL, {"content": {"parts": [{}]}}, {"content.parts[0]"}),
    "embedContent, other body model": (
        "embedContent", EMBED_MODEL, {"model": "models/text-embedding-004", "content": {"parts": [TEXT_PART]}}, {"model"}),
    "batch of 101": ("batchEmbedContents", EMBED_MODEL, {"requests": [embed_item()] * 101}, {"requests"}),
    "empty batch": ("batchEmbedContents", EMBED_MODEL, {"requests": []}, {"requests"}),
    "batch without requests": ("batchEmbedContents", EMBED_MODEL, {}, {"requests"}),
    "batch item without model": (
        "batchEmbedContents", EMBED_MODEL, {"requests": [embed_item(), {"content": {"parts": [TEXT_PART]}}]},
        {"requests[1].model"}),
    "batch item without content": (
        "batchEmbedContents", EMBED_MODEL, {"requests": [{"model": f"models/{EMBED_MODEL}"}]}, {"requests[0].content"}),
    "batch items naming other models": (
        "batchEmbedContents", EMBED_MODEL,
        {"requests": [embed_item("models/text-embedding-004"), embed_item(), embed_item("gemini-embedding-002")]},
        {"requests[0].model", "requests[2].model"}),
}


@pytest.mark.parametrize("case", list(OTHER_VIOLATIONS))
def test_other_method_violations_are_400s_naming_the_fields(relayed, google_error, case):
    method, model, body, fields = OTHER_VIOLATIONS[case]
    response, sent = relayed(method, body, model=model)

    assert field_violations(response, google_error).keys() == fields
    assert sent is None


def test_cached_content_create_needs_a_model(client, mock_upstream, google_error):
    response = client.post("/v1beta/cachedContents", json={"contents": contents(TEXT_PART), "ttl": "60s"}, headers=AUTH)

    assert field_violations(response, google_error).keys() == {"model"}
    assert len(mock_upstream.calls) == 0


# -- what is accepted, and forwarded untouched ------------------------------------------------------

ACCEPTED_GENERATE = {
    "boundaries low": generate(generationConfig={"temperature": 0, "topP": 0, "topK": 1, "maxOutputTokens": 1,
                                                 "candidateCount": 1}),
    "boundaries high": generate(generationConfig={"temperature": 2, "topP": 1, "topK": 1000, "maxOutputTokens": 65536}),
    "thinking budget alone": generate(generationConfig={"thinkingConfig": {"thinkingBudget": 0, "includeThoughts": False}}),
    "dynamic thinking budget": generate(generationConfig={"thinkingConfig": {"thinkingBudget": -1}}),
    "thinking level alone": generate(generationConfig={"thinkingConfig": {"thinkingLevel": "low", "includeThoughts": True}}),
    "body model with prefix": generate(model=f"models/{MODEL}"),
    "inline data, standard base64": {"contents": contents(TEXT_PART, {"inlineData": {"mimeType": "image/png", "data": PNG_BASE64}})},
    "inline data, url-safe base64 without padding": {
        "contents": contents({"inlineData": {"mimeType": "application/octet-stream", "data": "-_-_AA"}})},
    "every part kind": {"contents": [
        {"role": "user", "parts": [{"text": "t"}, {"fileData": {"fileUri": "https://example.com/a.pdf", "mimeType": "application/pdf"}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"},
                                    {"executableCode": {"language": "PYTHON", "code": "1"}},
                                    {"codeExecutionResult": {"outcome": "OUTCOME_OK"}},
                                    {"text": "", "thought": True}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"ok": True}}}]},
    ]},
    "no role": {"contents": [{"parts": [TEXT_PART]}]},
    "system instruction and tools": generate(systemInstruction={"parts": [{"text": "be brief"}]},
                                             tools=[{"googleSearch": {}}], toolConfig={"functionCallingConfig": {"mode": "AUTO"}},
                                             safetySettings=[{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}]),
}
SNAKE_CASE_BODY = (
    b'{"contents": [{"role": "user", "parts": [{"text": "Describe"}, {"inline_data": {"mime_type": "image/png", "data": "'
    + PNG_BASE64.encode() + b'"}}, {"file_data": {"file_uri": "https://example.com/abc.mp4", "mime_type": "video/mp4"}}]},'
    b' {"role": "model", "parts": [{"function_call": {"name": "f", "args": {"a": 1}}, "thought_signature": "c2ln"}]},'
    b' {"role": "user", "parts": [{"function_response": {"name": "f", "response": {}}}]}],'
    b' "system_instruction": {"parts": [{"text": "Be brief."}]},'
    b' "tool_config": {"function_calling_config": {"mode": "ANY"}},'
    b' "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],'
    b' "generation_config": {"temperature": 0.5, "top_p": 0.9, "top_k": 40, "max_output_tokens": 64, "candidate_count": 1,'
    b' "stop_sequences": ["END"], "response_mime_type": "application/json", "response_schema": {"type": "OBJECT"},'
    b' "thinking_config": {"include_thoughts": true, "thinking_budget": 128}},'
    b' "cached_content_unknown_field": 1}'
)


@pytest.mark.parametrize("case", list(ACCEPTED_GENERATE))
def test_valid_bodies_are_accepted(relayed, case):
    response, sent = relayed("generateContent", ACCEPTED_GENERATE[case])

    assert response.status_code == 200, response.data
    assert sent is not None


def test_valid_bodies_without_a_model_arrive_byte_for_byte(relayed):
    body = json.dumps(ACCEPTED_GENERATE["every part kind"], indent=3).encode()
    response, sent = relayed("generateContent", body)
    assert response.status_code == 200
    assert sent == body


def test_snake_case_spellings_are_accepted_and_forwarded_as_sent(relayed):
    response, sent = relayed("generateContent", SNAKE_CASE_BODY)

    assert response.status_code == 200, response.data
    assert sent == SNAKE_CASE_BODY


@pytest.mark.parametrize("method, model, body", [
    ("countTokens", MODEL, {"contents": contents(TEXT_PART)}),
    ("countTokens", MODEL, {"generateContentRequest": {"model": f"models/{MODEL}", "contents": contents(TEXT_PART)}}),
    ("countTokens", MODEL, {"generate_content_request": {"model": MODEL, "contents": contents(TEXT_PART)}}),
    ("embedContent", EMBED_MODEL, {"content": {"parts": [TEXT_PART]}, "task_type": 2, "output_dimensionality": 8}),
    ("batchEmbedContents", EMBED_MODEL, {"requests": [embed_item(text=str(index)) for index in range(100)]}),
    ("batchEmbedContents", EMBED_MODEL, {"requests": [embed_item(EMBED_MODEL)]}),
], ids=["countTokens-contents", "countTokens-legacy", "countTokens-legacy-snake", "embedContent-snake", "batch-of-100",
        "batch-model-without-prefix"])
def test_other_valid_bodies_are_forwarded_byte_for_byte(relayed, method, model, body):
    raw = json.dumps(body).encode()
    response, sent = relayed(method, raw, model=model)

    assert response.status_code == 200, response.data
    assert sent == raw


# -- bytes that are not a JSON object, and content types --------------------------------------------


@pytest.mark.parametrize("raw", [
    b'{"contents": [', b"", b"{'contents': []}", b'{"contents": [}]}', b"\xff\xfe{}", b'{"a": 1} trailing', b"nul\x00l",
], ids=["truncated", "empty", "single-quotes", "mismatched", "not-utf8", "trailing-garbage", "nul"])
def test_malformed_json_is_a_400(relayed, google_error, raw):
    response, sent = relayed("generateContent", raw)

    google_error(response, 400, "INVALID_ARGUMENT")
    assert sent is None


@pytest.mark.parametrize("raw", [b"[]", b'"contents"', b"null", b"42", b'[{"contents": []}]'])
def test_json_that_is_not_an_object_is_a_400(relayed, google_error, raw):
    response, sent = relayed("generateContent", raw)

    google_error(response, 400, "INVALID_ARGUMENT")
    assert sent is None


def test_malformed_json_on_a_cached_content_patch_is_a_400(module_app_factory, mock_upstream, google_error):
    client = module_app_factory({}).test_client()
    response = client.patch("/v1beta/cachedContents/abc", data=b'{"ttl": ', content_type="application/json",
                            headers={"x-goog-api-key": "AIzaCallersOwnKey-fedcba9876543210"})
    google_error(response, 400, "INVALID_ARGUMENT")
    assert len(mock_upstream.calls) == 0


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "application/xml",
    "text/json-ish",
])
def test_a_wrong_content_type_is_a_400(relayed, google_error, content_type):
    response, sent = relayed("generateContent", generate(), content_type=content_type)

    google_error(response, 400, "INVALID_ARGUMENT")
    assert sent is None


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_json_content_types_are_accepted(relayed, content_type):
    response, sent = relayed("generateContent", generate(), content_type=content_type)
    assert response.status_code == 200, response.data
    assert sent == json.dumps(generate()).encode()


# -- contents and configs already validated are remembered, never trusted blindly --------------------

def test_a_new_bad_turn_is_reported_after_turns_that_were_validated_before(relayed, google_error, mock_upstream):
    history = [{"role": "user" if index % 2 == 0 else "model", "parts": [{"text": f"turn {index}"}]} for index in range(6)]
    response, sent = relayed("generateContent", {"contents": history})
    assert response.status_code == 200 and sent is not None
    mock_upstream.calls.reset()

    bad_turn = {"role": "system", "parts": [{"inlineData": {"mimeType": "image/png", "data": "data:image/png;base64,AA"}}]}
    response, sent = relayed("generateContent", {"contents": [*history, bad_turn]})
    assert sent is None
    assert set(field_violations(response, google_error)) == {"contents[6].role", "contents[6].parts[0].inlineData.data"}


def test_the_same_content_is_judged_the_same_whether_remembered_or_not():
    from relay.schemas import ValidationMemory, validate_body
    from relay.errors import InvalidArgument

    memory = ValidationMemory()
    valid = {"contents": [{"role": "user", "parts": [{"text": "same"}]}]}
    validate_body("generateContent", valid, memory=memory)
    validate_body("generateContent", valid, memory=memory)  # now from memory
    with pytest.raises(InvalidArgument):
        validate_body("generateContent", {"contents": [{"role": "user", "parts": [{"text": "same", "thought": "x"}]}]},
                      memory=memory)


def test_remembered_contents_are_bounded():
    from relay.schemas import ValidationMemory, validate_body

    memory = ValidationMemory(max_entries=3)
    for index in range(10):
        validate_body("generateContent", {"contents": [{"role": "user", "parts": [{"text": f"distinct {index}"}]}],
                                          "generationConfig": {"temperature": index / 10}}, memory=memory)
        assert len(memory) <= 3


def test_a_remembered_generation_config_does_not_vouch_for_a_different_one():
    from relay.errors import InvalidArgument
    from relay.schemas import ValidationMemory, validate_body

    memory = ValidationMemory()
    good = {"temperature": 0.5, "thinkingConfig": {"thinkingBudget": 128}}
    for _ in range(2):  # the second time from memory
        validate_body("generateContent", {"contents": [{"role": "user", "parts": [{"text": "a"}]}],
                                          "generationConfig": good, "systemInstruction": {"parts": [{"text": "b"}]}},
                      memory=memory)
    with pytest.raises(InvalidArgument) as raised:
        validate_body("generateContent", {"contents": [{"role": "user", "parts": [{"text": "a"}]}],
                                          "generationConfig": {**good, "temperature": 5},
                                          "systemInstruction": {"parts": [{"text": "b", "thought": "x"}]}}, memory=memory)
    fields = {violation["field"] for violation in raised.value.to_dict()["error"]["details"][0]["fieldViolations"]}
    assert fields == {"generationConfig.temperature", "systemInstruction.parts[0].thought"}


def test_an_object_valid_in_one_place_is_still_checked_in_another():
    """Memory is per schema: a dict that passed as a generationConfig is not thereby a valid Content."""
    from relay.errors import InvalidArgument
    from relay.schemas import ValidationMemory, validate_body

    memory = ValidationMemory()
    shared = {"role": "system"}  # fine as a generationConfig (unknown field kept), not as a Content
    validate_body("generateContent", {"contents": [{"role": "user", "parts": [{"text": "a"}]}], "generationConfig": shared},
                  memory=memory)
    with pytest.raises(InvalidArgument):
        validate_body("generateContent", {"contents": [{"role": "user", "parts": [{"text": "a"}]}], "systemInstruction": shared},
                      memory=memory)


def test_a_large_part_is_checked_every_time_instead_of_remembered():
    """Hashing a 20 MB inlineData would cost more than validating it: large objects are not remembered."""
    from relay.errors import InvalidArgument
    from relay.schemas import ValidationMemory, validate_body

    memory = ValidationMemory()
    image = {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "QUJD" * 100_000}}]}
    validate_body("generateContent", {"contents": [image]}, memory=memory)
    validate_body("generateContent", {"contents": [image]}, memory=memory)
    assert len(memory) == 0
    broken = {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "QUJD" * 100_000 + "!"}}]}
    with pytest.raises(InvalidArgument):
        validate_body("generateContent", {"contents": [broken]}, memory=memory)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("AZaz09+/_-=!. \n\u00e9\u20ac")), max_size=24))
def test_the_fast_base64_check_agrees_with_the_pattern(value):
    from relay.schemas import gemini

    assert gemini._is_base64(value) == (gemini._BASE64.fullmatch(value) is not None)
