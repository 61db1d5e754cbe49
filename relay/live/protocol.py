"""This module provides the Live API's wire knowledge relay needs: the setup message, close codes and reasons,
and the usage a session's server messages report.  Pure: no Flask, no sockets.

Clients send JSON in text frames (the Python SDK spells some keys in snake_case); Google answers with JSON,
seemingly in binary frames.  relay reads only the first client message (``setup``) and server messages that
carry ``usageMetadata``; every other frame passes through untouched.
"""


import orjson

from relay.settings import MODEL_ID

NORMAL = 1000
GOING_AWAY = 1001
NO_STATUS = 1005
ABNORMAL = 1006
INVALID_ARGUMENT = 1007  # Google closes with 1007 for a request it cannot accept
POLICY = 1008  # ... and with 1008 for a model or entity it will not serve
INTERNAL = 1011
TRY_AGAIN_LATER = 1013
MAX_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes, 2 of them the code
# Codes that may not be sent in a close frame (RFC 6455 §7.4.1): they only describe a closure locally.
UNSENDABLE = {NO_STATUS, ABNORMAL, 1015}
# Usage fields Live reports per turn, summed over the session (responseTokenCount is Live's candidates count).
USAGE_COUNTS = ("promptTokenCount", "responseTokenCount", "cachedContentTokenCount", "thoughtsTokenCount",
                "toolUsePromptTokenCount", "totalTokenCount")
USAGE_DETAILS = {
    "promptTokensDetails": "promptTokensDetails", "responseTokensDetails": "candidatesTokensDetails",
    "cacheTokensDetails": "cacheTokensDetails", "toolUsePromptTokensDetails": "toolUsePromptTokensDetails",
}


class LiveRefusal(Exception):
    """Why relay closes a session itself: a WebSocket close ``code``, a ``reason`` that fits in a close frame,
    and the HTTP-like ``status`` the usage row and access log record."""

    def __init__(self, code, reason, status):
        super().__init__(reason)
        self.code = code
        self.reason = close_reason(reason)
        self.status = status


def close_reason(text):
    """``text`` cut to what a close frame can carry (123 bytes of UTF-8), never mid-character."""
    encoded = str(text or "").encode()[:MAX_REASON_BYTES]
    return encoded.decode(errors="ignore")


def refusal_for(error):
    """A relay error (``relay.errors.RelayError``) as a close: 400 → 1007, 401/403/404 → 1008, 429 → 1013,
    anything else 1011; the reason is the error's first line, prefixed with its Google status."""
    if error.code == 400:
        code = INVALID_ARGUMENT
    elif error.code in (401, 403, 404):
        code = POLICY
    elif error.code == 429:
        code = TRY_AGAIN_LATER
    else:
        code = INTERNAL
    return LiveRefusal(code, f"{error.status}: {str(error.message).splitlines()[0]}", error.code)


def invalid(reason):
    return LiveRefusal(INVALID_ARGUMENT, reason, 400)


def parse_setup(message):
    """The ``setup`` object of a session's first message (text or bytes), or a LiveRefusal (1007)."""
    try:
        parsed = orjson.loads(message)
    except orjson.JSONDecodeError:
        raise invalid("The first message must be JSON: {\"setup\": {\"model\": \"models/...\"}}.") from None
    if not isinstance(parsed, dict) or "setup" not in parsed:
        raise invalid("The first message must be a setup message: {\"setup\": {\"model\": \"models/...\"}}.")
    if len(parsed) != 1:
        raise invalid("A message carries exactly one field; the first one must be setup.")
    setup = parsed["setup"]
    if not isinstance(setup, dict):
        raise invalid("setup must be an object.")
    return setup


def requested_model(setup):
    """The model id the setup names (``models/`` dropped), or a LiveRefusal (1007)."""
    model = setup.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("setup.model is required, e.g. \"models/gemini-live-2.5-flash-preview\".")
    model = model.removeprefix("models/")
    if not MODEL_ID.fullmatch(model) or ".." in model:
        raise invalid(f"setup.model {model[:60]!r} is not a valid model id.")
    return model


def resumes(setup):
    """True if the setup resumes an earlier session (it carries a session-resumption handle)."""
    resumption = setup.get("sessionResumption", setup.get("session_resumption"))
    return isinstance(resumption, dict) and bool(resumption.get("handle"))


def parse_close(payload):
    """(code, reason) of a close frame's payload; a close without a code is 1005, as RFC 6455 says."""
    if len(payload) < 2:
        return NO_STATUS, ""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode(errors="replace")


def sendable(code, fallback=INTERNAL):
    """A code that may go on the wire in a close frame (1005/1006/1015 and out-of-range codes may not)."""
    if code in UNSENDABLE or not (1000 <= code <= 4999) or 1016 <= code <= 2999:
        return fallback
    return code


def status_for_close(code):
    """The HTTP-like status a usage row records for a session the upstream closed with ``code``."""
    if code in (NORMAL, GOING_AWAY, NO_STATUS):
        return 200
    return {INVALID_ARGUMENT: 400, POLICY: 403, INTERNAL: 500, TRY_AGAIN_LATER: 503}.get(code, 502)


def judge_close(code, reason):
    """What an upstream close before ``setupComplete`` means for the attempt: ``caller_error`` (1007/1008 about
    the request: relayed as it is) or ``server_error`` (another key may do; no key changes state, since a
    close reason is text, not one of Google's structured facts).  A reason about the API key is relay's
    problem, never the caller's."""
    if code in (INVALID_ARGUMENT, POLICY) and "api key" not in reason.lower():
        return "caller_error"
    return "server_error"


def usage_in(data):
    """The ``usageMetadata`` of one server message, or None (the frame is parsed only when it names one)."""
    if b"usageMetadata" not in data:
        return None
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    usage = message.get("usageMetadata") if isinstance(message, dict) else None
    return usage if isinstance(usage, dict) else None


class UsageTotals:
    """The session's usage: every turn's ``usageMetadata`` summed, field by field and modality by modality.

    ``promptTokenCount`` re-counts the whole context on every turn, so its sum is what the turns were
    charged for, not the number of distinct tokens in the conversation.
    """

    def __init__(self):
        self.turns = 0
        self.counts = dict.fromkeys(USAGE_COUNTS, 0)
        self.details = {}

    def add(self, usage):
        self.turns += 1
        for name in USAGE_COUNTS:
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                self.counts[name] += value
        for name, total_name in USAGE_DETAILS.items():
            for detail in usage.get(name) or ():
                if isinstance(detail, dict) and isinstance(detail.get("tokenCount"), int):
                    bucket = self.details.setdefault(total_name, {})
                    modality = str(detail.get("modality", "MODALITY_UNSPECIFIED"))
                    bucket[modality] = bucket.get(modality, 0) + detail["tokenCount"]

    def as_usage_metadata(self):
        """The totals in Google's generateContent shape (what relay's usage rows read), or None if no turn."""
        if not self.turns:
            return None
        usage = {name: value for name, value in self.counts.items() if name != "responseTokenCount"}
        usage["candidatesTokenCount"] = self.counts["responseTokenCount"]
        for name, modalities in self.details.items():
            usage[name] = [{"modality": modality, "tokenCount": count} for modality, count in modalities.items()]
        return usage
