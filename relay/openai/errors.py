"""This module provides OpenAI-shaped errors for Google's error objects, upstream statuses and relay's own errors.

OpenAI clients read ``{"error": {"message", "type", "param", "code"}}`` and pick an exception by status
alone, so the status matters most: Google's invalid key is a 400 that becomes 401, a blocked location a
400 that becomes 403.  A 429 keeps Google's RetryInfo delay as ``Retry-After`` / ``retry-after-ms``, which
openai-python obeys (up to 60 or 120 s by version).  After a stream started, :meth:`OpenAIError.sse` is
the in-band form, ``data: {"error": …}``, which openai-python and openai-node raise.  Pure: no I/O.
"""

import dataclasses
import math
import re

import orjson

from relay.errors import BAD_REQUEST_TYPE, ERROR_INFO_TYPE, RETRY_INFO_TYPE, parse_duration

DEFAULT_MESSAGES = {
    400: "The request is invalid.",
    401: "Incorrect API key provided.",
    403: "You do not have access to this resource.",
    404: "The model does not exist or you do not have access to it.",
    429: "Rate limit reached: retry later.",
    500: "The server had an error processing your request.",
    503: "The service is temporarily unavailable: retry later.",
    504: "The upstream did not answer in time.",
}
# Google sometimes states the delay only in the message: "… Please retry in 47.174066935s."
_RETRY_IN_MESSAGE = re.compile(r"retry in (\d+(?:\.\d+)?)(ms|s)\b", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class OpenAIError:
    """An error as OpenAI renders it; ``retry_after`` (seconds) becomes the retry headers."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None

    def to_dict(self):
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_json(self):
        return orjson.dumps(self.to_dict())

    def headers(self):
        """``Retry-After`` (whole seconds) and ``retry-after-ms``, which openai-python reads first."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(math.ceil(self.retry_after)), "retry-after-ms": str(round(self.retry_after * 1000))}

    def sse(self):
        return b"data: " + self.to_json() + b"\n\n"


def from_google_error(body, status=None):
    """The OpenAI error for a Google error body (``{"error": …}``, array-wrapped or unreadable) and HTTP status.

    ``status`` is the upstream HTTP status; without it, the body's ``code`` (in-band stream errors).
    """
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    status = status or (code if isinstance(code, int) and 400 <= code <= 599 else 500)
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = DEFAULT_MESSAGES.get(status, DEFAULT_MESSAGES[500 if status >= 500 else 400])
    details = error.get("details")
    details = [detail for detail in details if isinstance(detail, dict)] if isinstance(details, list) else []
    return _classify(status, error.get("status"), message, details)


def _classify(status, rpc_status, message, details):
    reasons = {str(detail.get("reason")) for detail in details if detail.get("@type") == ERROR_INFO_TYPE}
    if status == 401 or "API_KEY_INVALID" in reasons:
        return OpenAIError(401, message, code="invalid_api_key")
    if rpc_status == "FAILED_PRECONDITION" and "location is not supported" in message:
        return OpenAIError(403, message, code="unsupported_country_region_territory")
    if status == 403:
        return OpenAIError(403, message, code="permission_denied")
    if status == 404:
        return OpenAIError(404, message, code="model_not_found" if "model" in message.lower() else "not_found")
    if status == 429:
        return OpenAIError(429, message, "requests", "rate_limit_exceeded", retry_after=_retry_seconds(details, message))
    if status >= 500:
        return OpenAIError(status, message, "server_error")
    return OpenAIError(status, message)


def _retry_seconds(details, message):
    for detail in details:
        if detail.get("@type") == RETRY_INFO_TYPE:
            seconds = parse_duration(detail.get("retryDelay"))
            if seconds is not None:
                return seconds
    match = _RETRY_IN_MESSAGE.search(message)
    if match is None:
        return None
    return float(match.group(1)) / (1000 if match.group(2).lower() == "ms" else 1)


def from_relay_error(error):
    """The OpenAI error for a :class:`relay.errors.RelayError` relay raised itself.

    A validation error (a BadRequest detail, as :func:`relay.errors.bad_request` builds) names its first
    field as ``param`` and every field in the message; a ``Retry-After`` header relay set is kept.
    """
    violations = _violations(error.details)
    if violations:
        message = " ".join(f"Invalid '{field}': {description}" for field, description in violations)
        param = violations[0][0]
        return OpenAIError(error.code, message, param=None if param == "request" else param)
    converted = from_google_error(error.to_dict(), error.code)
    if converted.retry_after is None:
        retry_after = _seconds(error.headers.get("Retry-After"))
        converted = dataclasses.replace(converted, retry_after=retry_after)
    return converted


def _violations(details):
    for detail in details:
        if isinstance(detail, dict) and detail.get("@type") == BAD_REQUEST_TYPE:
            return [(violation.get("field") or "request", violation.get("description", ""))
                    for violation in detail.get("fieldViolations") or ()]
    return []


def _seconds(value):
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
