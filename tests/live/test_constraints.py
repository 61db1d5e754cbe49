"""Tests for relay.live.constraints: what a token request asks for, and how a token's locks apply to a setup."""

import pytest

from relay.errors import InvalidArgument
from relay.gemini.timestamps import format_timestamp as rfc3339
from relay.gemini.timestamps import parse_timestamp as parse_rfc3339
from relay.live.constraints import TokenSpec, apply_constraints, locked_model, token_request

NOW = 1_800_000_000.0


def violations(body):
    with pytest.raises(InvalidArgument) as raised:
        token_request(body, NOW)
    return {violation["field"] for violation in raised.value.details[0]["fieldViolations"]}


def test_defaults_are_googles():
    spec = token_request({}, NOW)
    assert (spec.uses, spec.expire_time, spec.new_session_expire_time) == (1, NOW + 1800, NOW + 60)
    assert spec.setup is None and spec.field_mask is None


def test_the_fields_the_sdk_sends_are_read():
    body = {"uses": 3, "expireTime": rfc3339(NOW + 600), "newSessionExpireTime": rfc3339(NOW + 120),
            "bidiGenerateContentSetup": {"model": "gemini-live-x", "generationConfig": {"temperature": 0.2}},
            "fieldMask": "model,generationConfig.temperature"}
    spec = token_request(body, NOW)
    assert (spec.uses, round(spec.expire_time), round(spec.new_session_expire_time)) == (3, NOW + 600, NOW + 120)
    assert spec.setup["model"] == "models/gemini-live-x"
    assert spec.field_mask == ("model", "generationConfig.temperature")
    assert token_request({"bidi_generate_content_setup": {"setup": {"model": "m"}}, "uses": "0"}, NOW).setup == \
        {"model": "models/m"}


def test_a_new_session_window_never_outlives_the_token():
    spec = token_request({"expireTime": rfc3339(NOW + 30)}, NOW)
    assert spec.new_session_expire_time == spec.expire_time


def test_bad_fields_are_all_reported():
    assert violations({"uses": -1, "expireTime": "soon", "newSessionExpireTime": rfc3339(NOW + 30 * 3600),
                       "bidiGenerateContentSetup": {"model": "../x"}, "fieldMask": "a..b"}) == {
        "uses", "expireTime", "newSessionExpireTime", "bidiGenerateContentSetup.model", "fieldMask"}
    assert violations({"uses": True, "expireTime": rfc3339(NOW - 1)}) == {"uses", "expireTime"}


def test_rfc3339_times():
    assert parse_rfc3339("2027-01-15T12:00:00Z") == parse_rfc3339("2027-01-15T13:00:00+01:00")
    assert parse_rfc3339("2027-01-15T12:00:00.123456789Z") == pytest.approx(parse_rfc3339("2027-01-15T12:00:00Z") + 0.123456)
    assert parse_rfc3339("2027-01-15") is None and parse_rfc3339(5) is None


def spec(setup, mask):
    return TokenSpec(1, NOW + 60, NOW + 60, setup, mask)


def test_no_locked_setup_leaves_the_session_its_own():
    assert apply_constraints({"model": "models/a"}, spec(None, None)) == {"model": "models/a"}


def test_a_setup_without_a_mask_locks_everything_but_resumption():
    locked = {"model": "models/a", "generationConfig": {"temperature": 0.2}}
    client = {"model": "models/b", "generation_config": {"top_k": 3}, "sessionResumption": {"handle": "h"}}
    assert apply_constraints(client, spec(locked, None)) == {**locked, "sessionResumption": {"handle": "h"}}
    assert apply_constraints({"model": "models/b"}, spec({"systemInstruction": {}}, None)) == \
        {"systemInstruction": {}, "model": "models/b"}
    assert locked_model(spec(locked, None)) == "a" and locked_model(spec(locked, ("generationConfig",))) is None


def test_a_mask_locks_the_listed_fields_in_either_spelling():
    locked = {"model": "models/a", "generationConfig": {"temperature": 0.2, "responseModalities": ["TEXT"]}}
    client = {"model": "models/b", "generation_config": {"temperature": 1.5, "top_k": 3, "response_modalities": ["AUDIO"]},
              "tools": [{"x": 1}]}
    effective = apply_constraints(client, spec(locked, ("generationConfig.temperature", "generationConfig.responseModalities",
                                                        "tools")))
    assert effective == {"model": "models/b", "generation_config": {"top_k": 3, "temperature": 0.2,
                                                                    "responseModalities": ["TEXT"]}}
    assert client["generation_config"]["temperature"] == 1.5  # the caller's setup is not changed in place
