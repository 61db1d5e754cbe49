"""Property tests (hypothesis) of the schemas and the request path: no input makes relay answer 500.

Any JSON value, any nesting, any unicode, in the body, the model id, the query or the headers: relay
answers 2xx or a Google-shaped 4xx, and input it rejects never costs an upstream call.  The app runs in
this process; the upstream is the fake upstream's in-process twin (tests/fakeupstream/inprocess.py).
"""

import json
from urllib.parse import parse_qsl, quote

import orjson
import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.errors import RelayError
from relay.schemas import SCHEMAS, validate_body
from tests.support import UPSTREAM_URL
from tests.fakeupstream import inprocess

CLIENT_KEY = "client-key-fuzz-Zz99"
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

# The names relay's schemas and plugins look at, both spellings, so the fuzzer reaches their code paths.
FIELD_NAMES = (
    "contents", "parts", "role", "text", "inlineData", "inline_data", "mimeType", "mime_type", "data", "fileData",
    "file_data", "fileUri", "file_uri", "functionCall", "functionResponse", "executableCode", "codeExecutionResult",
    "thought", "thoughtSignature", "generationConfig", "generation_config", "thinkingConfig", "thinking_config",
    "thinkingBudget", "thinking_budget", "thinkingLevel", "thinking_level", "includeThoughts", "include_thoughts",
    "temperature", "topP", "topK", "maxOutputTokens", "candidateCount", "stopSequences", "responseModalities",
    "imageConfig", "systemInstruction", "system_instruction", "tools", "toolConfig", "safetySettings",
    "cachedContent", "cached_content", "model", "requests", "content", "taskType", "title", "outputDimensionality",
    "generateContentRequest", "generate_content_request", "ttl", "expireTime", "displayName",
)
METHODS = ("generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents")

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
           | st.sampled_from(["user", "model", "HIGH", "minimal", "models/gemini-2.5-flash", "cachedContents/abc",
                              "aGVsbG8=", "data:image/png;base64,xx", "image/png", "-1", "1e309"]))
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=40,
)
json_objects = st.dictionaries(keys, json_values, max_size=6)


def generate_like(draw_contents):
    """A GenerateContentRequest-shaped object with fuzzed leaves (valid more often than pure noise)."""
    part = st.fixed_dictionaries({}, optional={
        "text": st.text(max_size=20) | json_values, "inlineData": st.fixed_dictionaries(
            {}, optional={"mimeType": st.text(max_size=10), "data": st.text(max_size=12) | json_values}),
        "thought": json_values, "functionCall": json_values, "fileData": json_values})
    content = st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "model", "system", ""]) | json_values,
                                                  "parts": st.lists(part, max_size=3) | json_values})
    config = st.fixed_dictionaries({}, optional={
        "temperature": json_values, "topK": json_values, "maxOutputTokens": json_values,
        "thinkingConfig": st.fixed_dictionaries({}, optional={"thinkingBudget": json_values,
                                                              "thinkingLevel": json_values,
                                                              "includeThoughts": json_values}) | json_values})
    return st.fixed_dictionaries({"contents": st.lists(content, max_size=3) | draw_contents},
                                 optional={"generationConfig": config, "generation_config": config,
                                           "systemInstruction": content | json_values, "cachedContent": json_values,
                                           "model": json_values})


shaped_bodies = generate_like(json_values)


# -- the schemas, pure --------------------------------------------------------------------------------


@FUZZ
@given(method=st.sampled_from(sorted(SCHEMAS)), body=json_values)
def test_any_json_value_validates_or_is_a_400(method, body):
    try:
        validate_body(method, body)
    except RelayError as error:
        assert error.code == 400 and error.status == "INVALID_ARGUMENT"
        assert json.loads(error.to_json())["error"]["message"]


@FUZZ
@given(method=st.sampled_from(sorted(SCHEMAS)), body=shaped_bodies | json_objects)
def test_shaped_bodies_validate_or_name_their_bad_fields(method, body):
    try:
        validate_body(method, body)
    except RelayError as error:
        assert error.code == 400
        [detail] = error.details
        assert detail["fieldViolations"] and all(violation["field"] for violation in detail["fieldViolations"])


def test_deep_nesting_is_a_400_not_a_crash():
    for depth in (100, 600, 5000):
        nested = "[" * depth + "]" * depth
        body = f'{{"contents": [{{"parts": [{{"text": "x", "functionCall": {{"args": {nested}}}}}]}}]}}'
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            continue  # the request path answers 400 for this (tested below)
        validate_body("generateContent", parsed)


# -- the request path, in-process ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def relay_app(module_app_factory):
    return module_app_factory({"RELAY_UPSTREAM_KEYS": "up-fuzz", "RELAY_API_KEYS": CLIENT_KEY, "RELAY_MAX_BODY_MB": "1"})


@pytest.fixture
def upstream():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield inprocess.install(mock, UPSTREAM_URL)


def assert_google_shaped(response):
    assert response.status_code < 500, (response.status_code, response.data[:500])
    if response.status_code >= 400:
        body = json.loads(response.data)
        if isinstance(body, list):
            [body] = body
        assert list(body) == ["error"] and list(body["error"])[:3] == ["code", "message", "status"], response.data[:300]
        assert body["error"]["code"] == response.status_code


def post(app, path, data, headers=None):
    with app.test_client().post(path, data=data, headers={"x-goog-api-key": CLIENT_KEY,
                                                           "Content-Type": "application/json", **(headers or {})}) as response:
        response.get_data()
        return response


@FUZZ
@given(method=st.sampled_from(METHODS), body=json_values | shaped_bodies, sse=st.booleans())
def test_any_json_body_is_2xx_or_a_google_4xx(relay_app, upstream, method, body, sse):
    upstream.requests.clear()
    query = "?alt=sse" if sse else ""
    response = post(relay_app, f"/v1beta/models/gemini-2.5-flash:{method}{query}", orjson.dumps(body))
    assert_google_shaped(response)
    if response.status_code >= 400:
        assert upstream.requests == [], "a body relay rejected reached the upstream"


@FUZZ
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_are_2xx_or_a_google_4xx(relay_app, upstream, raw):
    upstream.requests.clear()
    response = post(relay_app, "/v1beta/models/gemini-2.5-flash:generateContent", raw)
    assert_google_shaped(response)
    if response.status_code >= 400:
        assert upstream.requests == []


@FUZZ
@given(model=st.text(min_size=1, max_size=60) | st.from_regex(r"gemini-[0-9.]+-(flash|pro)(-thinking(-[0-9]{1,25}|-[a-z]{1,8})?|-nothinking)?", fullmatch=True),
       method=st.sampled_from(METHODS + ("nope", "")), version=st.sampled_from(["v1beta", "v1", "v1alpha", "v2", ""]))
def test_any_model_id_is_2xx_or_a_google_4xx(relay_app, upstream, model, method, version):
    upstream.requests.clear()
    path = f"/{version}/models/{quote(model, safe='')}:{method}"
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    if method == "batchEmbedContents":
        body = {"requests": [{"model": f"models/{model}", "content": {"parts": [{"text": "hi"}]}}]}
    response = post(relay_app, path, orjson.dumps(body))
    assert_google_shaped(response)
    for entry in upstream.requests:
        assert entry["path"].startswith(f"/{version}/models/") and ".." not in entry["path"]
        assert entry["path"].count("/") == 3


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=60)


@FUZZ
@given(query=st.lists(st.tuples(st.text(max_size=10), st.text(max_size=20)), max_size=4),
       headers=st.dictionaries(st.sampled_from(["x-goog-api-key", "Authorization", "X-Goog-Api-Client", "User-Agent",
                                                "X-Goog-User-Project", "Accept", "Content-Type", "X-Server-Timeout"]),
                               header_text, max_size=4))
def test_any_query_and_headers_are_2xx_or_a_google_4xx(relay_app, upstream, query, headers):
    upstream.requests.clear()
    query_string = "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in query)
    headers = {"x-goog-api-key": CLIENT_KEY, "Content-Type": "application/json", **headers}
    with relay_app.test_client().post(f"/v1beta/models/gemini-2.5-flash:streamGenerateContent?{query_string}",
                                      data=b'{"contents": [{"parts": [{"text": "hi"}]}]}', headers=headers) as response:
        response.get_data()
    assert_google_shaped(response)
    for entry in upstream.requests:
        assert "key" not in [name for name, _value in parse_qsl(entry["query"], keep_blank_values=True)]
        assert [value for name, value in entry["headers"] if name.lower() == "x-goog-api-key"] == ["up-fuzz"]


@pytest.mark.parametrize("depth", [1000, 5000])
def test_deeply_nested_body_on_the_request_path(relay_app, upstream, depth):
    body = b'{"contents": [{"parts": [{"text": "x", "functionCall": ' + b"[" * depth + b"]" * depth + b"}]}]}"
    response = post(relay_app, "/v1beta/models/gemini-2.5-flash:generateContent", body)
    assert_google_shaped(response)


@pytest.mark.parametrize("value", ["\xa0abc", "\x85abc", " abc"])
def test_forwarded_header_with_leading_unicode_space_is_not_a_500(relay_app, upstream, value):
    response = post(relay_app, "/v1beta/models/gemini-2.5-flash:generateContent",
                    b'{"contents": [{"parts": [{"text": "hi"}]}]}', headers={"User-Agent": value})
    assert_google_shaped(response)
