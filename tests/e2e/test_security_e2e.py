"""Security end to end: where keys may travel, what errors reveal, and what client input can never steer.

Every test here drives the real relay (gunicorn, 2 gevent workers) against the fake upstream and then
scans what everyone else could see: the upstream's request log, response bodies and headers, /metrics and
the relay's whole captured output (access log, gunicorn's error log, tracebacks).
"""
from __future__ import annotations

import hmac
import json
import socket
import threading
import time

import pytest

from relay.clients.auth import hash_key

from .harness import header_values, http

pytestmark = pytest.mark.timeout(120)

UPSTREAM_KEYS = ("AIzaSyUPSTREAMsecAAAA0123456789abcdefghi", "AIzaSyUPSTREAMsecBBBB0123456789abcdefghi")
CLIENT_KEY = "sk-relay-client-sec-7Gh2Kq9Lw3"
OTHER_CLIENT_KEY = "sk-relay-client-sec-other-5Tz8"
ADMIN_TOKEN = "admin-token-sec-Pq4Rs6Uv8W"
CALLER_GOOGLE_KEY = "AIzaSyCALLERpassthrough0123456789abcdef"
WRONG_KEY = "sk-relay-wrong-sec-1Ab2Cd3Ef4"
SECRETS = (*UPSTREAM_KEYS, CLIENT_KEY, OTHER_CLIENT_KEY, ADMIN_TOKEN, CALLER_GOOGLE_KEY, WRONG_KEY)
# What an error body must never name: relay's storage, its libraries, Python's internals.
INTERNALS = ("sqlite", "redis", "marshmallow", "werkzeug", "flask", "orjson", "urllib3", "requests.", "gunicorn",
             "gevent", "traceback", "client_keys", "key_health", "key_counters", "buckets", ".py", "0x7f")
MODEL = "gemini-2.5-flash"
BODY = {"contents": [{"role": "user", "parts": [{"text": "why is the sky blue?"}]}]}
UNARY = f"/v1beta/models/{MODEL}:generateContent"
SSE = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"


@pytest.fixture(scope="module")
def managed(module_relay_factory):
    return module_relay_factory(env={
        "RELAY_UPSTREAM_KEYS": ",".join(UPSTREAM_KEYS), "RELAY_API_KEYS": f"{CLIENT_KEY},{OTHER_CLIENT_KEY}",
        "RELAY_ADMIN_TOKEN": ADMIN_TOKEN, "RELAY_MAX_BODY_MB": "1",
    })


@pytest.fixture(scope="module")
def passthrough(module_relay_factory):
    return module_relay_factory(env={"RELAY_ADMIN_TOKEN": ADMIN_TOKEN}, workers=1)


def hashes(secret):
    """Forms of a secret that would be as bad to reveal: relay's stored hash, and the raw key's hex."""
    return (hash_key(secret), secret.encode().hex())


def assert_no_secrets(text, where, allowed=()):
    for secret in SECRETS:
        if secret in allowed:
            continue
        assert secret not in text, f"{where} carries {secret[:12]}…"
        for form in hashes(secret):
            assert form not in text, f"{where} carries a hash of {secret[:12]}…"


def assert_clean_error(response, code=None):
    """A Google-shaped error that names no secret and no internals."""
    body = response.json()
    if isinstance(body, list):
        [body] = body
    error = body["error"]
    assert list(error)[:3] == ["code", "message", "status"] and error["code"] == response.status_code
    if code is not None:
        assert response.status_code == code, response.text[:500]
    assert_no_secrets(response.text, "an error body")
    assert_no_secrets(json.dumps(dict(response.headers)), "error headers")
    lowered = response.text.lower()
    for word in INTERNALS:
        assert word not in lowered, f"the error body names {word!r}: {response.text[:300]}"
    return error


def assert_upstream_request_clean(entry, upstream_keys=UPSTREAM_KEYS):
    """The upstream got exactly one key, as x-goog-api-key, and nothing of the caller's credentials."""
    [sent_key] = header_values(entry, "x-goog-api-key")
    assert sent_key in upstream_keys
    assert not header_values(entry, "authorization") and not header_values(entry, "cookie")
    assert "key=" not in entry["query"].lower() and all(key not in entry["query"] for key in SECRETS)
    assert all(key not in entry["path"] for key in SECRETS)
    others = json.dumps([pair for pair in entry["headers"] if pair[0].lower() != "x-goog-api-key"])
    assert_no_secrets(others + (entry["body_text"] or ""), "the upstream request")


# -- where keys travel --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["header", "bearer", "query"])
def test_upstream_key_only_in_a_header_and_client_key_never_upstream(managed, fake_upstream, how):
    headers, query = {}, ""
    if how == "header":
        headers["x-goog-api-key"] = CLIENT_KEY
    elif how == "bearer":
        headers["Authorization"] = f"Bearer {CLIENT_KEY}"
    else:
        query = f"key={CLIENT_KEY}"
    session = http()
    base = managed.url + "/v1beta"
    calls = [
        ("POST", f"/models/{MODEL}:generateContent", BODY),
        ("POST", f"/models/{MODEL}:streamGenerateContent?alt=sse", BODY),
        ("POST", f"/models/{MODEL}:streamGenerateContent", BODY),
        ("POST", f"/models/{MODEL}:countTokens", BODY),
        ("POST", "/models/gemini-embedding-001:batchEmbedContents",
         {"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "x"}]}}]}),
        ("GET", "/models?pageSize=5", None),
        ("GET", f"/models/{MODEL}", None),
        ("POST", "/cachedContents", {"model": f"models/{MODEL}", "contents": BODY["contents"], "ttl": "60s"}),
    ]
    for method, path, body in calls:
        url = base + path + (("&" if "?" in path else "?") + query if query else "")
        response = session.request(method, url, json=body, headers=headers, timeout=30)
        assert response.status_code == 200, (path, response.text[:300])
        assert_no_secrets(response.text + json.dumps(dict(response.headers)), f"the answer to {path}")
    entries = fake_upstream.requests()
    assert len(entries) == len(calls)
    for entry in entries:
        assert_upstream_request_clean(entry)


def test_passthrough_forwards_the_callers_key_only_as_a_header(passthrough, fake_upstream):
    for headers, query in (({"x-goog-api-key": CALLER_GOOGLE_KEY}, ""), ({}, f"?key={CALLER_GOOGLE_KEY}&alt=sse")):
        path = UNARY if not query else f"/v1beta/models/{MODEL}:streamGenerateContent"
        response = http().post(passthrough.url + path + query, json=BODY, headers=headers, timeout=30)
        assert response.status_code == 200
    for entry in fake_upstream.requests():
        assert header_values(entry, "x-goog-api-key") == [CALLER_GOOGLE_KEY]
        assert CALLER_GOOGLE_KEY not in entry["query"] and CALLER_GOOGLE_KEY not in entry["path"]


def test_upstream_error_echoing_a_key_is_scrubbed(managed, passthrough, fake_upstream):
    def echoing(key):
        body = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": f"API key not valid: {key}.",
                          "details": [{"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": f"key={key}"}]}}
        return {"key": key, "status": 400, "body": body, "headers": {"X-Debug-Key": key}}

    fake_upstream.script([echoing(key) for key in (*UPSTREAM_KEYS, CALLER_GOOGLE_KEY)])
    for path in (UNARY, SSE, f"/v1beta/models/{MODEL}:streamGenerateContent"):
        response = http().post(managed.url + path, json=BODY, headers={"x-goog-api-key": CLIENT_KEY}, timeout=30)
        assert response.status_code == 400 and "[redacted]" in response.text
        assert_no_secrets(response.text + json.dumps(dict(response.headers)), "a relayed upstream error")
        relayed = http().post(passthrough.url + path, json=BODY, headers={"x-goog-api-key": CALLER_GOOGLE_KEY},
                              timeout=30)
        assert relayed.status_code == 400 and "[redacted]" in relayed.text
        assert CALLER_GOOGLE_KEY not in relayed.text + json.dumps(dict(relayed.headers))


# -- error bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("credentials", [
    {"x-goog-api-key": WRONG_KEY}, {"Authorization": f"Bearer {WRONG_KEY}"}, {"Authorization": f"Bearer {ADMIN_TOKEN}"},
    {"x-goog-api-key": hash_key(CLIENT_KEY)}, {"x-goog-api-key": CLIENT_KEY[:-1]},
    {"x-goog-api-key": CLIENT_KEY.upper()}, {},
])
def test_rejected_keys_are_never_echoed(managed, fake_upstream, credentials):
    for path in (UNARY, SSE, f"/v1beta/models/{MODEL}:streamGenerateContent", "/v1beta/models",
                 "/v1beta/cachedContents", "/relay/usage"):
        method = "GET" if path in ("/v1beta/models", "/v1beta/cachedContents", "/relay/usage") else "POST"
        response = http().request(method, managed.url + path, json=BODY if method == "POST" else None,
                                  headers=credentials, timeout=30)
        if path == "/relay/usage" and credentials.get("Authorization") == f"Bearer {ADMIN_TOKEN}":
            assert response.status_code == 200  # the admin token is good for the admin views only
            continue
        assert_clean_error(response, 401)
    assert all(entry["key"] in UPSTREAM_KEYS for entry in fake_upstream.requests())


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"contents": 5}', b'{"contents": [{"parts": [{"inlineData": {}}]}]}',
                                  b"\xff\xfe", b'{"contents": [{"role": "' + b"x" * 5000 + b'"}]}'])
def test_validation_errors_name_no_internals(managed, fake_upstream, body):
    response = http().post(managed.url + UNARY, data=body, timeout=30,
                           headers={"x-goog-api-key": CLIENT_KEY, "Content-Type": "application/json"})
    assert_clean_error(response, 400)
    assert fake_upstream.requests() == [], "invalid input never reaches the upstream"


def test_unreachable_upstream_error_names_no_host_or_library(module_relay_factory, fake_upstream):
    dead = module_relay_factory(env={"RELAY_UPSTREAM_KEYS": UPSTREAM_KEYS[0], "RELAY_API_KEYS": CLIENT_KEY,
                                     "RELAY_CONNECT_TIMEOUT": "2"}, workers=1,
                                upstream_url="http://127.0.0.1:9")
    response = http().post(dead.url + UNARY, json=BODY, headers={"x-goog-api-key": CLIENT_KEY}, timeout=30)
    error = assert_clean_error(response, 503)
    assert "127.0.0.1" not in error["message"] and ":9" not in error["message"]
    assert_no_secrets(dead.output_text(), "the relay's output")


# -- no client input steers the upstream -------------------------------------------------------------


class Canary:
    """A loopback listener no request should ever reach: relay may only talk to its configured upstream."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hits = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.is_set():
            try:
                conn, addr = self.sock.accept()
            except OSError:
                continue
            self.hits.append(addr)
            conn.close()

    def close(self):
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def canary():
    listener = Canary()
    yield listener
    listener.close()


def test_no_ssrf_through_model_names_headers_or_body(managed, fake_upstream, canary):
    elsewhere = f"127.0.0.1:{canary.port}"
    headers = {"x-goog-api-key": CLIENT_KEY, "Host": elsewhere, "X-Forwarded-Host": elsewhere,
               "X-Forwarded-Proto": "https", "Forwarded": f"host={elsewhere}", "X-Original-URL": f"http://{elsewhere}/",
               "X-Rewrite-URL": f"http://{elsewhere}/", "X-Goog-User-Project": f"http://{elsewhere}/"}
    models = [f"@{elsewhere}", f"{elsewhere}", f"http:%2F%2F{elsewhere}", f"%2F%2F{elsewhere}%2F", "..%2F..%2F",
              f"models%2F..%2F..%2F{elsewhere}", "%40127.0.0.1", "gemini-2.5-flash%23@127.0.0.1"]
    for model in models:
        response = http().post(f"{managed.url}/v1beta/models/{model}:generateContent", json=BODY, headers=headers,
                               timeout=30)
        assert response.status_code in (200, 400, 404), (model, response.status_code)
        if response.status_code != 200:
            assert_clean_error(response)
    bodies = [
        {**BODY, "model": f"http://{elsewhere}/"},
        {**BODY, "cachedContent": f"http://{elsewhere}/cachedContents/x"},
        {**BODY, "cachedContent": f"cachedContents/../../{elsewhere}"},
        {"contents": [{"parts": [{"fileData": {"fileUri": f"http://{elsewhere}/file", "mimeType": "text/plain"}}]}]},
    ]
    for body in bodies:
        response = http().post(managed.url + UNARY, json=body, headers=headers, timeout=30)
        assert response.status_code in (200, 400, 403, 404)
    for query in (f"alt=sse&url=http://{elsewhere}", f"$alt=json&upstream={elsewhere}", f"%24alt=x&host={elsewhere}"):
        http().post(f"{managed.url}{UNARY}?{query}", json=BODY, headers=headers, timeout=30)
    time.sleep(0.5)
    assert canary.hits == [], "relay connected to an address a client gave it"
    upstream_host = f"127.0.0.1:{fake_upstream.port}"
    for entry in fake_upstream.requests():
        assert header_values(entry, "host") == [upstream_host]
        assert entry["path"].startswith("/v1beta/models/") and ".." not in entry["path"]
        assert not any(name.lower().startswith(("x-forwarded", "forwarded", "x-original", "x-rewrite"))
                       for name, _value in entry["headers"])


@pytest.mark.parametrize("model", ["..", "..%2F..%2Frelay%2Fupstreams", "%2E%2E", "%2e%2e%2f%2e%2e", "a%2Fb",
                                   "..%5C..%5C", "%252e%252e", "models%2F..%2Fadmin", "a%00b", ".%2E", "...."])
def test_encoded_path_traversal_in_model_ids(managed, fake_upstream, model):
    for suffix in (":generateContent", ""):
        method = "POST" if suffix else "GET"
        response = http().request(method, f"{managed.url}/v1beta/models/{model}{suffix}", json=BODY if suffix else None,
                                  headers={"x-goog-api-key": CLIENT_KEY}, timeout=30)
        assert response.status_code in (400, 404), (model, suffix, response.status_code, response.text[:200])
        assert_clean_error(response)
    assert fake_upstream.requests() == []


def test_crlf_injection_through_model_names_query_and_headers(managed, fake_upstream):
    for model in ("gemini%0D%0AX-Injected:%20yes", "gemini%0AX-Injected:yes", "gemini%E5%98%8A%E5%98%8DX-Injected:yes"):
        response = http().post(f"{managed.url}/v1beta/models/{model}:generateContent", json=BODY,
                               headers={"x-goog-api-key": CLIENT_KEY}, timeout=30)
        assert response.status_code in (400, 404)
        assert "X-Injected" not in response.headers
    response = http().post(f"{managed.url}{UNARY}?alt=json%0D%0AX-Injected:%20yes&x=%0D%0A%0D%0AGET%20/evil",
                           json=BODY, headers={"x-goog-api-key": CLIENT_KEY}, timeout=30)
    assert "X-Injected" not in response.headers
    # A header value with an obs-fold continuation, sent raw: gunicorn must not let it become two headers.
    body = json.dumps(BODY).encode()
    raw = (f"POST {UNARY} HTTP/1.1\r\nHost: relay\r\nx-goog-api-key: {CLIENT_KEY}\r\n"
           f"User-Agent: probe\r\n X-Injected: folded\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    answer = raw_exchange(managed.port, raw)
    assert answer.startswith(b"HTTP/1.1 ")
    for entry in fake_upstream.requests():
        names = [name.lower() for name, _value in entry["headers"]]
        assert "x-injected" not in names
        assert all("\r" not in value and "\n" not in value for _name, value in entry["headers"])
        assert "\r" not in entry["query"] and "\n" not in entry["query"]
        assert all(line for line in [entry["path"]]) and " " not in entry["path"]


def raw_exchange(port, data: bytes, timeout=10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    return received


# -- sizes -------------------------------------------------------------------------------------------


def test_oversized_body_is_a_google_413_and_never_forwarded(managed, fake_upstream):
    big = {"contents": [{"parts": [{"text": "x" * (2 * 1024 * 1024)}]}]}
    response = http().post(managed.url + UNARY, json=big, headers={"x-goog-api-key": CLIENT_KEY}, timeout=60)
    assert_clean_error(response, 413)
    assert fake_upstream.requests() == []


def test_oversized_chunked_body_is_a_google_413(managed, fake_upstream):
    data = json.dumps({"contents": [{"parts": [{"text": "x" * (2 * 1024 * 1024)}]}]}).encode()

    def chunked():
        for start in range(0, len(data), 256 * 1024):
            yield data[start:start + 256 * 1024]
    response = http().post(managed.url + SSE, data=chunked(), timeout=60,
                           headers={"x-goog-api-key": CLIENT_KEY, "Content-Type": "application/json"})
    assert fake_upstream.requests() == []
    assert_clean_error(response, 413)


@pytest.mark.parametrize("size", [9000, 20000, 70000])
def test_oversized_headers_are_refused_and_the_worker_lives(managed, fake_upstream, size):
    response = http().post(managed.url + UNARY, json=BODY, timeout=30,
                           headers={"x-goog-api-key": CLIENT_KEY, "X-Goog-Api-Client": "a" * size})
    if size <= 16384:  # gunicorn.conf.py: limit_request_field_size = 16384
        assert response.status_code == 200
    else:
        assert response.status_code in (400, 431)
    many = {f"X-Pad-{index}": "y" for index in range(120)}
    response = http().post(managed.url + UNARY, json=BODY, timeout=30, headers={"x-goog-api-key": CLIENT_KEY, **many})
    assert response.status_code in (400, 431)
    assert http().get(managed.url + "/healthz", timeout=10).status_code == 200


def test_oversized_query_and_request_line(managed, fake_upstream):
    response = http().get(f"{managed.url}/v1beta/models?pageToken={'p' * 10000}&key={CLIENT_KEY}", timeout=30)
    assert response.status_code in (400, 414)
    assert CLIENT_KEY not in response.text
    assert fake_upstream.requests() == []


# -- the admin token -----------------------------------------------------------------------------------


ADMIN_PATHS = ("/relay/upstreams", "/metrics", "/debug/runtime")


@pytest.mark.parametrize("credentials", [
    {}, {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"}, {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    {"Authorization": ADMIN_TOKEN}, {"Authorization": f"Basic {ADMIN_TOKEN}"}, {"x-goog-api-key": ADMIN_TOKEN},
    {"Authorization": f"Bearer {CLIENT_KEY}"}, {"Authorization": f"Bearer {UPSTREAM_KEYS[0]}"},
    {"Authorization": f"Bearer {hash_key(ADMIN_TOKEN)}"},
])
def test_admin_token_required_everywhere(managed, credentials):
    for path in ADMIN_PATHS:
        response = http().get(managed.url + path, headers=credentials, timeout=30)
        assert_clean_error(response, 401)
    response = http().get(managed.url + f"/relay/upstreams?key={ADMIN_TOKEN}", timeout=30)
    assert_clean_error(response, 401)
    # A client key sees its own usage only; nobody else's with anything less than the admin token.
    usage = http().get(managed.url + "/relay/usage", headers=credentials, timeout=30)
    if credentials.get("Authorization") == f"Bearer {CLIENT_KEY}":
        assert usage.status_code == 200 and usage.json()["client"] not in (None, "")
    else:
        assert_clean_error(usage, 401)


def test_admin_token_opens_the_admin_views_and_is_no_client_key(managed, fake_upstream):
    for path in ADMIN_PATHS + ("/relay/usage",):
        assert http().get(managed.url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30).status_code == 200
    for credentials in ({"x-goog-api-key": ADMIN_TOKEN}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}):
        response = http().post(managed.url + UNARY, json=BODY, headers=credentials, timeout=30)
        assert_clean_error(response, 401)
    report = http().get(managed.url + "/relay/upstreams", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    assert_no_secrets(report.text, "/relay/upstreams")


def test_admin_views_are_off_without_an_admin_token(module_relay_factory):
    relay = module_relay_factory(env={"RELAY_UPSTREAM_KEYS": UPSTREAM_KEYS[0], "RELAY_API_KEYS": CLIENT_KEY}, workers=1)
    for path in ("/relay/upstreams", "/debug/runtime"):
        for credentials in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
            assert_clean_error(http().get(relay.url + path, headers=credentials, timeout=30), 403)


def test_key_comparisons_are_constant_time(monkeypatch):
    """Timing is not measured (a shared CI box is too noisy); the comparisons are checked instead."""
    from relay.api import admin, ops
    from relay.clients.auth import Authenticator, presents_admin_token, require_admin_token
    from relay.config import load_settings
    from relay.store.sqlite import SqliteStore

    calls = []
    real = hmac.compare_digest

    def counting(left, right):
        calls.append((left, right))
        return real(left, right)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    keys = [f"sk-static-{index:02d}-abcdefgh" for index in range(10)]
    settings = load_settings({"RELAY_UPSTREAM_KEYS": "up", "RELAY_API_KEYS": ",".join(keys), "RELAY_DB": ":memory:"})
    auth = Authenticator(settings, SqliteStore(":memory:"))
    for presented in (keys[0], keys[-1]):
        calls.clear()
        auth.authenticate(presented)
        assert len(calls) == len(keys), "every static key is compared, whichever matches"
    # One admin-token check serves every admin surface, and it compares in constant time.
    assert "compare_digest" in presents_admin_token.__code__.co_names
    assert "presents_admin_token" in require_admin_token.__code__.co_names
    assert ops.require_admin_token is admin.require_admin_token is require_admin_token


# -- what everyone could read -------------------------------------------------------------------------


def test_malformed_requests_do_not_log_query_keys(managed):
    before = len(managed.output_text())
    for line in (f"GET /v1beta/models?key={CLIENT_KEY}", f"GET  /v1beta/models?key={CLIENT_KEY} HTTP/1.1",
                 f"GET\t/v1beta/models?key={CLIENT_KEY} HTTP/1.1", f"GET /v1beta/models?key={CLIENT_KEY}\x00 HTTP/1.1",
                 f"GET /v1beta/models?key={CLIENT_KEY} HTTP/1.1 extra", f"GET /v1beta/models?key={CLIENT_KEY} HTTP/9.9"):
        answer = raw_exchange(managed.port, line.encode("latin-1") + b"\r\nHost: relay\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400")
    raw_exchange(managed.port, f"GET /v1beta/models?key={CLIENT_KEY}&x={'y' * 9000} HTTP/1.1\r\nHost: r\r\n\r\n".encode())
    time.sleep(0.5)
    assert_no_secrets(managed.output_text()[before:], "gunicorn's error log")


def test_no_secret_in_logs_or_metrics(managed, passthrough):
    """Runs last in this module: everything above has been logged by now."""
    metrics = http().get(managed.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30).text
    assert_no_secrets(metrics, "/metrics")
    assert "AIza" not in metrics
    time.sleep(1.5)  # streams log when their body is done; the usage flusher runs every second
    for relay in (managed, passthrough):
        output = relay.output_text()
        assert_no_secrets(output, "the relay's output")
        assert "Traceback" not in output
