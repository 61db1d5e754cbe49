"""Tests for relay.live.protocol: the setup message, close codes and reasons, and session usage."""

import json

import pytest

from relay.errors import PermissionDenied, ResourceExhausted, Unauthenticated, Unavailable, bad_request
from relay.live.protocol import (
    LiveRefusal, UsageTotals, close_reason, judge_close, parse_close, parse_setup, refusal_for, requested_model,
    resumes, sendable, status_for_close, usage_in,
)


def test_the_first_message_must_be_a_setup_in_either_spelling():
    assert parse_setup('{"setup": {"model": "models/m"}}') == {"model": "models/m"}
    assert parse_setup(b'{"setup": {"model": "m", "generation_config": {}}}')["generation_config"] == {}
    for message in ("hello", b"\xff", "[]", '{"clientContent": {}}', '{"setup": 1}',
                    '{"setup": {}, "clientContent": {}}'):
        with pytest.raises(LiveRefusal) as refused:
            parse_setup(message)
        assert (refused.value.code, refused.value.status) == (1007, 400)


def test_the_model_is_checked_and_its_prefix_dropped():
    assert requested_model({"model": "models/gemini-live-2.5-flash-preview"}) == "gemini-live-2.5-flash-preview"
    assert requested_model({"model": "gemini-2.5-flash-thinking"}) == "gemini-2.5-flash-thinking"
    for setup in ({}, {"model": ""}, {"model": 7}, {"model": "models/../files"}, {"model": "a/b"}):
        with pytest.raises(LiveRefusal):
            requested_model(setup)


def test_resumption_needs_a_handle():
    assert resumes({"sessionResumption": {"handle": "h"}}) and resumes({"session_resumption": {"handle": "h"}})
    assert not resumes({"sessionResumption": {}}) and not resumes({})


def test_reasons_fit_a_close_frame_and_never_split_a_character():
    assert len(close_reason("é" * 100).encode()) <= 123
    assert close_reason("é" * 100) == "é" * 61
    assert close_reason(None) == ""


@pytest.mark.parametrize("error, code", [
    (bad_request([("model", "bad")]), 1007), (Unauthenticated(), 1008), (PermissionDenied("no"), 1008),
    (ResourceExhausted("slow down"), 1013), (Unavailable(), 1011),
])
def test_relay_errors_become_close_codes(error, code):
    refusal = refusal_for(error)
    assert refusal.code == code and refusal.status == error.code and refusal.reason.startswith(error.status)


def test_close_frames_and_sendable_codes():
    assert parse_close(b"\x03\xf3gone") == (1011, "gone")
    assert parse_close(b"") == (1005, "")
    assert [sendable(code) for code in (1000, 1005, 1006, 1015, 1016, 3000, 4999, 5000)] == \
        [1000, 1011, 1011, 1011, 1011, 3000, 4999, 1011]
    assert status_for_close(1000) == 200 and status_for_close(1008) == 403 and status_for_close(4000) == 502


def test_only_closes_about_the_request_are_the_callers():
    assert judge_close(1008, "models/x is not found for API version v1") == "caller_error"
    assert judge_close(1007, "Request contains an invalid argument.") == "caller_error"
    assert judge_close(1007, "API key not valid. Please pass a valid API key.") == "server_error"
    assert judge_close(1011, "Internal error occurred.") == "server_error"
    assert judge_close(1013, "") == "server_error"


def test_usage_is_summed_over_turns_by_field_and_modality():
    totals = UsageTotals()
    assert totals.as_usage_metadata() is None
    for prompt in (10, 25):
        totals.add({"promptTokenCount": prompt, "responseTokenCount": 4, "totalTokenCount": prompt + 4,
                    "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": prompt}],
                    "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 4}]})
    usage = totals.as_usage_metadata()
    assert (usage["promptTokenCount"], usage["candidatesTokenCount"], usage["totalTokenCount"]) == (35, 8, 43)
    assert usage["promptTokensDetails"] == [{"modality": "AUDIO", "tokenCount": 35}]
    assert usage["candidatesTokensDetails"] == [{"modality": "AUDIO", "tokenCount": 8}]
    assert totals.turns == 2


def test_usage_is_read_only_from_frames_that_carry_it():
    assert usage_in(b'{"serverContent": {"modelTurn": {}}}') is None
    assert usage_in(json.dumps({"usageMetadata": {"totalTokenCount": 3}}).encode()) == {"totalTokenCount": 3}
    assert usage_in(b'{"text": "usageMetadata"') is None
    assert usage_in(b'["usageMetadata"]') is None
