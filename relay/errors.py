"""This module provides relay's one error vocabulary, rendered the way Google renders errors.

Every error relay itself produces is a :class:`RelayError`; one Flask handler turns it into
``{"error": {"code", "message", "status", "details"}}`` (2-space pretty JSON with a trailing newline,
the bytes Google sends).  Pure: no Flask, no requests.
"""

import json

BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
QUOTA_FAILURE_TYPE = "type.googleapis.com/google.rpc.QuotaFailure"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"


class RelayError(Exception):
    """An error relay answers with; subclasses carry the HTTP code and google.rpc status name."""

    code = 500
    status = "INTERNAL"
    message = "Internal error encountered."

    def __init__(self, message=None, details=None, headers=None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = list(details or ())
        self.headers = dict(headers or {})

    def to_dict(self):
        error = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}

    def to_json(self):
        return render_json(self.to_dict())


class InvalidArgument(RelayError):
    code, status = 400, "INVALID_ARGUMENT"
    message = "Request contains an invalid argument."


class FailedPrecondition(RelayError):
    code, status = 400, "FAILED_PRECONDITION"
    message = "The request cannot be served in the system's current state."


class Unauthenticated(RelayError):
    code, status = 401, "UNAUTHENTICATED"
    message = "Request is missing a valid API key."


class PermissionDenied(RelayError):
    code, status = 403, "PERMISSION_DENIED"
    message = "The caller does not have permission."


class NotFound(RelayError):
    code, status = 404, "NOT_FOUND"
    message = "Requested entity was not found."


class MethodNotAllowed(RelayError):
    code, status = 405, "UNIMPLEMENTED"
    message = "Method not allowed for this resource."


class PayloadTooLarge(RelayError):
    code, status = 413, "INVALID_ARGUMENT"
    message = "Request payload size exceeds the limit."


class ResourceExhausted(RelayError):
    code, status = 429, "RESOURCE_EXHAUSTED"
    message = "Resource has been exhausted (e.g. check quota)."


class Internal(RelayError):
    code, status = 500, "INTERNAL"


class Unavailable(RelayError):
    code, status = 503, "UNAVAILABLE"
    message = "The service is currently unavailable."


class DeadlineExceeded(RelayError):
    code, status = 504, "DEADLINE_EXCEEDED"
    message = "Deadline expired before operation could complete."


JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
JSON_HEADERS = {"Content-Type": JSON_CONTENT_TYPE}  # for a view that answers a (body, status, headers) tuple


def render_json(obj):
    """Serialise like Google: 2-space indent, ``": "`` separators, non-ASCII kept, trailing newline."""
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()


def bad_request(violations, prefix=""):
    """An InvalidArgument listing every ``(field, description)`` violation in a BadRequest detail."""
    violations = list(violations)
    lines = "".join(f"* {prefix}{field}: {description}\n" for field, description in violations)
    detail = {
        "@type": BAD_REQUEST_TYPE,
        "fieldViolations": [{"field": field, "description": description} for field, description in violations],
    }
    return InvalidArgument(f"Invalid JSON payload received.\n{lines}".rstrip("\n"), details=[detail])


def retry_info(seconds):
    """A google.rpc.RetryInfo detail; Google writes durations as decimal seconds with an ``s``."""
    seconds = max(0.0, float(seconds))
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return {"@type": RETRY_INFO_TYPE, "retryDelay": f"{text or '0'}s"}


def parse_duration(text):
    """Seconds in a google.protobuf.Duration string such as ``"34s"`` or ``"34.4s"``; None if malformed."""
    if not isinstance(text, str) or not text.endswith("s"):
        return None
    try:
        value = float(text[:-1])
    except ValueError:
        return None
    return value if value >= 0 else None
