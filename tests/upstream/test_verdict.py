"""Unit tests of what an upstream error means for relay's key (relay.upstream.verdict), and of what follows:
the pool's cooldown clamps, its key-health count, the warning for a refused key, /readyz and the caller's
message when every key was refused.

Issue 11: key health comes from structured facts Google sends (ErrorInfo reason and domain, status,
QuotaFailure, RetryInfo) and from what the request was, never from message text a caller can influence.
"""

import json
import logging
import random
import time

import pytest
import responses
from responses import matchers

from relay.config import Settings, Upstream
from relay.upstream import verdict
from relay.upstream.pool import KEYS_REFUSED, MAX_BACKOFF, MAX_RETRY_DELAY, Pool, key_id
from relay.upstream.verdict import Verdict, classify_error, google_error
from tests.support import ANSWER, CLIENT_KEY, ERRORS, GENERATE, MODEL, REQUEST
from tests.support import UPSTREAM_URL as UPSTREAM
from tests.support.google import ERROR_INFO, HOSTILE_TEXT, answer, error, error_info, quota_error, violation

OTHER_MODEL = "gemini-2.5-pro"


def issue_body(entry_id):
    """One ``errors/from_issues.json`` entry's body, as bytes Google sends them."""
    [entry] = [entry for entry in json.loads((ERRORS / "from_issues.json").read_text())["entries"]
               if entry["id"] == entry_id]
    return entry["body_raw"].encode() if "body_raw" in entry else json.dumps(entry["body"]).encode()


def judge(status, body, steered=False):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return classify_error(status, google_error(raw), steered=steered)


# --- hostile answers: text a caller chose never says anything about relay's key -----------------------------


HOSTILE = {
    "403 echoing chosen text, no details": error(403, "PERMISSION_DENIED", HOSTILE_TEXT),
    "403 about a file, text echoed": error(
        403, "PERMISSION_DENIED", f"You do not have permission to access the File {HOSTILE_TEXT} or it may not exist."),
    "403 about a cachedContent": error(403, "PERMISSION_DENIED", "CachedContent not found (or permission denied)"),
    "403 about a tuned model": error(
        403, "PERMISSION_DENIED", "You do not have permission to access tuned model tunedModels/consumer-suspended."),
    "403 with a resource reason": error(403, "PERMISSION_DENIED", HOSTILE_TEXT,
                                        error_info("IAM_PERMISSION_DENIED")),
    "403 with a reason outside googleapis.com": error(403, "PERMISSION_DENIED", HOSTILE_TEXT,
                                                      error_info("CONSUMER_SUSPENDED", domain="example.com")),
    "403 with ErrorInfo only as echoed text": error(
        403, "PERMISSION_DENIED", json.dumps(error_info("API_KEY_INVALID")),
        {"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": json.dumps(error_info("API_KEY_INVALID"))},
        {"@type": "type.googleapis.com/google.rpc.BadRequest",
         "fieldViolations": [{"field": "contents", "description": json.dumps(error_info("CONSUMER_SUSPENDED"))}]}),
    "404 of another project's file": error(404, "NOT_FOUND", f"File files/{HOSTILE_TEXT} was not found."),
    "400 echoing chosen text": error(400, "INVALID_ARGUMENT", f"Invalid value {HOSTILE_TEXT!r} at 'contents'"),
    "401 bad credentials": error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
    "a key reason on the wrong status (API_KEY_INVALID on 403)": error(403, "PERMISSION_DENIED", HOSTILE_TEXT,
                                                                      error_info("API_KEY_INVALID")),
    "a key reason on the wrong status (CONSUMER_SUSPENDED on 400)": error(400, "INVALID_ARGUMENT", HOSTILE_TEXT,
                                                                         error_info("CONSUMER_SUSPENDED")),
    "a user-project reason": error(403, "PERMISSION_DENIED", HOSTILE_TEXT, error_info("USER_PROJECT_DENIED")),
    "501 unimplemented": error(501, "UNIMPLEMENTED", HOSTILE_TEXT),
}


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_answers_about_the_callers_request_are_the_callers_errors(body):
    assert judge(body["error"]["code"], body) == Verdict("caller_error")


@pytest.mark.parametrize("body", [
    {"error": {"code": 403, "message": HOSTILE_TEXT, "status": "PERMISSION_DENIED", "details": "API_KEY_INVALID"}},
    {"error": {"code": 403, "message": HOSTILE_TEXT, "details": [None, 7, "x", {"reason": "API_KEY_INVALID"}]}},
    {"error": {"code": 403, "details": [{"@type": ERROR_INFO, "reason": ["API_KEY_INVALID"]}]}},
    {"error": {"code": 403, "details": [{"@type": ERROR_INFO, "reason": None, "domain": None}]}},
    {"error": HOSTILE_TEXT},
    [{"error": {"code": 403, "message": HOSTILE_TEXT}}, {"error": {"code": 403}}],
], ids=["details not a list", "details without types", "reason not a string", "nulls", "error is text",
        "two-element array"])
def test_malformed_bodies_are_the_callers_errors(body):
    assert judge(403, body).outcome == "caller_error"


def test_a_non_json_403_is_the_callers_error():
    assert judge(403, b"<html>403 " + HOSTILE_TEXT.encode() + b"</html>").outcome == "caller_error"


# --- Google refusing relay's key: ErrorInfo reason, on its status ------------------------------------------


@pytest.mark.parametrize("entry_id", ["400-api-key-invalid-unary", "400-api-key-invalid-array-wrapped",
                                      "400-api-key-invalid-with-debuginfo"])
def test_recorded_api_key_invalid_is_a_refused_key(entry_id):
    assert judge(400, issue_body(entry_id)) == Verdict("key_invalid", reason="API_KEY_INVALID")


@pytest.mark.parametrize("status, reason", [
    (403, "CONSUMER_SUSPENDED"), (403, "SERVICE_DISABLED"), (403, "API_KEY_SERVICE_BLOCKED"),
    (403, "API_KEY_IP_ADDRESS_BLOCKED"), (403, "API_KEY_HTTP_REFERRER_BLOCKED"), (403, "BILLING_DISABLED"),
    (403, "CONSUMER_INVALID"), (400, "API_KEY_EXPIRED"),
])
def test_key_reasons_on_their_status_are_a_refused_key(status, reason):
    body = error(status, "PERMISSION_DENIED" if status == 403 else "INVALID_ARGUMENT", "anything at all",
                 error_info(reason), {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
                                      "message": "anything"})
    assert judge(status, body) == Verdict("key_invalid", reason=reason)


def test_suspended_consumer_as_google_sends_it():
    # google/generative-ai-docs#356: the consumer's id in the message, the verdict in ErrorInfo.
    body = error(403, "PERMISSION_DENIED", "Permission denied: Consumer 'api_key:[redacted]' has been suspended.",
                 {"@type": ERROR_INFO, "reason": "CONSUMER_SUSPENDED", "domain": "googleapis.com",
                  "metadata": {"service": "generativelanguage.googleapis.com", "consumer": "projects/578829824020"}})
    assert judge(403, body) == Verdict("key_invalid", reason="CONSUMER_SUSPENDED")


def test_an_error_info_without_a_domain_still_counts():
    assert judge(403, error(403, "PERMISSION_DENIED", "", error_info("CONSUMER_SUSPENDED", domain=None))).outcome \
        == "key_invalid"


def test_a_bare_leaked_key_403_cannot_be_told_from_a_callers_403():
    # Google sends the leaked-key refusal without details (continuedev/continue#11541): only its text says
    # what it is, and relay does not judge text.
    body = error(403, "PERMISSION_DENIED", "Your API key was reported as leaked. Please use another API key.")
    assert judge(403, body) == Verdict("caller_error")


# --- steered calls: the caller named its own credentials, quota user or billing project ----------------------


@pytest.mark.parametrize("status, body", [
    (400, error(400, "INVALID_ARGUMENT", "API key not valid.", error_info("API_KEY_INVALID"))),
    (403, error(403, "PERMISSION_DENIED", "Service disabled.", error_info("SERVICE_DISABLED"))),
    (403, error(403, "PERMISSION_DENIED", "Caller cannot use project.", error_info("USER_PROJECT_DENIED"))),
    (429, quota_error("30s", violation())),
])
def test_no_4xx_of_a_steered_call_is_about_relays_key(status, body):
    assert judge(status, body, steered=True) == Verdict("caller_error")


def test_a_steered_calls_5xx_is_still_worth_another_key():
    assert judge(503, error(503, "UNAVAILABLE", "overloaded"), steered=True) == Verdict("server_error")


@pytest.mark.parametrize("query, headers", [
    ([("userProject", "victim")], {}), ([("$userProject", "victim")], {}), ([("quotaUser", "someone")], {}),
    ([("access_token", "ya29.x")], {}), ([("oauth_token", "x")], {}), ([("$key", "AIza-other")], {}),
    ([("KEY", "AIza-other")], {}), ([], {"X-Goog-User-Project": "victim"}), ([], {"Authorization": "Bearer x"}),
    ([], {"Referer": "https://elsewhere.example"}), ([], {"X-Android-Package": "com.example"}),
])
def test_calls_naming_their_own_identity_are_steered(query, headers):
    assert verdict.steers_identity(query, headers) is True


def test_ordinary_calls_are_not_steered():
    query = [("alt", "sse"), ("$alt", "json;enum-encoding=int"), ("pageSize", "50"), ("$.xgafv", "2"),
             ("fields", "candidates")]
    headers = {"Content-Type": "application/json", "User-Agent": "x", "X-Goog-Api-Client": "genai-py/0.8.6",
               "X-Goog-Request-Params": "model=models/gemini-2.5-flash", "Accept-Language": "en"}
    assert verdict.steers_identity(query, headers) is False


# --- 429: what rests, and for how long ------------------------------------------------------------------------


def test_recorded_per_model_429_rests_the_calls_model_for_retry_info():
    assert judge(429, issue_body("429-quota-freetier-full")) == Verdict("rate_limited", 15.0, per_model=True)


def test_a_violation_naming_another_model_still_rests_only_the_calls_model():
    # The proxy rests the *call's* model; the model a violation names never chooses what rests.
    assert judge(429, quota_error("20s", violation(OTHER_MODEL))) == Verdict("rate_limited", 20.0, per_model=True)


@pytest.mark.parametrize("violations", [[violation()], [violation(MODEL), violation()], []],
                         ids=["no model", "one without a model", "no violations"])
def test_a_quota_failure_without_a_model_dimension_rests_the_whole_key(violations):
    assert judge(429, quota_error("30s", *violations)) == Verdict("rate_limited", 30.0, per_model=False)


@pytest.mark.parametrize("body", [
    error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for consumer 'project_number:1'.",
          error_info("RATE_LIMIT_EXCEEDED")),
    b"<html><title>429 Too Many Requests</title></html>",
    b"",
], ids=["bare", "error info only", "html", "empty"])
def test_a_429_without_a_quota_failure_rests_only_the_calls_model(body):
    # Without Google's QuotaFailure nothing says the whole key is spent, and a caller can strip details
    # (``$.xgafv=1``, ``alt=proto``): rest just what was asked for.
    assert judge(429, body) == Verdict("rate_limited", None, per_model=True)


@pytest.mark.parametrize("delay, expected", [
    ("34.4s", 34.4), ("0s", 0.0), ("-30s", None), ("nans", None), ("34", None), (34, None), ("soon", None),
    ("86400000s", 86400000.0), ("infs", float("inf")),
])
def test_retry_info_is_read_as_a_duration(delay, expected):
    assert judge(429, quota_error(delay, violation(MODEL))).retry_delay == expected


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_never_refuse_a_key_whatever_they_carry(status):
    body = error(status, "INTERNAL", HOSTILE_TEXT, error_info("API_KEY_INVALID"), error_info("CONSUMER_SUSPENDED"))
    assert judge(status, body) == Verdict("server_error")


# --- the pool: clamps, and counting keys ---------------------------------------------------------------------


GOOGLE = Upstream(name="google", url="http://google.test", keys=("g-key-1", "g-key-2", "g-key-3"))


def make_pool(store, clock, **settings):
    return Pool(Settings(upstreams=(GOOGLE,), **settings), store, clock=clock, rng=random.Random(7))


def target_of(pool, key):
    return next(target for target in pool.targets_by_id.values() if target.key == key)


@pytest.mark.parametrize("delay, rest", [
    (86400000.0, MAX_RETRY_DELAY), (float("inf"), MAX_RETRY_DELAY), (MAX_RETRY_DELAY + 1, MAX_RETRY_DELAY),
    (42.5, 42.5), (-30.0, 4.0), (0.0, 4.0), (None, 4.0),
])
def test_a_429_rests_a_key_between_backoff_and_an_hour(store, clock, delay, rest):
    pool = make_pool(store, clock, cooldown_base=4.0)
    target = target_of(pool, "g-key-1")
    pool.record(target, "rate_limited", retry_delay=delay, model=MODEL)
    until, state = store.blocked_keys(clock())[f"{target.key_id}|{MODEL}"]
    assert state == "cooling" and until - clock() == pytest.approx(rest)
    assert MAX_BACKOFF <= MAX_RETRY_DELAY <= 3600


def test_caller_and_server_errors_in_any_number_change_no_key(store, clock):
    pool = make_pool(store, clock)
    for _ in range(500):
        for key in GOOGLE.keys:
            for outcome in ("caller_error", "server_error", "connection_error"):
                pool.record(target_of(pool, key), outcome)
    assert store.blocked_keys(clock()) == {}
    assert pool.key_health() == {"total": 3, "usable": 3, "cooling": 0, "rejected": 0}


def test_key_health_counts_refused_and_resting_keys(store, clock):
    pool = make_pool(store, clock, reprobe_interval=600.0)
    pool.record(target_of(pool, "g-key-1"), "key_invalid", reason="API_KEY_INVALID")
    pool.record(target_of(pool, "g-key-2"), "rate_limited", retry_delay=30.0)
    pool.record(target_of(pool, "g-key-3"), "rate_limited", retry_delay=30.0, model=MODEL)  # one model only
    assert pool.key_health() == {"total": 3, "usable": 2, "cooling": 1, "rejected": 1}
    clock.advance(31)
    assert pool.key_health() == {"total": 3, "usable": 2, "cooling": 0, "rejected": 1}
    report = {entry["id"]: entry for entry in pool.report()[0]["keys"]}
    assert report[target_of(pool, "g-key-1").key_id]["reason"] == "key refused by upstream: API_KEY_INVALID"


# --- through the app: what callers, /readyz and the log see ---------------------------------------------------


def post(client, path=GENERATE, headers=None):
    return client.post(path, json=REQUEST, headers={"x-goog-api-key": CLIENT_KEY, **(headers or {})})


def blocked(services):
    return services.store.blocked_keys(time.time())


@pytest.mark.parametrize("status, body", [
    (403, HOSTILE["403 echoing chosen text, no details"]), (403, HOSTILE["403 about a file, text echoed"]),
    (404, HOSTILE["404 of another project's file"]),
])
def test_a_hostile_403_is_relayed_to_its_caller_and_disables_nothing(relay, mock_upstream, status, body):
    client, services = relay()
    for key in ("key-0", "key-1"):
        answer(mock_upstream, key, status, body)
    for _ in range(20):
        response = post(client)
        assert response.status_code == status and response.get_json() == body
    assert len(mock_upstream.calls) == 20, "a caller's error is not tried on another key"
    assert blocked(services) == {}


@pytest.mark.parametrize("query", ["?userProject=victim-project", "?%24userProject=victim-project",
                                   "?quotaUser=someone"])
def test_a_call_cannot_steer_relays_keys_to_another_project(relay, mock_upstream, query):
    """Managed mode strips what would bill or check another project (so no answer about it can reach the
    verdict); classify_error's ``steered`` stays as a second line of defence (tested above)."""
    client, services = relay()
    answer(mock_upstream, "key-0", 200, ANSWER)
    assert post(client, GENERATE + query).status_code == 200
    sent = mock_upstream.calls[0].request.url
    assert "userProject" not in sent and "quotaUser" not in sent and blocked(services) == {}


def test_a_billing_header_never_reaches_the_upstream(relay, mock_upstream):
    client, services = relay()
    answer(mock_upstream, "key-0", 200, ANSWER)
    assert post(client, headers={"X-Goog-User-Project": "victim-project"}).status_code == 200
    assert "x-goog-user-project" not in mock_upstream.calls[0].request.headers and blocked(services) == {}


def test_a_429_naming_another_model_rests_only_the_calls_model(relay, mock_upstream):
    client, services = relay()
    answer(mock_upstream, "key-0", 429, quota_error("86400000s", violation(OTHER_MODEL)))
    answer(mock_upstream, "key-1")
    assert post(client).status_code == 200
    state = blocked(services)
    key0 = key_id("u0", "key-0")
    assert set(state) == {f"{key0}|{MODEL}"}, "neither the whole key nor another model rests"
    until, _ = state[f"{key0}|{MODEL}"]
    assert until <= time.time() + MAX_RETRY_DELAY + 1


def test_every_key_refused_says_so_to_the_caller_and_to_readyz(relay, mock_upstream):
    client, _ = relay()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["keys"] == {"total": 2, "usable": 2, "cooling": 0, "rejected": 0}
    for key in ("key-0", "key-1"):
        mock_upstream.add(responses.POST, UPSTREAM + GENERATE, status=400, body=issue_body("400-api-key-invalid-unary"),
                          content_type="application/json; charset=UTF-8",
                          match=[matchers.header_matcher({"x-goog-api-key": key})])

    first = post(client)
    second = post(client)  # answered by the pool: no key left to try
    assert len(mock_upstream.calls) == 2
    for response in (first, second):
        assert response.status_code == 503
        assert response.get_json()["error"] == {"code": 503, "message": KEYS_REFUSED, "status": "UNAVAILABLE"}
        assert b"key-0" not in response.data and b"key-1" not in response.data and b"API key not valid" not in response.data

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json() == {"status": "unavailable", "store": "ok", "mode": "managed", "upstreams": 2,
                                "keys": {"total": 2, "usable": 0, "cooling": 0, "rejected": 2}}


def test_a_refused_key_is_logged_loudly_by_id_never_by_value(relay, mock_upstream, caplog):
    client, _ = relay()
    answer(mock_upstream, "key-0", 403, error(403, "PERMISSION_DENIED", "Permission denied: Consumer 'api_key:key-0' "
                                              "has been suspended.", error_info("CONSUMER_SUSPENDED")))
    answer(mock_upstream, "key-1")
    with caplog.at_level(logging.WARNING, logger="relay"):
        assert post(client).status_code == 200
    [record] = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert record.name == "relay"
    assert (record.key_id, record.upstream, record.reason) == (key_id("u0", "key-0"), "u0", "CONSUMER_SUSPENDED")
    message = record.getMessage()
    assert key_id("u0", "key-0") in message and "u0" in message and "CONSUMER_SUSPENDED" in message
    assert "key-0" not in message.replace(key_id("u0", "key-0"), "")


def test_readyz_counts_a_resting_key_as_usable(relay, mock_upstream):
    client, _ = relay(upstreams=1)
    answer(mock_upstream, "key-0", 429, quota_error("30s", violation()))
    assert post(client).status_code == 429
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["keys"] == {"total": 1, "usable": 1, "cooling": 1, "rejected": 0}


def test_readyz_in_passthrough_mode_has_no_keys_to_count(app_factory):
    ready = app_factory({}).test_client().get("/readyz")
    assert ready.status_code == 200 and "keys" not in ready.get_json()
