"""Request bodies end to end: real gunicorn (one gevent worker, so every connection shares its loop).

A large body never stalls the other streams of its worker; an over-limit chunked body is refused at the limit
with bounded memory and the connection closed; broken chunked framing and truncated bodies are the
caller's 400, never relay's 500 and never relayed.  Raw sockets send exactly the bytes each case needs.
"""
from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time

import psutil
import pytest

from .harness import http, wait_until

pytestmark = pytest.mark.timeout(300)

CLIENT_KEY = "client-key-body-e2e-Zq81"
UPSTREAM_KEY = "up-key-body-e2e-a1b2c3"
ADMIN_TOKEN = "admin-token-body-e2e-Kp55"
MODEL = "gemini-2.5-flash"
UNARY = f"/v1beta/models/{MODEL}:generateContent"
SSE = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
LIMIT = 100 * 1024 * 1024  # RELAY_MAX_BODY_MB's default
STREAMS = 12
EVENT_GAP_S = 0.05


@pytest.fixture(scope="module")
def relay(module_relay_factory):
    return module_relay_factory(env={"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY,
                                     "RELAY_ADMIN_TOKEN": ADMIN_TOKEN}, workers=1)


@pytest.fixture
def clean(relay, fake_upstream):
    """No traceback and no relay-made 5xx while the test ran."""
    before_output, before_5xx = len(relay.output_text()), relay_5xx(relay)
    yield fake_upstream
    new_output = relay.output_text()[before_output:]
    assert "Traceback" not in new_output and "WORKER TIMEOUT" not in new_output, new_output[-3000:]
    assert relay_5xx(relay) == before_5xx, "a caller's bad body was counted as relay's own 5xx"


@pytest.fixture(scope="module")
def small_relay(module_relay_factory):
    """A relay whose body limit is 1 MB, for over-limit bodies sent the way SDKs send them."""
    return module_relay_factory(env={"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY,
                                     "RELAY_ADMIN_TOKEN": ADMIN_TOKEN, "RELAY_MAX_BODY_MB": "1"}, workers=1)


def relay_5xx(relay) -> float:
    text = http().get(relay.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("relay_requests_total{") and re.search(r'status="5\d\d"', line))


def worker_pid(relay) -> int:
    [child] = psutil.Process(relay.process.pid).children()
    return child.pid


def head(path, extra="", length=None) -> bytes:
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    return (f"POST {path} HTTP/1.1\r\nHost: relay\r\nx-goog-api-key: {CLIENT_KEY}\r\nContent-Type: application/json\r\n"
            f"{framing}\r\n{extra}\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def read_response(sock, timeout=30.0) -> tuple[bytes, bytes, bool]:
    """(head, body, closed): one response read off ``sock``; ``closed`` once relay ended the connection."""
    sock.settimeout(timeout)
    received = b""
    while b"\r\n\r\n" not in received:
        data = sock.recv(65536)
        assert data, f"no response: {received[:300]!r}"
        received += data
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head_bytes).group(1))
    while len(body) < length:
        data = sock.recv(65536)
        assert data, "the response was cut short"
        body += data
    return head_bytes, body, _closed(sock, body[length:])


def _closed(sock, extra: bytes) -> bool:
    assert not extra, f"a second response on the connection: {extra[:200]!r}"
    sock.settimeout(5)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    assert not data, f"a second response on the connection: {data[:200]!r}"
    return True


def google_error(head_bytes: bytes, body: bytes, code: int) -> dict:
    assert head_bytes.startswith(b"HTTP/1.1 %d " % code), head_bytes[:200]
    error = json.loads(body)["error"]
    assert error["code"] == code and list(error)[:3] == ["code", "message", "status"]
    return error


# -- one body never stalls the worker's other streams ---------------------------------------------------


class StreamWatch(threading.Thread):
    """One open SSE stream on the relay, reading as fast as it can and noting when each piece arrives."""

    def __init__(self, relay):
        super().__init__(daemon=True)
        body = json.dumps({"contents": [{"role": "user", "parts": [{"text": "keep streaming"}]}]}).encode()
        self.sock = socket.create_connection(("127.0.0.1", relay.port), timeout=60)
        self.sock.sendall(head(SSE, length=len(body)) + body)
        self.arrivals: list[float] = []
        self.stopped = False

    def run(self):
        while not self.stopped:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.arrivals.append(time.monotonic())

    def longest_gap(self, start: float, end: float) -> float:
        times = [start, *(moment for moment in self.arrivals if start < moment < end), end]
        return max(later - earlier for earlier, later in zip(times, times[1:]))

    def close(self):
        self.stopped = True
        self.sock.close()


def many_values_body() -> bytes:
    """The costliest body relay accepts: as many JSON values as it takes (500,000: 6 a turn, 2 more), in
    distinct turns that are valid but not in a plain shape (``thought`` as a string): each goes through the schema."""
    turns = [{"role": "user", "parts": [{"text": f"turn {index}", "thought": "true"}]} for index in range(83_333)]
    return json.dumps({"contents": turns}, separators=(",", ":")).encode()


def largest_body() -> bytes:
    """The largest body relay accepts: one inline image filling RELAY_MAX_BODY_MB."""
    prefix, suffix = b'{"contents":[{"role":"user","parts":[{"inlineData":{"mimeType":"image/png","data":"', b'"}}]}]}'
    return prefix + b"QUJD" * ((LIMIT - len(prefix) - len(suffix)) // 4) + suffix


@pytest.mark.parametrize("make_body", [many_values_body, largest_body], ids=["most-values", "largest"])
def test_streams_keep_flowing_while_a_maximal_body_is_validated(relay, clean, make_body):
    clean.script({"path_contains": "streamGenerateContent", "stream_forever": True, "gap_ms": EVENT_GAP_S * 1000,
                  "forever_max_s": 120})
    body = make_body()
    watches = [StreamWatch(relay) for _ in range(STREAMS)]
    for watch in watches:
        watch.start()
    try:
        assert wait_until(lambda: all(len(watch.arrivals) >= 3 for watch in watches), timeout=20)
        started = time.monotonic()
        response = http().post(relay.url + UNARY, data=body, timeout=240,
                               headers={"x-goog-api-key": CLIENT_KEY, "Content-Type": "application/json"})
        time.sleep(0.5)
        ended = time.monotonic()
    finally:
        for watch in watches:
            watch.close()
    assert response.status_code == 200, response.text[:500]
    [entry] = [entry for entry in clean.requests() if entry["path"] == UNARY]
    assert entry["body_sha256"] == hashlib.sha256(body).hexdigest(), "the caller's bytes, as sent"
    gaps = sorted(watch.longest_gap(started, ended) for watch in watches)
    print(f"\n{make_body.__name__}: {len(body) / 1e6:.1f} MB handled in {ended - 0.5 - started:.2f} s; "
          f"longest stream gaps {', '.join(f'{gap:.3f}' for gap in gaps)} s")
    assert gaps[-1] < 1.0, f"a stream stalled {gaps[-1]:.2f} s while one body was validated"


# -- over the limit: refused at the limit, memory bounded, connection closed ---------------------------------


class Upload(threading.Thread):
    """A chunked upload of up to ``total`` bytes, sent as fast as relay reads it, while the answer is awaited."""

    def __init__(self, relay, total: int, piece: int = 1024 * 1024):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", relay.port), timeout=60)
        self.total, self.piece = total, piece
        self.sent = 0
        self.sent_when_answered = None
        self.answered = threading.Event()

    def run(self):
        data = chunk(b" " * self.piece)
        try:
            self.sock.sendall(head(UNARY) + chunk(b'{"contents": [{"parts": [{"text": "'))
            while self.sent < self.total and not self.answered.is_set():
                self.sock.sendall(data)
                self.sent += self.piece
        except OSError:
            pass  # relay answered and closed the connection: what else was sent is beside the point

    def answer(self):
        self.sock.settimeout(60)
        self.sock.recv(1, socket.MSG_PEEK)  # the answer has begun to arrive
        self.sent_when_answered = self.sent
        self.answered.set()
        return read_response(self.sock, timeout=60)


class PeakMemory(threading.Thread):
    """The worker's resident memory above where it was when watching began, at its highest."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.baseline = self.process.memory_info().rss
        self.peak = 0
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss - self.baseline)
            time.sleep(0.005)

    def stop(self):
        self.stopped.set()
        self.join(5)
        return self.peak


@pytest.mark.parametrize("uploads", [1, 3])
def test_an_over_limit_chunked_body_is_refused_at_the_limit_with_bounded_memory(relay, clean, uploads):
    memory = PeakMemory(worker_pid(relay))
    memory.start()
    running = [Upload(relay, total=3 * LIMIT) for _ in range(uploads)]
    for upload in running:
        upload.start()
    answers = [upload.answer() for upload in running]
    peak = memory.stop()
    for upload, (head_bytes, body, closed) in zip(running, answers):
        error = google_error(head_bytes, body, 413)
        assert str(LIMIT) in error["message"]
        assert closed, "the rest of the body must not be read as the next request: relay closes the connection"
        # What was sent when the answer came: the limit, plus what socket buffers on loopback hold.
        assert upload.sent_when_answered < LIMIT + 48 * 1024 * 1024, upload.sent_when_answered
        upload.sock.close()
    print(f"\n{uploads} over-limit upload(s): worker memory peaked {peak / 1e6:.0f} MB above its baseline")
    assert peak < uploads * LIMIT * 1.4, f"{peak / 1e6:.0f} MB for {uploads} refused upload(s), {LIMIT >> 20} MB limit"
    assert clean.requests() == []


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_sdk_sending_an_over_limit_body_reads_the_413(small_relay, fake_upstream, framing):
    data = json.dumps({"contents": [{"parts": [{"text": "x" * (2 * 1024 * 1024)}]}]}).encode()
    body = data if framing == "content-length" else (data[start:start + 256 * 1024]
                                                      for start in range(0, len(data), 256 * 1024))
    response = http().post(small_relay.url + UNARY, data=body, timeout=60,
                           headers={"x-goog-api-key": CLIENT_KEY, "Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == 413, response.text[:300]
    assert fake_upstream.requests() == []


def test_the_unread_rest_of_an_over_limit_body_is_never_read_as_a_request(small_relay, fake_upstream):
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n" * 40_000  # about 1.4 MB of would-be requests
    with socket.create_connection(("127.0.0.1", small_relay.port), timeout=30) as sock:
        sock.sendall(head(UNARY, length=len(smuggled)))
        try:
            sock.sendall(smuggled)
        except OSError:
            pass  # relay answered and closed before taking it all
        head_bytes, body, closed = read_response(sock)
    google_error(head_bytes, body, 413)
    assert closed
    assert re.search(rb"(?im)^connection: close\r?$", head_bytes), head_bytes  # says so, not keep-alive
    assert fake_upstream.requests() == []


# -- broken framing and truncated bodies: the caller's 400 -----------------------------------------------


FRAMING = {
    "chunk size not hex": b"zz\r\n{}\r\n0\r\n\r\n",
    "chunk without its CRLF": chunk(b'{"contents": [')[:-2] + b"XX" + b"0\r\n\r\n",
    "bad chunk extension": b"2;a=\x01\r\n{}\r\n0\r\n\r\n",
    "trailer with a bare LF": chunk(b"{}") + b"0\r\nX-Trailer: a\n\r\n\r\n",
}


@pytest.mark.parametrize("case", list(FRAMING))
def test_broken_chunked_framing_is_a_google_400_and_the_connection_closes(relay, clean, case):
    with socket.create_connection(("127.0.0.1", relay.port), timeout=30) as sock:
        sock.sendall(head(UNARY) + FRAMING[case])
        head_bytes, body, closed = read_response(sock)
    error = google_error(head_bytes, body, 400)
    assert "chunk" in error["message"]
    assert closed
    assert clean.requests() == []


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_truncated_body_is_a_400_and_never_relayed(relay, clean, framing):
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": "complete JSON, incomplete body"}]}]}).encode()
    with socket.create_connection(("127.0.0.1", relay.port), timeout=30) as sock:
        if framing == "content-length":
            sock.sendall(head(UNARY, length=len(body) + 100) + body)
        else:
            sock.sendall(head(UNARY) + chunk(body) + b"100\r\n" + b" " * 10)
        sock.shutdown(socket.SHUT_WR)  # the caller half-closes: no more bytes will come
        head_bytes, response_body, _ = read_response(sock)
    error = google_error(head_bytes, response_body, 400)
    assert "ended" in error["message"]
    time.sleep(0.3)
    assert clean.requests() == [], "an incomplete body is never relayed"


def test_the_worker_still_serves_after_every_bad_body(relay, fake_upstream):
    response = http().post(relay.url + UNARY, json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=30,
                           headers={"x-goog-api-key": CLIENT_KEY})
    assert response.status_code == 200
    assert "Booting worker" in relay.output_text() and relay.output_text().count("Booting worker") == 1
