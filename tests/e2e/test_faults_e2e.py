"""Fault injection end to end: real gunicorn (2 gevent workers) against a fake upstream that misbehaves.

For every fault the caller gets a Google-shaped error (before the first byte) or one in-band error event
(after it), the workers stay up, usage rows are written for every request, and afterwards each worker's
file descriptors, client sockets and greenlets are back to where they were before the storm.
"""
from __future__ import annotations

import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .harness import WorkerProbe, http, usage_rows, wait_until

pytestmark = pytest.mark.timeout(120)

CLIENT_KEY = "client-key-faults-Xy12ab"
UPSTREAM_KEYS = ("up-key-faults-a1b2c3", "up-key-faults-d4e5f6")
ADMIN_TOKEN = "admin-token-faults-Qq77zz"
MODEL = "gemini-2.5-flash"
BODY = {"contents": [{"role": "user", "parts": [{"text": "why is the sky blue?"}]}]}
UNARY = f"/v1beta/models/{MODEL}:generateContent"
SSE = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
ARRAY = f"/v1beta/models/{MODEL}:streamGenerateContent"
HEADERS = {"x-goog-api-key": CLIENT_KEY}
STATUS_NAMES = {500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


@pytest.fixture(scope="module")
def relay(module_relay_factory):
    return module_relay_factory(env={
        "RELAY_UPSTREAM_KEYS": ",".join(UPSTREAM_KEYS), "RELAY_API_KEYS": CLIENT_KEY, "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "RELAY_READ_TIMEOUT": "3", "RELAY_CONNECT_TIMEOUT": "3", "RELAY_MAX_ATTEMPTS": "2", "RELAY_RETRY_DEADLINE": "30",
        # gunicorn drops a connection whose request head is not complete within keepalive (75 s in
        # gunicorn.conf.py); 3 s here so the slowloris test ends quickly.
        "GUNICORN_CMD_ARGS": "--keep-alive 3",
    })


@pytest.fixture(scope="module")
def probe(relay, fake_upstream_process):
    probe = WorkerProbe(relay, ADMIN_TOKEN, upstream_port=fake_upstream_process.port)
    # Warm every worker (metrics files, the flusher, the store connection, the upstream pool) first;
    # concurrently, because one idle worker may accept every connection of a sequential loop.
    def call(index):
        path = SSE if index % 2 else UNARY
        http().post(relay.url + path, json=BODY, headers={**HEADERS, "Connection": "close"}, timeout=30).close()

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(call, range(60)))
    return probe


@pytest.fixture
def storm(relay, probe, fake_upstream):
    """The workers' baseline before a test; after it: same workers, no tracebacks, back to the baseline."""
    pids = probe.pids()
    output_before = len(relay.output_text())
    baseline = probe.snapshot()
    yield fake_upstream
    assert probe.pids() == pids, "a worker died or was replaced"
    new_output = relay.output_text()[output_before:]
    assert "Traceback" not in new_output and "WORKER TIMEOUT" not in new_output, new_output[-3000:]
    fake_upstream.reset()
    problems = probe.wait_for_baseline(baseline, timeout=30)
    assert not problems, problems


def assert_google_error(response, code, status=None, wrapped=False):
    body = response.json()
    if wrapped:
        assert isinstance(body, list) and len(body) == 1, response.content[:500]
        body = body[0]
    assert response.status_code == code, response.content[:500]
    assert list(body) == ["error"] and list(body["error"])[:3] == ["code", "message", "status"], response.content[:500]
    assert body["error"]["code"] == code
    if status:
        assert body["error"]["status"] == status
    return body["error"]


def sse_payloads(raw: bytes) -> list[dict]:
    return [json.loads(block[len(b"data: "):]) for block in raw.split(b"\r\n\r\n") if block.strip()]


def post(relay, path, timeout=60, **kwargs):
    return http().post(relay.url + path, json=BODY, headers=HEADERS, timeout=timeout, **kwargs)


def request_ids(*responses):
    return [response.headers["X-Request-Id"] for response in responses]


# -- the upstream fails before the response headers -------------------------------------------------


@pytest.mark.parametrize("mode", ["rst", "close"])
def test_reset_before_headers_is_a_google_503_after_every_attempt(relay, storm, mode):
    storm.script({"reset_before_headers": True, "cut_mode": mode})
    unary, sse, array = post(relay, UNARY), post(relay, SSE), post(relay, ARRAY)
    assert_google_error(unary, 503, "UNAVAILABLE")
    assert_google_error(sse, 503, "UNAVAILABLE")
    assert sse.headers["Content-Type"].startswith("text/event-stream")
    assert_google_error(array, 503, "UNAVAILABLE", wrapped=True)
    assert len(storm.requests()) == 6, "two attempts (RELAY_MAX_ATTEMPTS=2) per call"
    rows = usage_rows(relay.env["RELAY_DB"], request_ids(unary, sse, array))
    assert sorted(row["status"] for row in rows.values()) == [503, 503, 503]


def test_one_reset_fails_over_to_the_next_key(relay, storm):
    storm.script({"reset_before_headers": True, "times": 1})
    response = post(relay, UNARY)
    assert response.status_code == 200 and response.json()["candidates"]
    first, second = storm.requests()
    assert first["key"] != second["key"] and {first["key"], second["key"]} <= set(UPSTREAM_KEYS)


@pytest.mark.parametrize("size", [1, 200, 70_000])
def test_garbage_instead_of_http_is_a_google_503(relay, storm, size):
    storm.script({"garbage_bytes": size})
    assert_google_error(post(relay, UNARY), 503, "UNAVAILABLE")
    assert_google_error(post(relay, ARRAY), 503, "UNAVAILABLE", wrapped=True)


def test_upstream_that_never_answers_is_a_google_504(relay, storm):
    storm.script({"hang": True, "forever_max_s": 30})
    started = time.monotonic()
    response = post(relay, SSE)
    assert_google_error(response, 504, "DEADLINE_EXCEEDED")
    assert time.monotonic() - started < 30, "two attempts of RELAY_READ_TIMEOUT=3 s each"
    assert len(storm.requests()) == 2
    assert usage_rows(relay.env["RELAY_DB"], request_ids(response))[response.headers["X-Request-Id"]]["status"] == 504


def test_html_502_page_becomes_a_google_error(relay, storm):
    storm.script({"html_502": True})
    unary = post(relay, UNARY)
    assert b"<html" not in unary.content.lower()
    assert_google_error(unary, 502)
    assert_google_error(post(relay, ARRAY), 502, wrapped=True)


def test_html_502_page_is_retried_and_never_crashes(relay, storm):
    storm.script({"html_502": True})
    response = post(relay, UNARY)
    assert response.status_code == 502
    assert len(storm.requests()) == 2, "a 502 is retried on the next key"
    assert usage_rows(relay.env["RELAY_DB"], request_ids(response))[response.headers["X-Request-Id"]]["status"] == 502


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_storm(relay, storm, status):
    storm.script({"status": status})
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda index: post(relay, (UNARY, SSE, ARRAY)[index % 3]), range(60)))
    for index, response in enumerate(responses):
        error = assert_google_error(response, status, wrapped=index % 3 == 2)
        assert error["message"]
    assert len(storm.requests()) == 120
    rows = usage_rows(relay.env["RELAY_DB"], request_ids(*responses))
    assert len(rows) == 60 and {row["status"] for row in rows.values()} == {status}
    assert {row["upstream_status"] for row in rows.values()} == {status}


# -- the upstream fails after the response headers ------------------------------------------------


@pytest.mark.parametrize("path", [SSE, ARRAY])
@pytest.mark.parametrize("mid_event", [False, True])
def test_reset_mid_stream_ends_with_one_in_band_error(relay, storm, path, mid_event):
    storm.script({"cut_after_events": 2, "cut_mid_event": mid_event, "gap_ms": 20})
    response = post(relay, path)
    assert response.status_code == 200
    if path == SSE:
        events = sse_payloads(response.content)
    else:
        events = json.loads(response.content)  # still one valid JSON array
    assert len(events) == 3, response.content[-500:]
    assert all("candidates" in event for event in events[:2])
    assert events[-1]["error"]["code"] == 503 and events[-1]["error"]["status"] == "UNAVAILABLE"
    row = usage_rows(relay.env["RELAY_DB"], request_ids(response))[response.headers["X-Request-Id"]]
    assert row["aborted"] and row["streamed"]


@pytest.mark.parametrize("path", [SSE, ARRAY])
def test_reset_right_after_headers(relay, storm, path):
    storm.script({"cut_after_events": 0})
    response = post(relay, path)
    payload = sse_payloads(response.content) if path == SSE else json.loads(response.content)
    # Either the error reached the caller as the status (nothing was sent yet) or as the one event.
    if response.status_code == 200:
        assert len(payload) == 1 and payload[0]["error"]["code"] == 503
    else:
        assert_google_error(response, 503, wrapped=path == ARRAY)


@pytest.mark.parametrize("path", [SSE, ARRAY])
def test_garbage_stream_body_ends_with_an_in_band_error(relay, storm, path):
    storm.script({"body_garbage_bytes": 5000})
    response = post(relay, path)
    assert response.status_code == 200
    assert b"\x00" not in response.content and len(response.content) < 2000, "noise is never relayed"
    payload = sse_payloads(response.content) if path == SSE else json.loads(response.content)
    assert payload[-1]["error"]["status"] == "UNAVAILABLE"


def test_50_mb_single_line_event_is_relayed_whole(relay, storm):
    storm.script({"line_mb": 50})
    with http().post(relay.url + SSE, json=BODY, headers=HEADERS, stream=True, timeout=120) as response:
        assert response.status_code == 200
        raw = b"".join(response.iter_content(chunk_size=1 << 20))
    events = sse_payloads(raw)
    assert len(events) == 2 and "error" not in events[-1]
    assert len(events[1]["candidates"][0]["content"]["parts"][0]["text"]) > 50_000_000
    row = usage_rows(relay.env["RELAY_DB"], request_ids(response))[response.headers["X-Request-Id"]]
    assert row["total_tokens"] == events[1]["usageMetadata"]["totalTokenCount"] and not row["aborted"]


# -- slow and vanishing peers ---------------------------------------------------------------------------


def test_slow_drip_upstream_does_not_block_the_worker_and_is_closed_on_hang_up(relay, storm):
    storm.script({"path_contains": "streamGenerateContent", "drip_bytes_per_s": 1})
    test_started = time.time()
    sock = send_only(relay, SSE)
    assert wait_until(storm.requests, timeout=10)
    for _attempt in range(5):  # the worker serving the drip answers others meanwhile
        started = time.monotonic()
        assert http().get(relay.url + "/healthz", timeout=10).status_code == 200
        assert post(relay, UNARY).status_code == 200
        assert time.monotonic() - started < 10
    sock.close()  # hung up before the first (dripping) event was complete
    closed = wait_until(storm.closed, timeout=15)
    assert closed and closed[0]["path"].endswith(":streamGenerateContent")
    stream_rows = wait_until(lambda: [row for row in rows_since(relay, test_started) if row["streamed"]], timeout=10)
    assert len(stream_rows) == 1 and stream_rows[0]["aborted"], "the hung-up stream has its usage row"


def send_only(relay, path) -> socket.socket:
    """A raw call whose request is sent in full; nothing is read."""
    body = json.dumps(BODY).encode()
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: relay\r\nx-goog-api-key: {CLIENT_KEY}\r\nContent-Type: application/json"
                 f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def rows_since(relay, since):
    from relay.store.sqlite import SqliteStore

    store = SqliteStore(relay.env["RELAY_DB"])
    try:
        return store.usage_rows(since, limit=1000)
    finally:
        store.close()


def test_caller_hanging_up_on_a_dripping_unary_frees_the_upstream(relay, storm):
    # The fake gives up by itself after 6 bytes (about 6 s), so that a relay that does not notice the
    # hang-up fails this test (nothing in the closed list) but recovers before the next one.
    storm.script({"path_contains": ":generateContent", "drip_bytes_per_s": 1, "cut_after_bytes": 6})
    with pytest.raises(requests.RequestException):
        http().post(relay.url + UNARY, json=BODY, headers=HEADERS, timeout=2)
    assert wait_until(storm.closed, timeout=4), "the upstream connection is still being read"


def test_slow_reading_client_gets_every_byte(relay, storm):
    storm.script({"image_mb": 2})
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    body = json.dumps(BODY).encode()
    sock.sendall(f"POST {SSE} HTTP/1.1\r\nHost: relay\r\nx-goog-api-key: {CLIENT_KEY}\r\nContent-Type: application/json"
                 f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    received = bytearray()
    time.sleep(1.0)  # let relay fill every buffer between us and the fake upstream
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        data = sock.recv(16384)
        if not data:
            break
        received += data
        time.sleep(0.005)
    sock.close()
    head, _, chunked = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    content = dechunk(chunked)
    events = sse_payloads(content)
    assert len(events) == 2 and "error" not in events[-1]
    assert len(events[1]["candidates"][0]["content"]["parts"][0]["inlineData"]["data"]) > 2_000_000


def dechunk(raw: bytes) -> bytes:
    out, position = bytearray(), 0
    while True:
        line_end = raw.index(b"\r\n", position)
        size = int(raw[position:line_end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += raw[line_end + 2:line_end + 2 + size]
        position = line_end + 2 + size + 2


def open_stream(relay, path=SSE) -> tuple[socket.socket, str]:
    """A raw streaming call that has received its headers and its first event; returns (socket, request id)."""
    body = json.dumps(BODY).encode()
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=60)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: relay\r\nx-goog-api-key: {CLIENT_KEY}\r\nContent-Type: application/json"
                 f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    received = b""
    while b"\r\n\r\n" not in received or b"data: " not in received.partition(b"\r\n\r\n")[2]:
        data = sock.recv(65536)
        assert data, f"relay closed the stream early: {received[:300]!r}"
        received += data
    head = received.partition(b"\r\n\r\n")[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 200"), head
    request_id = next(line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("x-request-id:"))
    return sock, request_id


def test_200_callers_hang_up_mid_stream_at_once(relay, storm):
    storm.script({"path_contains": "streamGenerateContent", "stream_forever": True, "gap_ms": 250, "forever_max_s": 120})
    with ThreadPoolExecutor(20) as pool:
        opened = list(pool.map(lambda _index: open_stream(relay), range(200)))
    metrics = http().get(relay.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30).text
    assert "relay_open_streams 200.0" in metrics
    for sock, _request_id in opened:  # all at once: RST, the way a killed client goes
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    closed = wait_until(lambda: (lambda got: got if len(got) >= 200 else None)(storm.closed()), timeout=30)
    assert closed and len(closed) == 200, "relay closed every upstream stream once its caller was gone"
    rows = usage_rows(relay.env["RELAY_DB"], [request_id for _sock, request_id in opened], timeout=20)
    assert len(rows) == 200 and all(row["aborted"] and row["streamed"] for row in rows.values())

    def no_open_streams():
        text = http().get(relay.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30).text
        return "relay_open_streams 0.0" in text
    assert wait_until(no_open_streams, timeout=15)


def test_slowloris_client_is_cut_and_others_are_served(relay, storm):
    sockets = []
    for _index in range(40):
        sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        sock.sendall(b"POST " + UNARY.encode() + b" HTTP/1.1\r\nHost: relay\r\n")
        sockets.append(sock)
    cut = set()
    deadline = time.monotonic() + 20
    while len(cut) < len(sockets) and time.monotonic() < deadline:
        for index, sock in enumerate(sockets):
            if index in cut:
                continue
            try:
                sock.sendall(b"X")
                sock.settimeout(0.001)
                if sock.recv(1) == b"":
                    cut.add(index)
            except (BlockingIOError, socket.timeout):
                pass
            except OSError:
                cut.add(index)
            finally:
                sock.settimeout(10)
        started = time.monotonic()
        assert http().get(relay.url + "/healthz", timeout=10).status_code == 200
        assert time.monotonic() - started < 10, "a slowloris client must not stall the worker"
        time.sleep(0.3)
    for sock in sockets:
        sock.close()
    assert len(cut) == len(sockets), "gunicorn drops a request head that takes longer than keepalive"


def test_slow_body_client_does_not_block_the_worker(relay, storm):
    """A caller trickling its body: relay keeps serving others, and nothing is left once it leaves."""
    body = json.dumps(BODY).encode()
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    sock.sendall(f"POST {UNARY} HTTP/1.1\r\nHost: relay\r\nx-goog-api-key: {CLIENT_KEY}\r\nContent-Type: application/json"
                 f"\r\nContent-Length: {len(body)}\r\n\r\n".encode())
    for index in range(6):
        sock.sendall(body[index:index + 1])
        assert post(relay, UNARY).status_code == 200
        time.sleep(0.3)
    sock.close()
    assert all(entry["body_len"] == len(body) for entry in storm.requests()), "nothing partial went upstream"


def test_workers_share_the_load_and_never_restart(relay, probe):
    """Across the whole module: the same two workers, never killed by gunicorn's timeout."""
    output = relay.output_text()
    assert "WORKER TIMEOUT" not in output and "was sent SIGKILL" not in output
    assert "Booting worker" in output and output.count("Booting worker") == 2, output[-2000:]
    assert len(probe.pids()) == 2


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not os.environ.get("RELAY_SOAK"), reason="soak variant: RELAY_SOAK=1 [RELAY_SOAK_SECONDS=300]")
def test_soak_mixed_faults_return_to_baseline(relay, storm):
    """Rounds of every fault at once for RELAY_SOAK_SECONDS; after each round the workers are back to baseline."""
    baseline = WorkerProbe(relay, ADMIN_TOKEN, upstream_port=storm.port).snapshot()
    deadline = time.monotonic() + float(os.environ.get("RELAY_SOAK_SECONDS", "300"))
    rounds = 0
    while time.monotonic() < deadline and rounds < 1000:
        rounds += 1
        storm.reset()
        storm.script([
            {"body_contains": "reset", "reset_before_headers": True},
            {"body_contains": "garbage", "garbage_bytes": 300},
            {"body_contains": "storm", "status": 503},
            {"body_contains": "html", "html_502": True},
            {"body_contains": "cut", "cut_after_events": 2, "cut_mid_event": True},
            {"body_contains": "forever", "stream_forever": True, "gap_ms": 100, "forever_max_s": 60},
        ])

        def call(index):
            kind = ("reset", "garbage", "storm", "html", "cut", "fine")[index % 6]
            body = {"contents": [{"parts": [{"text": kind}]}]}
            path = (UNARY, SSE, ARRAY)[index % 3]
            response = http().post(relay.url + path, json=body, headers={**HEADERS, "Connection": "close"}, timeout=60)
            assert response.status_code < 500 or response.json()
            return response.headers["X-Request-Id"]

        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(call, range(120)))
            streams = list(pool.map(lambda _index: open_stream_with(relay, "forever"), range(50)))
        for sock, request_id in streams:
            sock.close()
            ids.append(request_id)
        assert len(usage_rows(relay.env["RELAY_DB"], ids, timeout=30)) == len(ids)
        problems = WorkerProbe(relay, ADMIN_TOKEN, upstream_port=storm.port).wait_for_baseline(baseline, timeout=60)
        assert not problems, (rounds, problems)


def open_stream_with(relay, text):
    body = json.dumps({"contents": [{"parts": [{"text": text}]}]}).encode()
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=60)
    sock.sendall(f"POST {SSE} HTTP/1.1\r\nHost: relay\r\nx-goog-api-key: {CLIENT_KEY}\r\nContent-Type: application/json"
                 f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    received = b""
    while b"data: " not in received.partition(b"\r\n\r\n")[2]:
        data = sock.recv(65536)
        assert data, received[:300]
        received += data
    head = received.partition(b"\r\n\r\n")[0].decode("latin-1")
    return sock, next(line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("x-request-id:"))
