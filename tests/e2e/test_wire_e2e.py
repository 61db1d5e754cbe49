"""What relay puts on the wire and answers, end to end (gunicorn, gevent worker, the fake upstream): no caller
credential in any form reaches Google, no field mask or response format hides usage from accounting, and no
path spelling is answered with a redirect to the caller's Host carrying its ?key=."""
from __future__ import annotations

import json
from http.client import HTTPConnection
from urllib.parse import parse_qsl

import pytest

from .harness import header_values, http, usage_rows

pytestmark = pytest.mark.timeout(120)

UPSTREAM_KEY = "AIzaSyWIREupstream0123456789abcdefghijk"
CLIENT_KEY = "sk-relay-client-wire-4Fq8Zp2Lm6"
WRONG_KEY = "sk-relay-wrong-wire-9Kd3Hs7Tn1"
OTHER_SECRETS = ("AIzaSyOTHERsecretA0123456789", "ya29.OTHERoauthB0123456789", "OTHERsecretC0123456789")
MODEL = "gemini-2.5-flash"
BODY = {"contents": [{"role": "user", "parts": [{"text": "why is the sky blue?"}]}]}
UNARY = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent"
AUTH = {"x-goog-api-key": CLIENT_KEY}


@pytest.fixture(scope="module")
def relay(module_relay_factory):
    return module_relay_factory(env={"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY}, workers=1)


def raw_get(relay, target, host="evil.example"):
    """GET ``target`` exactly as written (no client library normalises the path) with a hostile Host."""
    connection = HTTPConnection("127.0.0.1", relay.port, timeout=30)
    try:
        connection.request("GET", target, headers={"Host": host, "X-Forwarded-Host": host, "Connection": "close"})
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("target", [
    "//v1beta/models?key={key}", "/v1beta/models/?key={key}", "/v1beta//models?key={key}&pageSize=2",
    "///v1/v1beta/models//?key={key}", "/relay?key={key}", "//relay//?key={key}", "/relay/upstreams/?key={key}",
    "//healthz?key={key}",
])
def test_a_hostile_host_never_gets_a_redirect_or_the_key_back(relay, fake_upstream, target):
    for key in (CLIENT_KEY, WRONG_KEY):
        status, headers, body = raw_get(relay, target.format(key=key))
        assert not 300 <= status < 400, (target, status, headers)
        assert all(name.lower() != "location" for name, _value in headers)
        seen = json.dumps(headers) + body.decode("utf-8", "replace")
        assert key not in seen and "evil.example" not in seen, (target, seen[:300])
        if "models" in target:
            assert status == (200 if key == CLIENT_KEY else 401), (target, status, body[:300])
    for entry in fake_upstream.requests():
        assert entry["path"] == "/v1beta/models" and "key" not in entry["query"].lower()


def test_no_form_of_a_caller_credential_reaches_google(relay, fake_upstream):
    first, second, third = OTHER_SECRETS
    query = (f"%24key={first}&access_token={second}&%24access_token={third}&oauth_token={first}&KEY={second}"
             f"&bearer_token={third}&key={CLIENT_KEY}&%24oauth_token={first}")
    for path in (UNARY, STREAM + "?alt=sse"):
        joined = f"{path}{'&' if '?' in path else '?'}{query}"
        response = http().post(relay.url + joined, json=BODY, headers=AUTH, timeout=30)
        assert response.status_code == 200, response.text[:300]
    entries = fake_upstream.requests()
    assert len(entries) == 2
    for entry in entries:
        assert header_values(entry, "x-goog-api-key") == [UPSTREAM_KEY]
        sent = json.dumps(entry["headers"]) + entry["path"] + entry["query"]
        assert all(secret not in sent for secret in (*OTHER_SECRETS, CLIENT_KEY))
        assert {name for name, _value in parse_qsl(entry["query"])} <= {"alt"}


@pytest.mark.parametrize("path, query", [
    (UNARY, "alt=proto"), (UNARY, "%24alt=media"), (UNARY, "alt=sse"), (UNARY, "callback=cb"), (UNARY, "%24.xgafv=1"),
    (UNARY, "Fields=candidates"), (UNARY, "%24ct=application%2Fx-protobuf"), (STREAM, "alt=sse&alt=json"),
    (STREAM, "alt=sse%3Benum-encoding%3Dint"), (STREAM, "alt=sse&fields=candidates(content"),
])
def test_a_format_relay_cannot_read_is_refused_before_google(relay, fake_upstream, path, query):
    response = http().post(f"{relay.url}{path}?{query}", json=BODY, headers=AUTH, timeout=30)

    assert response.status_code == 400, response.text[:300]
    body = response.json()
    error = (body[0] if isinstance(body, list) else body)["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["details"][0]["fieldViolations"]
    assert fake_upstream.requests() == []


def test_field_masks_keep_usage_in_the_accounts(relay, fake_upstream):
    calls = [
        (f"{UNARY}?fields=candidates", {}),
        (f"{UNARY}?%24fields=modelVersion&fields=candidates.content", {}),
        (f"{STREAM}?alt=sse", {"X-Goog-FieldMask": "candidates"}),
        (STREAM, {"x-goog-fieldmask": "candidates(content(parts))"}),
    ]
    request_ids = []
    for path, headers in calls:
        with http().post(relay.url + path, json=BODY, headers={**AUTH, **headers}, timeout=30, stream=True) as answer:
            assert answer.status_code == 200
            assert answer.content  # the whole body: a stream's usage is recorded when it ends
            request_ids.append(answer.headers["X-Request-Id"])
    entries = fake_upstream.requests()
    assert len(entries) == len(calls)
    for entry in entries:
        masks = [value for name, value in parse_qsl(entry["query"]) if name in ("fields", "$fields")]
        masks += header_values(entry, "x-goog-fieldmask")
        assert masks and all(mask.endswith(",usageMetadata") for mask in masks), entry
    rows = usage_rows(relay.env["RELAY_DB"], request_ids)
    assert len(rows) == len(calls) and all(row["total_tokens"] > 0 for row in rows.values()), rows
