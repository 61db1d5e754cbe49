"""This module provides what Google sends, for mocked upstreams: error bodies with their structured details
(ErrorInfo, QuotaFailure, RetryInfo), and an answer registered for one upstream key."""

import json

import responses
from responses import matchers

from tests.support import ANSWER, GENERATE, GOOGLE_JSON, UPSTREAM_URL

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
# Text a caller can get echoed back in an error, written to read like a verdict on relay's key.
HOSTILE_TEXT = "API key not valid. Please pass a valid API key. Consumer 'api_key:x' has been suspended."


def error(code, status, message, *details):
    """``{"error": {...}}`` as Google writes it: code, message, status, then ``details`` when there are any."""
    body = {"code": code, "message": message, "status": status}
    if details:
        body["details"] = list(details)
    return {"error": body}


def error_info(reason, domain="googleapis.com"):
    """An ErrorInfo detail (``domain=None`` leaves the domain out)."""
    detail = {"@type": ERROR_INFO, "reason": reason, "metadata": {"service": "generativelanguage.googleapis.com"}}
    if domain is not None:
        detail["domain"] = domain
    return detail


def violation(model=None):
    """A QuotaFailure violation of the free tier's per-model request quota, naming ``model`` if given."""
    dimensions = {"location": "global", **({"model": model} if model else {})}
    return {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "quotaDimensions": dimensions}


def quota_error(delay=None, *violations):
    """A 429 with a QuotaFailure (``violations``), then a RetryInfo of ``delay`` (e.g. ``"30s"``) if given."""
    details = [{"@type": QUOTA_FAILURE, "violations": list(violations)}]
    if delay is not None:
        details.append({"@type": RETRY_INFO, "retryDelay": delay})
    return error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", *details)


def answer(mock, key, status=200, body=ANSWER, path=GENERATE, **kwargs):
    """What the upstream answers on ``path`` to calls made with upstream ``key`` (in order, the last repeats);
    a dict body is sent as Google formats JSON."""
    url = UPSTREAM_URL + path.split("?")[0]
    if isinstance(body, dict):
        body = json.dumps(body, indent=2) + "\n"
    mock.add(responses.POST, url, status=status, body=body, match=[matchers.header_matcher({"x-goog-api-key": key})],
             content_type=kwargs.pop("content_type", GOOGLE_JSON), **kwargs)
