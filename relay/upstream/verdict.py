"""This module provides what an upstream error answer means for the key that got it (pure: no I/O).

A 429 rests the key (for one model, when every violated quota is per model) for Google's RetryInfo; an
invalid, revoked or suspended key is disabled; 5xx are the upstream's trouble and worth another try;
anything else is the caller's and is relayed as it is.
"""

import orjson

from relay.errors import parse_duration

RETRYABLE_STATUS = {429, 500, 502, 503, 504}


def google_error(body):
    """The ``error`` object of a Google-shaped error body (also when wrapped in a one-element array), or None."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, list) and len(parsed) == 1:
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else None


def classify_error(status, error):
    """What an upstream error (``google_error``'s object, or None) means for the key:
    (outcome, retry delay in seconds or None, per-model quota?)."""
    info = _error_info(error)
    if status == 429:
        return "rate_limited", info.get("retry_delay"), info.get("per_model", False)
    if status == 400 and info.get("reason") == "API_KEY_INVALID":
        return "key_invalid", None, False
    if status == 403 and (info.get("reason") in KEY_REASONS or _mentions_key(info.get("message", ""))):
        return "key_invalid", None, False
    if status in RETRYABLE_STATUS:
        return "server_error", None, False
    return "caller_error", None, False


KEY_REASONS = {
    "API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED", "API_KEY_IP_ADDRESS_BLOCKED",
    "CONSUMER_SUSPENDED", "SERVICE_DISABLED", "API_KEY_EXPIRED",
}


def _mentions_key(message):
    lowered = message.lower()
    return "api key" in lowered or "consumer" in lowered or "suspended" in lowered


def _error_info(error):
    if error is None:
        return {}
    info = {"message": str(error.get("message", ""))}
    for detail in error.get("details") or ():
        if not isinstance(detail, dict):
            continue
        if detail.get("@type", "").endswith("RetryInfo"):
            info["retry_delay"] = parse_duration(detail.get("retryDelay"))
        if detail.get("@type", "").endswith("ErrorInfo"):
            info["reason"] = detail.get("reason")
        if detail.get("@type", "").endswith("QuotaFailure"):
            violations = [v for v in detail.get("violations") or () if isinstance(v, dict)]
            # Every violated quota names a model: the key is exhausted for this model, not for all.
            info["per_model"] = bool(violations) and all(
                isinstance(v.get("quotaDimensions"), dict) and v["quotaDimensions"].get("model") for v in violations)
    return info
