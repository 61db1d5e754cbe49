"""End-to-end tests of the OpenAI door: the real ``openai`` SDK against real gunicorn (gevent worker) and the fake
upstream replaying recorded Gemini answers.  Every test asserts on what reached the upstream (path, query, key,
Gemini body) as well as on what the SDK returned or raised; google-genai shares the same running relay."""
from __future__ import annotations

import json
import time

import openai
import pydantic
import pytest

from .harness import FIXTURES, body_bytes, usage_rows, wait_until

pytestmark = pytest.mark.timeout(90)

UPSTREAM_KEY = "up-key-openai-e2e-7Qm2"
CLIENT_KEY = "client-key-openai-e2e-Zx91"
OTHER_CLIENT_KEY = "client-key-openai-e2e-Zx92"
MODEL = "gemini-2.5-flash"
GEMINI3 = "gemini-3-pro-preview"
UNARY_FIXTURE = "generate_text/js-genai__Chats_Tests_sendMessage_Google_AI_with_text.http.json"
SSE_FIXTURE = "stream_sse/js-genai__Chats_Tests_sendMessage_Google_AI_with_text_stream.http.0.sse.txt"
TOOL_FIXTURE = "function_calling/vercel-ai__google-tool-call-gemini3.json"
TOOL_STREAM_FIXTURE = "function_calling/llm-gemini__test_tools_with_gemini_3_thought_signatures.0.jsonarray.txt"
IMAGE_FIXTURE = "image_output/pydantic-ai__test_google_image_and_text_output.json"
EMBED_FIXTURE = "embeddings/llm-gemini__test_embedding_gemini-embedding-001.json"
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}


def recorded(reference):
    return json.loads(json.loads((FIXTURES / reference).read_text())["interactions"][0]["response"]["body_raw"])


def sse_texts(reference):
    texts = []
    for block in (FIXTURES / reference).read_bytes().split(b"\r\n\r\n")[:-1]:
        event = json.loads(block[len(b"data: "):])
        texts.append("".join(part.get("text", "") for part in event["candidates"][0]["content"]["parts"]))
    return texts


TOOL_ANSWER = json.loads((FIXTURES / TOOL_FIXTURE).read_text())
SIGNATURE = TOOL_ANSWER["candidates"][0]["content"]["parts"][0]["thoughtSignature"]


@pytest.fixture(scope="module")
def relay(module_relay_factory):
    return module_relay_factory(env={"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY,
                                     "RELAY_API_KEYS": f"{CLIENT_KEY},{OTHER_CLIENT_KEY}"})


def sdk(relay, key=CLIENT_KEY, base="/v1", retries=0):
    return openai.OpenAI(base_url=relay.url + base, api_key=key, max_retries=retries, timeout=30)


def upstream_body(entry):
    return json.loads(body_bytes(entry))


def only(fake):
    [entry] = fake.wait_for_requests(1)
    assert entry["key"] == UPSTREAM_KEY
    return entry


# --- chat --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("base", ["/v1", "/v1beta/openai"])
def test_unary_chat(relay, fake_upstream, base):
    completion = sdk(relay, base=base).chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why blue?"}])
    text = recorded(UNARY_FIXTURE)["candidates"][0]["content"]["parts"][0]["text"]
    assert completion.choices[0].message.content == text and completion.model == MODEL
    assert completion.usage.total_tokens == 429
    entry = only(fake_upstream)
    assert (entry["path"], entry["query"]) == (f"/v1beta/models/{MODEL}:generateContent", "")
    assert upstream_body(entry) == {"contents": [{"role": "user", "parts": [{"text": "Why blue?"}]}],
                                    "systemInstruction": {"parts": [{"text": "Be brief."}]}}
    rows = usage_rows(relay.env["RELAY_DB"], [completion._request_id])
    assert rows[completion._request_id]["door"] == "openai"


def test_streaming_with_include_usage(relay, fake_upstream):
    fake_upstream.script({"path_contains": "streamGenerateContent", "fixture": SSE_FIXTURE})
    chunks = list(sdk(relay).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Why blue?"}], stream=True,
        stream_options={"include_usage": True}))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == "".join(
        sse_texts(SSE_FIXTURE))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    entry = only(fake_upstream)
    assert (entry["path"], entry["query"]) == (f"/v1beta/models/{MODEL}:streamGenerateContent", "alt=sse")


def test_a_tool_call(relay, fake_upstream):
    fake_upstream.script({"path_contains": "generateContent", "fixture": TOOL_FIXTURE})
    message = sdk(relay).chat.completions.create(model=GEMINI3, messages=[{"role": "user", "content": "SF?"}],
                                                 tools=[WEATHER]).choices[0].message
    [call] = message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("weather", {"location": "San Francisco"})
    assert call.model_extra["extra_content"]["google"]["thought_signature"] == SIGNATURE
    declarations = upstream_body(only(fake_upstream))["tools"][0]["functionDeclarations"]
    assert declarations == [{"name": "weather", "parametersJsonSchema": WEATHER["function"]["parameters"]}]


def parallel_answer():
    answer = json.loads(json.dumps(TOOL_ANSWER))
    first = answer["candidates"][0]["content"]["parts"][0]
    second = {"functionCall": {"name": "weather", "args": {"location": "Tokyo"}}}
    answer["candidates"][0]["content"]["parts"] = [first, second]
    return answer


def test_two_parallel_tool_calls(relay, fake_upstream):
    fake_upstream.script({"path_contains": "generateContent", "body": parallel_answer()})
    message = sdk(relay).chat.completions.create(model=GEMINI3, messages=[{"role": "user", "content": "SF, Tokyo?"}],
                                                 tools=[WEATHER]).choices[0].message
    assert [json.loads(call.function.arguments)["location"] for call in message.tool_calls] == ["San Francisco", "Tokyo"]
    assert len({call.id for call in message.tool_calls}) == 2 and all(len(call.id) <= 40 for call in message.tool_calls)


def test_tool_calls_while_streaming(relay, fake_upstream):
    fake_upstream.script({"path_contains": "streamGenerateContent", "fixture": TOOL_STREAM_FIXTURE})
    client = sdk(relay)
    with client.chat.completions.stream(model="gemini-3-flash-preview", tools=[WEATHER],
                                        messages=[{"role": "user", "content": "5 x 3?"}]) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("multiply", {"y": 3, "x": 5})
    assert final.choices[0].finish_reason == "tool_calls"
    assert only(fake_upstream)["query"] == "alt=sse"


@pytest.mark.parametrize("keep_extra_content", [True, False], ids=["kept", "dropped"])
def test_a_multi_turn_tool_loop_on_gemini_3(relay, fake_upstream, keep_extra_content):
    fake_upstream.script({"path_contains": "generateContent", "fixture": TOOL_FIXTURE, "times": 1})
    client = sdk(relay)
    messages = [{"role": "user", "content": "Weather in SF?"}]
    message = client.chat.completions.create(model=GEMINI3, messages=messages, tools=[WEATHER]).choices[0].message
    assistant = message.model_dump(exclude_none=True)
    if not keep_extra_content:  # what most clients do when they rebuild the history
        assistant["tool_calls"] = [{key: call[key] for key in ("id", "type", "function")}
                                   for call in assistant["tool_calls"]]
    messages += [assistant, {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "Sunny, 21 C"}]
    answer = client.chat.completions.create(model=GEMINI3, messages=messages, tools=[WEATHER])
    assert answer.choices[0].message.content  # the fake answers 400 to a Gemini 3 turn without its signature
    second = fake_upstream.wait_for_requests(2)[1]
    model_turn = upstream_body(second)["contents"][1]
    assert model_turn["role"] == "model" and model_turn["parts"][0]["thoughtSignature"] == SIGNATURE
    function_response = upstream_body(second)["contents"][2]["parts"][0]["functionResponse"]
    assert function_response["name"] == "weather" and function_response["response"] == {"output": "Sunny, 21 C"}


class Weather(pydantic.BaseModel):
    city: str
    temperature_c: int


def test_parse_with_a_pydantic_model(relay, fake_upstream):
    answer = recorded(UNARY_FIXTURE)
    answer["candidates"][0]["content"]["parts"] = [{"text": '{"city": "Paris", "temperature_c": 21}'}]
    fake_upstream.script({"path_contains": "generateContent", "body": answer})
    completion = sdk(relay).chat.completions.parse(model=MODEL, response_format=Weather,
                                                   messages=[{"role": "user", "content": "Paris?"}])
    assert completion.choices[0].message.parsed == Weather(city="Paris", temperature_c=21)
    config = upstream_body(only(fake_upstream))["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"]["properties"]["city"] == {"title": "City", "type": "string"}


def test_an_image_in_and_an_image_out(relay, fake_upstream):
    fake_upstream.script({"path_contains": "generateContent", "fixture": IMAGE_FIXTURE})
    message = sdk(relay).chat.completions.create(model="gemini-2.5-flash-image", messages=[{"role": "user", "content": [
        {"type": "text", "text": "Redraw"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}],
    ).choices[0].message
    recorded_image = json.loads(body_bytes_of_fixture(IMAGE_FIXTURE))["candidates"][0]["content"]["parts"][1]["inlineData"]
    assert message.model_extra["images"][0]["image_url"]["url"] == f"data:image/png;base64,{recorded_image['data']}"
    parts = upstream_body(only(fake_upstream))["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}


def body_bytes_of_fixture(reference):
    from tests.fakeupstream import fixtures

    return fixtures.load(reference).body


@pytest.mark.parametrize("model, effort, thinking", [
    ("gemini-2.5-flash-thinking-8192", None, {"includeThoughts": True, "thinkingBudget": 8192}),
    ("gemini-2.5-flash", "high", {"thinkingBudget": 24576}),
    ("gemini-3-pro-preview", "medium", {"thinkingLevel": "HIGH"}),
    ("gemini-2.5-pro-nothinking", None, {"includeThoughts": False, "thinkingBudget": 128}),
])
def test_reasoning_effort_and_suffixes_reach_the_upstream(relay, fake_upstream, model, effort, thinking):
    extra = {"reasoning_effort": effort} if effort else {}
    sdk(relay).chat.completions.create(model=model, messages=[{"role": "user", "content": "Think."}], **extra)
    entry = only(fake_upstream)
    assert entry["path"] == f"/v1beta/models/{model.split('-thinking')[0].split('-nothinking')[0]}:generateContent"
    assert upstream_body(entry)["generationConfig"]["thinkingConfig"] == thinking


# --- embeddings and models -------------------------------------------------------------------------------

def test_embeddings_default_base64_and_float(relay, fake_upstream):
    values = recorded(EMBED_FIXTURE)["embeddings"][0]["values"]
    client = sdk(relay)
    default = client.embeddings.create(model="gemini-embedding-001", input="hello")
    assert default.data[0].embedding == pytest.approx(values, rel=1e-6)  # the SDK asked for base64 and decoded it
    assert json.loads(body_bytes(fake_upstream.requests()[0])) == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello"}]}}]}
    floats = client.embeddings.create(model="gemini-embedding-001", input=["a", "b"], encoding_format="float")
    assert [item.index for item in floats.data] == [0, 1] and floats.data[1].embedding == pytest.approx(values)


def test_250_embeddings_are_three_upstream_batches(relay, fake_upstream):
    answer = sdk(relay).embeddings.create(model="gemini-embedding-001", input=[f"text {n}" for n in range(250)])
    assert [item.index for item in answer.data] == list(range(250))
    entries = fake_upstream.wait_for_requests(3)
    assert [len(upstream_body(entry)["requests"]) for entry in entries] == [100, 100, 50]
    assert {entry["path"] for entry in entries} == {"/v1beta/models/gemini-embedding-001:batchEmbedContents"}


def test_models_list_and_retrieve_and_google_genai_on_the_same_relay(relay, fake_upstream, genai_client):
    client = sdk(relay)
    ids = [model.id for model in client.models.list()]
    assert MODEL in ids and f"{MODEL}-thinking" in ids
    assert client.models.retrieve(f"{MODEL}-thinking").id == f"{MODEL}-thinking"
    genai = genai_client(relay.url, CLIENT_KEY, "v1")
    names = [model.name for model in genai.models.list()]
    assert f"models/{MODEL}" in names
    assert genai.models.get(model=MODEL).name == f"models/{MODEL}"
    paths = [(entry["path"], entry["query"]) for entry in fake_upstream.requests()]
    assert paths[:2] == [("/v1beta/models", "pageSize=1000"), (f"/v1beta/models/{MODEL}", "")]
    assert paths[2][0] == "/v1/models" and paths[-1] == (f"/v1/models/{MODEL}", "")


# --- errors --------------------------------------------------------------------------------------------------

def test_the_sdk_raises_the_right_errors(relay, fake_upstream):
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(openai.AuthenticationError):
        sdk(relay, key="not-a-relay-key").chat.completions.create(**ask)
    with pytest.raises(openai.BadRequestError) as bad:
        sdk(relay).chat.completions.create(**ask, temperature=5)
    assert bad.value.param == "temperature"
    with pytest.raises(openai.NotFoundError) as missing:
        sdk(relay).chat.completions.create(**dict(ask, model="missing-model"))
    assert missing.value.code == "model_not_found"
    assert [entry["path"] for entry in fake_upstream.requests()] == ["/v1beta/models/missing-model:generateContent"]


def test_another_clients_cache_is_permission_denied(relay, fake_upstream, genai_client):
    owner = genai_client(relay.url, CLIENT_KEY, "v1beta")
    cache = owner.caches.create(model=MODEL, config={"ttl": "300s"})
    with pytest.raises(openai.PermissionDeniedError):
        sdk(relay, key=OTHER_CLIENT_KEY).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_body={"google": {"cached_content": cache.name}})
    sdk(relay).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"google": {"cached_content": cache.name}})
    assert upstream_body(fake_upstream.requests()[-1])["cachedContent"] == cache.name


def test_rate_limits_raise_and_retry_after_is_honoured(relay, fake_upstream):
    fake_upstream.script({"path_contains": "generateContent", "status": 429, "retry_delay": "1s", "times": 1})
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(openai.RateLimitError) as limited:
        sdk(relay).chat.completions.create(**ask)
    assert limited.value.response.headers["retry-after"] == "1" and limited.value.code == "rate_limit_exceeded"
    fake_upstream.script({"path_contains": "generateContent", "status": 429, "retry_delay": "1.5s", "times": 1})
    started = time.monotonic()
    assert sdk(relay, retries=3).chat.completions.create(**ask).choices[0].message.content
    assert time.monotonic() - started >= 1.4, "the SDK waited as Retry-After said"


def test_a_mid_stream_cut_raises_api_error(relay, fake_upstream):
    fake_upstream.script({"path_contains": "streamGenerateContent", "fixture": SSE_FIXTURE, "cut_after_events": 2})
    received = []
    with pytest.raises(openai.APIError) as cut:
        for chunk in sdk(relay).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                        stream=True):
            received.append(chunk)
    assert received and not isinstance(cut.value, openai.APIStatusError)


def test_a_client_hanging_up_closes_the_upstream_stream(relay, fake_upstream):
    fake_upstream.script({"path_contains": "streamGenerateContent", "stream_forever": True, "gap_ms": 100})
    stream = sdk(relay).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
    assert next(iter(stream)).choices[0].delta.role == "assistant"
    hung_up_at = time.time()
    stream.close()
    closed = wait_until(fake_upstream.closed, timeout=5)
    assert closed and closed[0]["closed_at"] - hung_up_at < 2.0
    lines = wait_until(lambda: [line for line in relay.access_log() if line.get("door") == "openai"
                                and line.get("aborted") == "client"], timeout=5)
    assert lines
