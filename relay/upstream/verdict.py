"""This module provides what an upstream error answer means for the key that got it (pure: no I/O).

Only facts a caller cannot write decide: the HTTP status, the ``google.rpc`` details Google attaches
(``ErrorInfo`` reason and domain, ``QuotaFailure``, ``RetryInfo``) and what the request was.  Never the
message: Google's messages echo what the caller sent (a file id, a tuned model's name), so any text test
would let one caller take relay's keys out of service for everyone.

* ``key_invalid``: an ``ErrorInfo`` of domain ``googleapis.com`` (or none given) whose reason is one of
  :data:`KEY_REASONS`, on the status Google sends it with.  The pool disables the key until its re-probe.
* ``rate_limited``: a 429.  The key rests for the call's model only, unless a ``QuotaFailure`` says a
  violated quota has no model dimension (then the whole key).  The model a violation names is never used
  to choose what rests, so no answer can aim a cooldown at another model.  ``RetryInfo`` gives the delay
  (the pool clamps it); a bare or non-Google 429 rests just the call's model, with backoff.
* ``server_error``: 5xx; worth another key or upstream, and never changes any key's state.
* ``caller_error``: everything else, relayed as it is: a 403 about a file, cachedContent or tuned model
  (no key reason), and every 4xx of a *steered* call, one that named its own credentials, quota or billing
  project (:func:`steers_identity`), since Google's answer is then about those, not about relay's key.
"""

from typing import NamedTuple

import orjson

from relay.errors import parse_duration

SERVER_ERROR_STATUS = {500, 502, 503, 504}
GOOGLE_DOMAIN = "googleapis.com"

# ErrorInfo reasons that say the key itself (or its project) was refused, with the statuses they come with.
# The referrer and app restrictions depend on headers relay never forwards (and a call carrying them is
# steered), so here they can only mean the key's own configuration.
KEY_REASONS = {
    "API_KEY_INVALID": {400},  # unknown, deleted or revoked key (errors/from_issues.json)
    "API_KEY_EXPIRED": {400},
    "API_KEY_SERVICE_BLOCKED": {403},  # the key is restricted to other APIs
    "API_KEY_HTTP_REFERRER_BLOCKED": {403},
    "API_KEY_IP_ADDRESS_BLOCKED": {403},
    "API_KEY_ANDROID_APP_BLOCKED": {403},
    "API_KEY_IOS_APP_BLOCKED": {403},
    "CONSUMER_SUSPENDED": {403},  # the key's project is suspended
    "CONSUMER_INVALID": {403},  # the key's project is gone
    "SERVICE_DISABLED": {403},  # the Generative Language API is off in the key's project
    "BILLING_DISABLED": {403},
}

# Query parameters (``$`` prefix dropped, lower case) and headers by which a caller would pick the
# credentials, quota or billing project Google charges and checks instead of relay's key.
STEERING_PARAMS = {"key", "access_token", "oauth_token", "bearer_token", "userproject", "quotauser"}
STEERING_HEADERS = {"authorization", "x-goog-user-project", "x-goog-quota-user", "referer", "x-android-package",
                    "x-android-cert", "x-ios-bundle-identifier"}


class Verdict(NamedTuple):
    """What one error answer means: ``outcome``; ``retry_delay`` (seconds, from RetryInfo, or None);
    ``per_model`` (a 429 rests the key for the call's model only); ``reason`` (ErrorInfo's, for the log)."""

    outcome: str
    retry_delay: float | None = None
    per_model: bool = False
    reason: str | None = None


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


def steers_identity(query, headers):
    """True if a call names its own credentials, quota user or billing project (``query``: (name, value)
    pairs; ``headers``: names): its 4xx answers are then about those, never evidence about relay's key."""
    if any(str(name).lstrip("$").lower() in STEERING_PARAMS for name, _ in query):
        return True
    return any(str(name).lower() in STEERING_HEADERS for name in headers)


def classify_error(status, error, steered=False):
    """The :class:`Verdict` on an upstream error (``error``: ``google_error``'s object, or None)."""
    if status in SERVER_ERROR_STATUS:
        return Verdict("server_error")
    if steered:
        return Verdict("caller_error")
    details = _details(error)
    if status == 429:
        return Verdict("rate_limited", _retry_delay(details), per_model=not _quota_spans_key(details))
    reason = _key_reason(details)
    if reason is not None and status in KEY_REASONS[reason]:
        return Verdict("key_invalid", reason=reason)
    return Verdict("caller_error")


def _details(error):
    """``error.details`` by type name (``google.rpc.ErrorInfo`` → ``ErrorInfo``), the first of each type."""
    found = {}
    details = error.get("details") if error is not None else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and isinstance(detail.get("@type"), str):
            found.setdefault(detail["@type"].rpartition(".")[2], detail)
    return found


def _key_reason(details):
    info = details.get("ErrorInfo")
    if info is None or info.get("domain", GOOGLE_DOMAIN) != GOOGLE_DOMAIN:
        return None
    reason = info.get("reason")
    return reason if isinstance(reason, str) and reason in KEY_REASONS else None


def _retry_delay(details):
    retry = details.get("RetryInfo")
    return parse_duration(retry.get("retryDelay")) if retry is not None else None


def _quota_spans_key(details):
    """True if Google's QuotaFailure says a violated quota is not per model (or lists none): rest the whole key."""
    quota = details.get("QuotaFailure")
    if quota is None:
        return False
    violations = quota.get("violations")
    violations = [v for v in violations if isinstance(v, dict)] if isinstance(violations, list) else []
    return not violations or not all(
        isinstance(v.get("quotaDimensions"), dict) and v["quotaDimensions"].get("model") for v in violations)
