"""This module provides tests of the stream translation: recorded Gemini streams in, chat.completion.chunk bytes out."""

import re
import statistics
import time

import orjson
import pytest

from relay.openai.errors import OpenAIError, from_google_error
from relay.openai.stream import ChatStream
from tests.openai import recordings

CREATED = 1_700_000_000


def run(events, include_usage=False, model="gpt-4o"):
    """Every SSE frame the stream writes for ``events`` and its end, and the stream (for its signatures)."""
    stream = ChatStream(model, include_usage, created=CREATED)
    raw = b"".join(stream.translate(event) for event in events) + stream.finish()
    return frames(raw), stream


def frames(raw):
    assert raw.endswith(b"\n\n")
    parts = raw[:-2].split(b"\n\n")
    assert all(part.startswith(b"data: ") and b"\n" not in part for part in parts)
    return [part[len(b"data: "):] for part in parts]


def chunks(framed):
    assert framed[-1] == b"[DONE]"
    return [orjson.loads(frame) for frame in framed[:-1]]


def accumulate_delta(acc, delta):
    """openai-python's lib/streaming/_deltas.py rule, which its stream() helper applies to every delta:
    strings append (except index and type), dicts merge, lists of objects merge by their ``index``."""
    for key, value in delta.items():
        if acc.get(key) is None or key in ("index", "type"):
            acc[key] = value
        elif isinstance(value, str):
            acc[key] += value
        elif isinstance(value, dict):
            accumulate_delta(acc[key], value)
        elif isinstance(value, list):
            for entry in value:
                index = entry["index"]  # the SDK raises "Expected list delta entry to have an `index` key"
                if index < len(acc[key]):
                    accumulate_delta(acc[key][index], entry)
                else:
                    acc[key].insert(index, entry)
    return acc


def snapshot(parsed):
    """The message and finish reason a client assembles from the chunks (choice 0)."""
    message, finish = {}, None
    for chunk in parsed:
        for choice in chunk["choices"]:
            accumulate_delta(message, choice["delta"])
            finish = choice["finish_reason"] or finish
    return message, finish


def test_a_text_stream_byte_for_byte():
    events = recordings.events("thinking/vercel-ai__google-reasoning-gemini3.chunks.txt")
    framed, _ = run(events)
    head = b'{"id":"chatcmpl-M3iLaY-AI7zTxN8P3Piw4Qg","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o",'
    signature = events[2]["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    assert framed == [
        head + b'"choices":[{"index":0,"delta":{"role":"assistant","content":"There are **3** \\"r\\"s in strawberry.\\n\\n"},'
               b'"logprobs":null,"finish_reason":null}]}',
        head + b'"choices":[{"index":0,"delta":{"content":"St**r**awbe**rr**y"},"logprobs":null,"finish_reason":null}]}',
        head + b'"choices":[{"index":0,"delta":{"extra_content":{"google":{"thought_signature":"' + signature.encode()
             + b'"}}},"logprobs":null,"finish_reason":null}]}',
        head + b'"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}',
        b"[DONE]",
    ]


def test_thoughts_stream_as_reasoning_content_and_usage_comes_last():
    name = "thinking/pydantic-ai__test_google_model_thinking_part_iter.0.sse.txt"
    events = recordings.events(name)
    parsed = chunks(run(events, include_usage=True)[0])
    thoughts = "".join(part["text"] for event in events for part in event["candidates"][0]["content"]["parts"]
                       if part.get("thought"))
    answer = "".join(part["text"] for event in events for part in event["candidates"][0]["content"]["parts"]
                     if not part.get("thought"))
    message, finish = snapshot(parsed)
    assert (message["role"], message["reasoning_content"], message["content"], finish) == ("assistant", thoughts, answer, "stop")
    assert "role" in parsed[0]["choices"][0]["delta"] and all("role" not in c["choices"][0]["delta"] for c in parsed[1:-1])
    last = events[-1]["usageMetadata"]
    assert parsed[-1] == {
        "id": "chatcmpl-beHBaJfEMIi-qtsP3769-Q8", "object": "chat.completion.chunk", "created": CREATED,
        "model": "gpt-4o", "choices": [],
        "usage": {"prompt_tokens": 34, "completion_tokens": last["candidatesTokenCount"] + last["thoughtsTokenCount"],
                  "total_tokens": last["totalTokenCount"], "prompt_tokens_details": {"cached_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": last["thoughtsTokenCount"]}},
    }
    assert all(chunk["usage"] is None for chunk in parsed[:-1])


def test_a_streamed_call_is_one_whole_delta_and_its_signature_is_reported():
    events = recordings.events("function_calling/vercel-ai__google-tool-call-gemini3.chunks.txt")
    signature = events[0]["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    framed, stream = run(events)
    parsed = chunks(framed)
    call = parsed[0]["choices"][0]["delta"]["tool_calls"][0]
    assert re.fullmatch(r"call_[0-9a-f]{24}", call["id"])
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "tool_calls": [{
        "index": 0, "id": call["id"], "type": "function",
        "function": {"name": "weather", "arguments": '{"location":"San Francisco"}'},
        "extra_content": {"google": {"thought_signature": signature}},
    }]}
    assert [chunk["choices"][0]["finish_reason"] for chunk in parsed] == [None, "tool_calls"]
    assert stream.pop_signatures() == [(call["id"], signature)]
    assert stream.pop_signatures() == []


def test_geminis_call_id_is_kept():
    parsed = chunks(run(recordings.events("function_calling/llm-gemini__test_stream_events_tool_calls.json"))[0])
    assert parsed[0]["choices"][0]["delta"]["tool_calls"][0]["id"] == "c9bjmkfz"


def test_parallel_calls_in_separate_events_get_their_own_indexes():
    # Gemini sends each call whole, parallel calls in separate events (OPENAI.md §7.5); built from a recorded call.
    first = recordings.events("function_calling/vercel-ai__google-tool-call-gemini3.chunks.txt")[0]
    second = orjson.loads(orjson.dumps(first))
    second["candidates"][0]["content"]["parts"] = [{"functionCall": {"name": "weather", "args": {"location": "Paris"}}}]
    last = recordings.events("function_calling/vercel-ai__google-tool-call-gemini3.chunks.txt")[1]
    message, finish = snapshot(chunks(run([first, second, last])[0]))
    assert [(call["index"], call["function"]["arguments"]) for call in message["tool_calls"]] == [
        (0, '{"location":"San Francisco"}'), (1, '{"location":"Paris"}')]
    assert message["tool_calls"][0]["id"] != message["tool_calls"][1]["id"]
    assert all(len(call["id"]) <= 40 for call in message["tool_calls"])
    assert finish == "tool_calls"


def test_calls_sharing_an_event_are_numbered_in_order_and_later_ones_continue():
    first = recordings.events("function_calling/vercel-ai__google-tool-call-gemini3.chunks.txt")[0]
    parts = first["candidates"][0]["content"]["parts"]
    parts.append({"functionCall": {"name": "weather", "args": {"location": "Paris"}}})
    later = {"candidates": [{"index": 0, "content": {"role": "model", "parts": [
        {"functionCall": {"name": "weather", "args": {"location": "Rome"}}}]}}]}
    parsed = chunks(run([first, later])[0])
    assert [[call["index"] for call in chunk["choices"][0]["delta"]["tool_calls"]] for chunk in parsed[:2]] == [[0, 1], [2]]


def test_images_stream_as_numbered_delta_images():
    name = "image_output/js-genai__Client_Tests_generateContentStream_ML_Dev_should_stream_generate_content_with_image_output.http.0.sse.txt"
    events = recordings.events(name)
    image = events[3]["candidates"][0]["content"]["parts"][0]["inlineData"]
    message, finish = snapshot(chunks(run(events + [events[3]])[0]))
    url = f"data:image/png;base64,{image['data']}"
    assert message["images"] == [{"type": "image_url", "image_url": {"url": url}, "index": 0},
                                 {"type": "image_url", "image_url": {"url": url}, "index": 1}]
    assert message["content"].startswith("I will generate an image") and finish == "stop"


def test_an_answer_signature_in_an_empty_last_part_goes_out_once():
    events = recordings.events("thinking/vercel-ai__issue-18073-empty-text-thought-signature.chunks.txt")
    signature = events[1]["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    message, _ = snapshot(chunks(run([events[0], events[1], events[1]])[0]))
    assert message == {"role": "assistant", "content": "4", "extra_content": {"google": {"thought_signature": signature}}}


def test_a_blocked_prompt_streams_a_refusal():
    events = recordings.events("prompt_blocked/vercel-ai__issue-19758-prompt-block.chunks.txt")
    parsed = chunks(run(events, include_usage=True)[0])
    assert [chunk["choices"] for chunk in parsed] == [
        [{"index": 0, "delta": {"role": "assistant", "content": None, "refusal": "Gemini blocked the prompt (PROHIBITED_CONTENT)."},
          "logprobs": None, "finish_reason": None}],
        [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "content_filter"}],
        [],
    ]
    assert parsed[-1]["usage"]["prompt_tokens"] == 9


def test_an_in_band_gemini_error_becomes_an_openai_error_event():
    error = recordings.load("errors/vercel-ai__google-429-retry-info.json")
    events = recordings.events("stream_sse/vercel-ai__google-text.chunks.txt")
    framed, _ = run([events[0], error], include_usage=True)
    assert orjson.loads(framed[-2]) == {"error": {
        "message": "You exceeded your current quota, please check your plan.", "type": "requests", "param": None,
        "code": "rate_limit_exceeded"}}
    assert framed[-1] == b"[DONE]" and b"usage" not in framed[-2]


def test_an_error_the_pipeline_raises_mid_stream():
    stream = ChatStream("gpt-4o", created=CREATED)
    stream.translate(recordings.events("stream_sse/vercel-ai__google-text.chunks.txt")[0])
    failure = from_google_error({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})
    assert stream.error(failure) == b'data: {"error":{"message":"The model is overloaded.","type":"server_error","param":null,"code":null}}\n\n'
    assert stream.finish() == b"data: [DONE]\n\n"
    assert isinstance(failure, OpenAIError)


def test_an_empty_stream_still_answers():
    parsed = chunks(run([], include_usage=True)[0])
    assert [chunk["choices"] for chunk in parsed] == [
        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}],
        [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
        [],
    ]
    assert parsed[0]["id"].startswith("chatcmpl-") and parsed[-1]["usage"]["total_tokens"] == 0


def test_a_stream_cut_before_its_finish_reason_still_finishes():
    events = recordings.events("stream_sse/vercel-ai__google-text.chunks.txt")
    parsed = chunks(run(events[:1])[0])
    assert parsed[-1]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]


@pytest.mark.parametrize("name", [
    "stream_sse/pydantic-ai__test_google_model_stream.0.sse.txt",
    "stream_sse/vercel-ai__google-stream-gemini-3.7-flash-2026-09-14.chunks.txt",
    "stream_sse/js-genai__Chats_Tests_sendMessage_Google_AI_with_config_stream.http.0.sse.txt",
    "grounding/pydantic-ai__test_google_model_web_search_tool_stream.0.sse.txt",
    "code_execution/pydantic-ai__test_code_execution_stream.0.sse.txt",
])
def test_recorded_text_streams_reassemble_to_their_text(name):
    events = recordings.events(name)
    text = "".join(part.get("text", "") for event in events for candidate in event.get("candidates", ())
                   for part in (candidate.get("content") or {}).get("parts", ()) if not part.get("thought"))
    message, finish = snapshot(chunks(run(events)[0]))
    assert message.get("content", "") == text
    assert finish in ("stop", "length")


def test_translation_costs_well_under_a_third_of_a_millisecond_per_event():
    events = (recordings.events("thinking/pydantic-ai__test_google_model_thinking_part_iter.0.sse.txt")
              + recordings.events("function_calling/vercel-ai__google-tool-call-gemini3.chunks.txt"))
    per_event = []
    for _ in range(5):
        stream = ChatStream("gpt-4o", True)
        started = time.perf_counter()
        for _ in range(40):
            for event in events:
                stream.translate(event)
        per_event.append((time.perf_counter() - started) / (40 * len(events)))
    assert statistics.median(per_event) < 0.3e-3
