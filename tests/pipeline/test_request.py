"""Tests for relay/pipeline/request.py through the app: which of a caller's query parameters and headers reach
the upstream, and that no field mask or response format hides usage from relay's accounting and limits."""

import json
import re
import time
from urllib.parse import parse_qsl, urlsplit

import pytest

from relay.clients.auth import hash_key
from tests.support import BODY, GENERATE, MODEL, STREAM

# Keys of this module's own (conftest's managed app takes MANAGED).
UPSTREAM_KEY = "AIzaUpstreamKey-request-0123456789"
CLIENT_KEY = "relay-client-key-request-0123456789"
CALLER_KEY = "AIzaCallersOwnKey-request-987654321"
MANAGED = {"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY}
AUTH = {"x-goog-api-key": CLIENT_KEY}
USAGE = {"promptTokenCount": 4, "candidatesTokenCount": 7, "totalTokenCount": 11}
ANSWER = {"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}, "finishReason": "STOP"}],
          "usageMetadata": USAGE, "modelVersion": MODEL}
ANY_URL = re.compile(r".*")


def post(client, path, headers=AUTH, **kwargs):
    response = client.post(path, data=BODY, headers=headers, content_type="application/json", **kwargs)
    response.get_data()
    response.close()
    return response


def answering(mock_upstream, body=b"{}", content_type="application/json; charset=UTF-8"):
    for method in ("GET", "POST", "PATCH", "DELETE"):
        mock_upstream.add_callback(method, ANY_URL,
                                   callback=lambda request: (200, {"Content-Type": content_type}, body))


def sent_query(mock_upstream):
    [call] = mock_upstream.calls
    return parse_qsl(urlsplit(call.request.url).query, keep_blank_values=True)


# -- credentials ----------------------------------------------------------------------------------------


CREDENTIAL_QUERIES = ["key={s}", "%24key={s}", "$key={s}", "KEY={s}", "Key={s}", "%20key={s}", "%24%24key={s}",
                      "access_token={s}", "%24access_token={s}", "oauth_token={s}", "%24oauth_token={s}",
                      "bearer_token={s}", "key={s}&key={s}x", "%24key={s}&access_token={s}&oauth_token={s}"]


@pytest.mark.parametrize("query", CREDENTIAL_QUERIES)
def test_no_credential_form_reaches_the_upstream_in_managed_mode(managed, mock_upstream, query):
    answering(mock_upstream, json.dumps(ANSWER).encode())
    secret = "AIzaSomeoneElsesKey-0123456789abcdef"
    response = post(managed, f"{GENERATE}?pageSize=1&{query.format(s=secret)}")

    assert response.status_code == 200, response.data
    [call] = mock_upstream.calls
    assert secret not in call.request.url and sent_query(mock_upstream) == [("pageSize", "1")]
    assert [value for name, value in call.request.headers.items() if secret in value] == []
    assert call.request.headers["x-goog-api-key"] == UPSTREAM_KEY


@pytest.mark.parametrize("query", CREDENTIAL_QUERIES[1:])
def test_passthrough_sends_the_callers_key_once_as_a_header_and_no_other_credential(passthrough, mock_upstream, query):
    answering(mock_upstream, json.dumps(ANSWER).encode())
    other = "ya29.an-oauth-token-0123456789"
    response = post(passthrough, f"{GENERATE}?{query.format(s=other)}", headers={"x-goog-api-key": CALLER_KEY})

    assert response.status_code == 200, response.data
    [call] = mock_upstream.calls
    assert other not in call.request.url and CALLER_KEY not in call.request.url
    assert [value for name, value in call.request.headers.items() if name.lower() == "x-goog-api-key"] == [CALLER_KEY]


@pytest.mark.parametrize("query", ["%24key={k}", "$key={k}", "access_token={k}", "oauth_token={k}", "KEY={k}"])
def test_only_googles_sdk_forms_authenticate_with_relay(managed, mock_upstream, google_error, query):
    answering(mock_upstream)
    response = post(managed, f"{GENERATE}?{query.format(k=CLIENT_KEY)}", headers={})

    google_error(response, 401, "UNAUTHENTICATED")
    assert CLIENT_KEY not in response.get_data(as_text=True)
    assert len(mock_upstream.calls) == 0


# -- response formats relay cannot read -----------------------------------------------------------------


REFUSED = [
    (GENERATE, "alt=proto"), (GENERATE, "%24alt=proto"), (GENERATE, "alt=media"), (GENERATE, "alt=sse"),
    (GENERATE, "alt=JSON"), (GENERATE, "ALT=json"), (GENERATE, "callback=steal"), (GENERATE, "%24callback=x"),
    (GENERATE, "%24ct=application%2Fx-protobuf"), (GENERATE, "%24httpMethod=GET"), (GENERATE, "%24.xgafv=1"),
    (GENERATE, "uploadType=media"), (GENERATE, "Fields=candidates"), (GENERATE, "fields=candidates(content"),
    (STREAM, "alt=proto"), (STREAM, "alt=sse&alt=json"), (STREAM, "alt=sse&%24alt=json%3Benum-encoding%3Dint"),
    (STREAM, "alt=sse%3Benum-encoding%3Dint"), (STREAM, "Alt=sse"), (STREAM, "alt=sse&%24fields=candidates)(x"),
    (f"/v1beta/models/{MODEL}:countTokens", "alt=sse"), ("/v1beta/cachedContents", "fields=name"),
]


@pytest.mark.parametrize("path, query", REFUSED)
def test_a_format_relay_cannot_read_is_a_400_and_nothing_is_sent(managed, mock_upstream, google_error, path, query):
    answering(mock_upstream)
    body = BODY if "cachedContents" not in path else json.dumps({"model": f"models/{MODEL}"}).encode()
    response = managed.post(f"{path}?{query}", data=body, headers=AUTH, content_type="application/json")

    wrapped = path == STREAM and "alt=sse" not in query.split("&")[:1]
    error = google_error(response, 400, "INVALID_ARGUMENT", wrapped=wrapped)
    assert error["details"][0]["fieldViolations"][0]["field"]
    assert len(mock_upstream.calls) == 0


def test_an_unauthenticated_caller_learns_nothing_about_parameters(managed, mock_upstream, google_error):
    google_error(post(managed, f"{GENERATE}?alt=proto", headers={}), 401, "UNAUTHENTICATED")


@pytest.mark.parametrize("path, query", [
    (GENERATE, "alt=json"), (GENERATE, "%24alt=json%3Benum-encoding%3Dint"), (GENERATE, "prettyPrint=false"),
    (GENERATE, "%24.xgafv=2"), (STREAM, "alt=sse&alt=sse"), (STREAM, "alt=sse&%24alt=sse"),
    (STREAM, "%24alt=json%3Benum-encoding%3Dint&%24prettyPrint=true"),
])
def test_formats_relay_reads_are_passed_on_as_sent(managed, mock_upstream, path, query):
    answering(mock_upstream, json.dumps(ANSWER).encode())
    response = post(managed, f"{path}?{query}")

    assert response.status_code == 200, response.data
    assert sent_query(mock_upstream) == parse_qsl(query)


# -- field masks: relay always sees usage ---------------------------------------------------------------


def masked(document, mask):
    """What Google returns under a field mask, at the top level (enough to hide or keep usageMetadata)."""
    if not mask or not mask.strip():
        return document
    paths = {re.split(r"[./(]", path.strip())[0] for path in re.sub(r"\([^()]*\)", "", mask).split(",")}
    if "*" in paths:
        return document
    return {name: value for name, value in document.items() if name in paths}


def google_with_masks(mock_upstream):
    """An upstream that applies the field masks it receives, as Google does, and records them."""
    seen = []

    def answer(request):
        query = dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True))
        masks = [mask for mask in (query.get("fields"), query.get("$fields"), request.headers.get("X-Goog-FieldMask"))
                 if mask is not None]
        seen.append(masks)
        document = ANSWER
        for mask in masks:
            document = masked(document, mask)
        if ":streamGenerateContent" in request.url:
            event = b"data: " + json.dumps(document).encode() + b"\r\n\r\n"
            return 200, {"Content-Type": "text/event-stream"}, event * 2
        return 200, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(document, indent=2).encode()

    mock_upstream.add_callback("POST", ANY_URL, callback=answer)
    return seen


def usage_total(app, request_id):
    services = app.extensions["relay"]
    services.usage.flush()
    [row] = [row for row in services.store.usage_rows(0) if row["request_id"] == request_id]
    return row["total_tokens"]


MASKS = [
    ("query", "fields=candidates"), ("query", "%24fields=candidates.content.parts"), ("query", "fields=modelVersion"),
    ("query", "fields=usageMetadata.promptTokenCount"), ("query", "fields=candidates(content(parts))"),
    ("query", "fields=candidates&fields=modelVersion"), ("query", "fields=candidates&%24fields=modelVersion"),
    ("header", "candidates"), ("header", "modelVersion,candidates(finishReason)"), ("both", "candidates"),
]


@pytest.mark.parametrize("where, mask", MASKS)
@pytest.mark.parametrize("path", [GENERATE, STREAM + "?alt=sse"], ids=["unary", "sse"])
def test_a_field_mask_never_hides_usage_from_accounting(app_factory, mock_upstream, path, where, mask):
    app = app_factory(MANAGED)
    seen = google_with_masks(mock_upstream)
    headers = dict(AUTH)
    query = mask if where in ("query", "both") else ""
    if where in ("header", "both"):
        headers["x-goog-fieldmask"] = mask.removeprefix("fields=")
    joiner = "&" if "?" in path else "?"
    response = post(app.test_client(), f"{path}{joiner}{query}" if query else path, headers=headers)

    assert response.status_code == 200, response.data
    assert all("usageMetadata" in sent for masks in seen for sent in masks)
    assert b"usageMetadata" in response.data
    assert usage_total(app, response.headers["X-Request-Id"]) == USAGE["totalTokenCount"]


def test_a_field_mask_cannot_slip_past_a_token_limit(app_factory, mock_upstream, google_error):
    app = app_factory({"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY})
    app.extensions["relay"].store.add_client_key(
        {"name": "team-a", "key_hash": hash_key(CLIENT_KEY), "created": time.time(), "tpm": 10})
    google_with_masks(mock_upstream)
    client = app.test_client()

    assert post(client, f"{GENERATE}?fields=candidates").status_code == 200  # 11 tokens, over the 10 a minute
    google_error(post(client, f"{GENERATE}?fields=candidates"), 429, "RESOURCE_EXHAUSTED")
    assert len(mock_upstream.calls) == 1


def test_a_mask_is_passed_on_untouched_where_relay_reads_nothing(managed, mock_upstream):
    answering(mock_upstream, b'{"totalTokens": 3}')
    response = post(managed, f"/v1beta/models/{MODEL}:countTokens?fields=totalTokens",
                    headers={**AUTH, "X-Goog-FieldMask": "totalTokens"})

    assert response.status_code == 200
    assert sent_query(mock_upstream) == [("fields", "totalTokens")]
    assert mock_upstream.calls[0].request.headers["X-Goog-FieldMask"] == "totalTokens"


# -- headers --------------------------------------------------------------------------------------------


def test_the_format_headers_are_relays_own(managed, mock_upstream):
    answering(mock_upstream, json.dumps(ANSWER).encode())
    headers = {**AUTH, "Accept": "application/x-protobuf", "Content-Type": "application/json; charset=utf-16"}
    response = managed.post(GENERATE, data=BODY, headers=headers)

    assert response.status_code == 200
    sent = mock_upstream.calls[0].request.headers
    assert sent["Accept"] == "*/*" and sent["Content-Type"] == "application/json"


def test_a_get_carries_no_content_type(managed, mock_upstream):
    answering(mock_upstream, b'{"models": []}')
    response = managed.get("/v1beta/models", headers={**AUTH, "Content-Type": "application/x-protobuf"})

    assert response.status_code == 200
    assert "Content-Type" not in mock_upstream.calls[0].request.headers


def test_billing_attribution_is_forwarded_for_the_callers_own_key_only(managed, passthrough, mock_upstream):
    answering(mock_upstream, json.dumps(ANSWER).encode())
    attribution = "quotaUser=u1&userProject=p1&%24userProject=p2&userIp=10.0.0.1"
    post(managed, f"{GENERATE}?{attribution}", headers={**AUTH, "X-Goog-User-Project": "other-project"})
    post(passthrough, f"{GENERATE}?{attribution}",
         headers={"x-goog-api-key": CALLER_KEY, "X-Goog-User-Project": "mine"})

    relays, callers = (call.request for call in mock_upstream.calls)
    assert urlsplit(relays.url).query == "" and "X-Goog-User-Project" not in relays.headers
    assert parse_qsl(urlsplit(callers.url).query) == parse_qsl(attribution)
    assert callers.headers["X-Goog-User-Project"] == "mine"


def compact(document):
    return json.dumps(document, separators=(",", ":")).encode()


@pytest.mark.parametrize("shape", ["unary", "large unary", "array", "sse"])
def test_compact_json_from_pretty_print_false_is_still_accounted(app_factory, mock_upstream, shape):
    # Google pretty-prints JSON unless prettyPrint=false: relay's framing reads both.
    app = app_factory(MANAGED)
    document = dict(ANSWER)
    if shape == "large unary":  # past the size relay reads whole: relayed in chunks, usage read from the tail
        document = {"candidates": [{"content": {"parts": [{"text": "x" * (2 * 1024 * 1024)}]}}], "usageMetadata": USAGE}
    body = {"unary": compact(document), "large unary": compact(document),
            "array": b"[" + compact(document) + b"," + compact(document) + b"]",
            "sse": b"data: " + compact(document) + b"\r\n\r\n"}[shape]
    answering(mock_upstream, body, "text/event-stream" if shape == "sse" else "application/json; charset=UTF-8")
    path = {"unary": GENERATE, "large unary": GENERATE, "array": STREAM, "sse": STREAM + "?alt=sse"}[shape]
    response = post(app.test_client(), f"{path}{'&' if '?' in path else '?'}prettyPrint=false")

    assert response.status_code == 200 and response.data == body
    assert ("prettyPrint", "false") in sent_query(mock_upstream)
    assert usage_total(app, response.headers["X-Request-Id"]) == USAGE["totalTokenCount"]
