"""This module provides tests of error translation: recorded Google errors and relay's own, in OpenAI's shape."""

import orjson
import pytest

from relay.errors import (
    Internal,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    bad_request,
    retry_info,
)
from relay.openai.errors import OpenAIError, from_google_error, from_relay_error
from tests.openai import recordings


def issue(entry_id):
    """A Google error body quoted in an issue (errors/from_issues.json), parsed."""
    entry = next(entry for entry in recordings.load("errors/from_issues.json")["entries"] if entry["id"] == entry_id)
    return entry["body"] if "body" in entry else orjson.loads(entry["body_raw"])


def test_a_429_keeps_its_retry_delay():
    error = from_google_error(recordings.load("errors/vercel-ai__google-429-retry-info.json"), 429)
    assert error == OpenAIError(429, "You exceeded your current quota, please check your plan.", "requests",
                                "rate_limit_exceeded", retry_after=34.4)
    assert error.headers() == {"Retry-After": "35", "retry-after-ms": "34400"}
    assert error.to_dict() == {"error": {"message": "You exceeded your current quota, please check your plan.",
                                         "type": "requests", "param": None, "code": "rate_limit_exceeded"}}


def test_a_429_with_help_and_quota_details_before_its_retry_info():
    error = from_google_error(issue("429-quota-freetier-full"), 429)
    assert (error.status, error.code, error.retry_after) == (429, "rate_limit_exceeded", 15.0)


def test_a_429_whose_delay_is_only_in_the_message():
    entry = next(entry for entry in recordings.load("errors/from_issues.json")["entries"]
                 if entry["id"] == "429-message-with-retry-in-text")
    error = from_google_error({"error": {"code": 429, "message": entry["message"], "status": entry["status"]}})
    assert (error.status, error.retry_after) == (429, 47.174066935)


def test_a_429_without_a_delay_sends_no_retry_headers():
    error = from_google_error(issue("429-simple-2024"), 429)
    assert (error.retry_after, error.headers()) == (None, {})


@pytest.mark.parametrize("entry_id", ["400-api-key-invalid-unary", "400-api-key-invalid-with-debuginfo",
                                      "400-api-key-invalid-array-wrapped"])
def test_googles_invalid_key_400_is_a_401(entry_id):
    error = from_google_error(issue(entry_id), 400)
    assert (error.status, error.type, error.code) == (401, "invalid_request_error", "invalid_api_key")
    assert error.message.startswith("API key not valid")


def test_an_unsupported_location_is_a_403():
    error = from_google_error(issue("400-location-unsupported"), 400)
    assert (error.status, error.code) == (403, "unsupported_country_region_territory")


def test_a_permission_error():
    body = {"error": {"code": 403, "message": "The caller does not have permission", "status": "PERMISSION_DENIED"}}
    assert from_google_error(body, 403) == OpenAIError(403, "The caller does not have permission", code="permission_denied")


def test_an_unknown_model_is_model_not_found():
    body = recordings.response("errors/pydantic-ai__test_model_name_suggestion_google.json")
    error = from_google_error(body, 404)
    assert (error.status, error.type, error.code) == (404, "invalid_request_error", "model_not_found")
    assert error.message == body["error"]["message"]
    cache = {"error": {"code": 404, "message": "CachedContent not found (or permission denied)", "status": "NOT_FOUND"}}
    assert from_google_error(cache, 404).code == "not_found"


@pytest.mark.parametrize("entry_id, status", [("503-overloaded", 503), ("503-high-demand", 503)])
def test_server_errors(entry_id, status):
    error = from_google_error(issue(entry_id), status)
    assert (error.status, error.type, error.code, error.param) == (status, "server_error", None, None)


def test_a_plain_400_keeps_googles_message():
    body = recordings.load("errors/vercel-ai__issue-8943-gemini-2.5-flash-error.json")
    assert from_google_error(body, 400) == OpenAIError(400, "Penalty is not enabled for models/gemini-2.5-flash")


@pytest.mark.parametrize("body, status, expected", [
    (None, 502, OpenAIError(502, "The server had an error processing your request.", "server_error")),
    (b"<html>", 500, OpenAIError(500, "The server had an error processing your request.", "server_error")),
    ({"error": "nope"}, 400, OpenAIError(400, "The request is invalid.")),
    ([], 404, OpenAIError(404, "The model does not exist or you do not have access to it.", code="model_not_found")),
    ({"error": {"code": 429, "message": "slow down", "details": "x"}}, None,
     OpenAIError(429, "slow down", "requests", "rate_limit_exceeded")),
    ({"error": {"code": "weird"}}, None, OpenAIError(500, "The server had an error processing your request.", "server_error")),
])
def test_unreadable_bodies(body, status, expected):
    assert from_google_error(body, status) == expected


def test_relays_validation_errors_name_the_param():
    error = from_relay_error(bad_request([("messages[1].tool_call_id", "Answers no tool call."), ("n", "Too many.")]))
    assert error.to_dict() == {"error": {
        "message": "Invalid 'messages[1].tool_call_id': Answers no tool call. Invalid 'n': Too many.",
        "type": "invalid_request_error", "param": "messages[1].tool_call_id", "code": None}}
    assert error.status == 400
    assert from_relay_error(bad_request([("request", "The request body must be a JSON object.")])).param is None


@pytest.mark.parametrize("relay_error, status, error_type, code", [
    (Unauthenticated(), 401, "invalid_request_error", "invalid_api_key"),
    (PermissionDenied(), 403, "invalid_request_error", "permission_denied"),
    (NotFound("Model `gpt-9` is not served here."), 404, "invalid_request_error", "model_not_found"),
    (PayloadTooLarge(), 413, "invalid_request_error", None),
    (InvalidArgument("Bad."), 400, "invalid_request_error", None),
    (Internal(), 500, "server_error", None),
    (Unavailable(), 503, "server_error", None),
])
def test_relays_own_errors(relay_error, status, error_type, code):
    error = from_relay_error(relay_error)
    assert (error.status, error.type, error.code, error.message) == (status, error_type, code, relay_error.message)


def test_relays_rate_limits_keep_their_delay():
    from_detail = from_relay_error(ResourceExhausted("Client limit reached.", details=[retry_info(2.5)]))
    assert (from_detail.status, from_detail.code, from_detail.retry_after) == (429, "rate_limit_exceeded", 2.5)
    from_header = from_relay_error(ResourceExhausted("Client limit reached.", headers={"Retry-After": "7"}))
    assert from_header.headers() == {"Retry-After": "7", "retry-after-ms": "7000"}


def test_the_in_band_form():
    error = OpenAIError(500, "boom", "server_error")
    assert error.sse() == b'data: {"error":{"message":"boom","type":"server_error","param":null,"code":null}}\n\n'
