"""This module provides tests of the unary response translation against recorded Gemini answers."""

import re

import pytest

from relay.openai import responses
from relay.openai.responses import FINISH_REASONS, finish_reason, to_chat_completion, usage
from tests.openai import recordings

FIXED_ID = "call_" + "0" * 24


@pytest.fixture
def fixed_ids(monkeypatch):
    monkeypatch.setattr(responses, "new_id", lambda prefix="call_": prefix + "0" * 24)


def completion_of(answer, model="gpt-4o"):
    return to_chat_completion(answer, model, created=1_700_000_000)


def test_a_gemini_3_function_call_with_its_thought_signature(fixed_ids):
    answer = recordings.response("function_calling/vercel-ai__google-tool-call-gemini3.json")
    signature = answer["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    completion, signatures = completion_of(answer)
    assert completion == {
        "id": "chatcmpl-JniLacKqGqH0xs0P0O776As", "object": "chat.completion", "created": 1_700_000_000,
        "model": "gpt-4o",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": None, "refusal": None, "tool_calls": [{
                "id": FIXED_ID, "type": "function",
                "function": {"name": "weather", "arguments": '{"location":"San Francisco"}'},
                "extra_content": {"google": {"thought_signature": signature}},
            }]},
            "logprobs": None,
            "finish_reason": "tool_calls",  # Gemini said STOP
        }],
        "usage": {"prompt_tokens": 29, "completion_tokens": 15 + 1801, "total_tokens": 1845,
                  "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 1801}},
    }
    assert signatures == [(FIXED_ID, signature)]


def test_generated_tool_call_ids_are_short_random_and_never_the_signature():
    answer = recordings.response("function_calling/vercel-ai__google-tool-call-gemini3.json")
    first, second = (completion_of(answer)[0]["choices"][0]["message"]["tool_calls"][0]["id"] for _ in range(2))
    assert re.fullmatch(r"call_[0-9a-f]{24}", first) and first != second


def test_geminis_own_call_id_is_kept_and_an_overlong_one_replaced(fixed_ids):
    answer = recordings.events("function_calling/llm-gemini__test_stream_events_tool_calls.json")[0]
    assert completion_of(answer)[0]["choices"][0]["message"]["tool_calls"][0]["id"] == "c9bjmkfz"
    answer["candidates"][0]["content"]["parts"][0]["functionCall"]["id"] = "x" * 41
    assert completion_of(answer)[0]["choices"][0]["message"]["tool_calls"][0]["id"] == FIXED_ID


def test_thoughts_become_reasoning_content_and_the_answers_signature_is_kept():
    answer = recordings.response("thinking/pydantic-ai__test_google_model_thinking_part.json")
    thought, text = answer["candidates"][0]["content"]["parts"]
    completion, signatures = completion_of(answer)
    assert completion["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": text["text"], "refusal": None,
                    "reasoning_content": thought["text"],
                    "extra_content": {"google": {"thought_signature": text["thoughtSignature"]}}},
        "logprobs": None, "finish_reason": "stop",
    }
    assert completion["usage"]["completion_tokens"] == 736 + 1001
    assert signatures == []  # only tool calls need remembering: their messages are rebuilt by clients


def test_thoughts_only_cut_by_max_tokens():
    name = "thinking/js-genai__Client_Tests_test_thinking_generate_content_should_return_thought_field.http.json"
    answer = recordings.response(name)
    choice = completion_of(answer)[0]["choices"][0]
    assert choice["message"]["content"] is None
    assert choice["message"]["reasoning_content"] == answer["candidates"][0]["content"]["parts"][0]["text"]
    assert choice["finish_reason"] == "length"


def test_cached_tokens_are_reported_inside_the_prompt():
    answer = recordings.response("cached_contents/pydantic-ai__test_google_model_cached_content.json", 1)
    completion, _ = completion_of(answer)
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "Paris.", "refusal": None}
    assert completion["usage"] == {
        "prompt_tokens": 3520, "completion_tokens": 2 + 42, "total_tokens": 3564,
        "prompt_tokens_details": {"cached_tokens": 3512}, "completion_tokens_details": {"reasoning_tokens": 42},
    }


def test_images_become_message_images():
    answer = recordings.response("image_output/pydantic-ai__test_google_image_and_text_output.json")
    text, image = answer["candidates"][0]["content"]["parts"]
    message = completion_of(answer)[0]["choices"][0]["message"]
    assert message["content"] == text["text"]
    assert message["images"] == [{"type": "image_url", "image_url": {
        "url": f"data:image/png;base64,{image['inlineData']['data']}"}}]


def test_a_safety_stop_is_a_content_filter():
    answer = recordings.response("prompt_blocked/pydantic-ai__test_google_model_safety_settings.json")
    assert completion_of(answer)[0]["choices"] == [{
        "index": 0, "message": {"role": "assistant", "content": None, "refusal": None}, "logprobs": None,
        "finish_reason": "content_filter",
    }]


def test_a_blocked_prompt_is_a_refusal_with_content_filter():
    answer = recordings.response("prompt_blocked/vercel-ai__issue-19758-prompt-block.json")
    completion, _ = completion_of(answer)
    assert completion["choices"] == [{
        "index": 0,
        "message": {"role": "assistant", "content": None, "refusal": "Gemini blocked the prompt (PROHIBITED_CONTENT)."},
        "logprobs": None, "finish_reason": "content_filter",
    }]
    assert completion["usage"]["prompt_tokens"] == 9


def test_max_tokens_is_length_and_the_model_is_the_one_asked_for():
    answer = recordings.response("generate_text/pydantic-ai__test_google_model_max_tokens.json")
    completion, _ = completion_of(answer, model="my-alias")
    assert completion["model"] == "my-alias"
    assert completion["choices"][0]["finish_reason"] == "length"
    assert completion["choices"][0]["message"]["content"] == "The capital of France is"


def test_one_choice_per_candidate_with_logprobs():
    # Synthetic (no recording holds logprobs): field names from google-genai's LogprobsResult.
    answer = {"responseId": "r1", "candidates": [
        {"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [{"text": "Hi"}]},
         "logprobsResult": {"chosenCandidates": [{"token": "Hi", "tokenId": 5, "logProbability": -0.25}],
                            "topCandidates": [{"candidates": [{"token": "Hi", "logProbability": -0.25},
                                                              {"token": "Hé", "logProbability": -2.5}]}]}},
        {"index": 1, "finishReason": "MAX_TOKENS", "content": {"role": "model", "parts": [{"text": "Hello"}]}},
    ]}
    choices = completion_of(answer)[0]["choices"]
    assert [choice["message"]["content"] for choice in choices] == ["Hi", "Hello"]
    assert [choice["finish_reason"] for choice in choices] == ["stop", "length"]
    assert choices[0]["logprobs"] == {"content": [{
        "token": "Hi", "logprob": -0.25, "bytes": [72, 105],
        "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                         {"token": "Hé", "logprob": -2.5, "bytes": [72, 195, 169]}],
    }], "refusal": None}
    assert choices[1]["logprobs"] is None


def test_an_answer_without_a_response_id_gets_one(fixed_ids):
    assert completion_of({"candidates": []})[0]["id"] == "chatcmpl-" + "0" * 24


@pytest.mark.parametrize("gemini, has_calls, openai", [
    ("STOP", False, "stop"), ("STOP", True, "tool_calls"), (None, True, "tool_calls"),
    ("MAX_TOKENS", False, "length"), ("MAX_TOKENS", True, "length"), ("SAFETY", False, "content_filter"),
    ("RECITATION", False, "content_filter"), ("BLOCKLIST", False, "content_filter"),
    ("PROHIBITED_CONTENT", True, "content_filter"), ("SPII", False, "content_filter"),
    ("MALFORMED_FUNCTION_CALL", False, "stop"), ("SOMETHING_NEW", False, "stop"),
])
def test_finish_reasons(gemini, has_calls, openai):
    assert finish_reason(gemini, has_calls) == openai
    assert set(FINISH_REASONS.values()) == {"stop", "length", "content_filter"}


def test_usage_without_metadata_and_with_tool_use_tokens():
    assert usage(None)["total_tokens"] == 0
    live = recordings.events("stream_sse/vercel-ai__google-usage-raw-live.chunks.txt")[0]["usageMetadata"]
    assert usage(live) == {
        "prompt_tokens": 12, "completion_tokens": 71 + 89, "total_tokens": 237,
        "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 89},
    }
