"""The upstream transport (relay/upstream/http.py) against real loopback sockets: what goes on the wire,
connection reuse, and the response-header parser checked against the email package it stands in for."""

import email.parser
import http.client
import io
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.upstream import http as upstream_http

BODY = b'{"contents": [{"parts": [{"text": "hi"}]}]}'
ANSWER = b'{"candidates": []}\n'
TIMEOUT = (2.0, 5.0)


class LoopbackServer:
    """A tiny HTTP/1.1 server on a thread: answers every request with ``ANSWER`` and records what came in.

    ``close_after_answer`` closes each connection after one answer without saying so (no
    ``Connection: close``), like an upstream front end dropping an idle keep-alive connection.
    """

    def __init__(self, close_after_answer=False, extra_headers=b""):
        self.close_after_answer = close_after_answer
        self.extra_headers = extra_headers
        self.requests = []
        self.connections = 0
        self.closed = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn):
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append((head, rest[:length]))
                buffer = rest[length:]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + self.extra_headers
                             + b"Content-Length: %d\r\n\r\n" % len(ANSWER) + ANSWER)
                if self.close_after_answer:
                    break
        self.closed += 1

    def close(self):
        self.listener.close()


@pytest.fixture
def server():
    running = LoopbackServer()
    yield running
    running.close()


def call(session, url, body=BODY, headers=None):
    response = upstream_http.send(session, "POST", url + "/v1beta/models/m:generateContent",
                                  {"Content-Type": "application/json", **(headers or {})}, body, TIMEOUT)
    return response, upstream_http.read_limited(response, 1 << 20)


def test_a_request_and_its_body_leave_in_one_write(server, monkeypatch):
    writes = []
    original = http.client.HTTPConnection.send
    monkeypatch.setattr(http.client.HTTPConnection, "send", lambda self, data: (writes.append(bytes(data)),
                                                                                   original(self, data))[1])
    response, body = call(upstream_http.make_session(), server.url)
    assert (response.status_code, body) == (200, ANSWER)
    assert len(writes) == 1 and writes[0].startswith(b"POST /v1beta/models/m:generateContent HTTP/1.1\r\n")
    assert writes[0].endswith(b"\r\n\r\n" + BODY)
    assert server.requests == [(writes[0].partition(b"\r\n\r\n")[0], BODY)]


def test_a_request_that_fails_before_sending_leaves_nothing_behind_for_the_next(server):
    session = upstream_http.make_session()
    call(session, server.url)  # a pooled connection now exists
    with pytest.raises(ValueError):  # http.client refuses the header value before anything is written
        call(session, server.url, body=b'{"first": 1}', headers={"X-Bad": "a\r\nInjected: yes"})
    response, body = call(session, server.url, body=b'{"second": 2}')
    assert body == ANSWER
    assert [sent for _, sent in server.requests] == [BODY, b'{"second": 2}']
    assert not any(b"Injected" in head for head, _ in server.requests)


def test_an_iterable_body_is_sent_piece_by_piece_with_its_declared_length(server):
    pieces = [b"a" * 70_000, b"b" * 3, b"c" * 100_000]
    response = upstream_http.send(upstream_http.make_session(), "POST", server.url + "/upload/v1beta/files?upload_id=x",
                                  {}, iter(pieces), TIMEOUT, length=sum(map(len, pieces)))
    assert upstream_http.read_limited(response, 1 << 20) == ANSWER
    [(head, sent)] = server.requests
    assert sent == b"".join(pieces) and b"Content-Length: 170003" in head and b"chunked" not in head.lower()


def test_an_iterable_body_that_fails_cuts_the_upstream_request_and_raises_as_it_is():
    class Gone(Exception):
        pass

    def body():
        yield b"x" * 1000
        raise Gone()

    received = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def read_until_closed():
            conn, _ = listener.accept()
            with conn:
                received.append(b"".join(iter(lambda: conn.recv(65536), b"")))

        reader = threading.Thread(target=read_until_closed, daemon=True)
        reader.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/upload"
        with pytest.raises(Gone):
            upstream_http.send(upstream_http.make_session(), "POST", url, {}, body(), TIMEOUT, length=5000)
        reader.join(5)
    head, _, sent = received[0].partition(b"\r\n\r\n")
    assert b"Content-Length: 5000" in head and sent == b"x" * 1000  # the connection closed with the body cut short


def test_keep_alive_connections_are_reused(server):
    session = upstream_http.make_session()
    for _ in range(5):
        assert call(session, server.url)[1] == ANSWER
    assert server.connections == 1


def test_a_connection_the_upstream_dropped_while_idle_is_replaced_not_failed():
    dropping = LoopbackServer(close_after_answer=True)
    try:
        session = upstream_http.make_session()
        for count in range(1, 4):
            response, body = call(session, dropping.url)
            assert (response.status_code, body) == (200, ANSWER)
            deadline = time.monotonic() + 5
            while dropping.closed < count and time.monotonic() < deadline:  # the drop has happened
                time.sleep(0.001)
        assert dropping.connections == 3
    finally:
        dropping.close()


def test_repeated_response_headers_stay_apart(server):
    server.extra_headers = b"Vary: Origin\r\nVary: X-Origin\r\nvary: Referer\r\n"
    response, _ = call(upstream_http.make_session(), server.url)
    assert [value for name, value in response.headers.items() if name.lower() == "vary"] == ["Origin", "X-Origin",
                                                                                               "Referer"]
    assert response.headers.get("content-type") == "application/json"  # still case-insensitive


def test_a_pool_closed_by_the_pool_manager_is_not_used_again(server):
    session = upstream_http.make_session()
    adapter = session.get_adapter(server.url)
    call(session, server.url)
    adapter.poolmanager.clear()  # what eviction does: the pools are closed
    assert call(session, server.url)[1] == ANSWER


def test_each_origin_gets_its_own_pool(server):
    other = LoopbackServer()
    try:
        session = upstream_http.make_session()
        call(session, server.url)
        call(session, other.url)
        call(session, server.url)
        assert (server.connections, other.connections) == (1, 1)
        assert len(server.requests) == 2 and len(other.requests) == 1
    finally:
        other.close()


def test_a_refused_connection_is_an_upstream_failure():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(upstream_http.UpstreamFailure) as failure:
        call(upstream_http.make_session(), f"http://127.0.0.1:{port}")
    assert failure.value.reason == "connection"


def test_origin_of():
    assert upstream_http.origin_of("https://generativelanguage.googleapis.com/v1beta/models") == \
        "https://generativelanguage.googleapis.com"
    assert upstream_http.origin_of("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert upstream_http.origin_of("http://h:1/prefix/v1beta?x=1") == "http://h:1"


# -- response headers: the direct parser gives what the email package gives ---------------------------

def email_parse(block):
    fp = io.BytesIO(block)
    text = b"".join(http.client._read_headers(fp)).decode("iso-8859-1")
    return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(text)


def described(message):
    return (message.items(), [type(defect) for defect in message.defects], message.get_payload(),
            message.get("content-length"), message.get_all("vary"))


def test_a_plain_block_does_not_touch_the_email_package(monkeypatch):
    monkeypatch.setattr(email.parser.Parser, "parsestr", lambda *args, **kwargs: pytest.fail("email parser used"))
    message = upstream_http.parse_response_headers(io.BytesIO(
        b"Content-Type: application/json; charset=UTF-8\r\nVary: Origin\r\nVary: Referer\r\n"
        b"Content-Length:  12 \r\nX-Empty:\r\n\r\nbody"))
    assert message.items() == [("Content-Type", "application/json; charset=UTF-8"), ("Vary", "Origin"),
                               ("Vary", "Referer"), ("Content-Length", "12 "), ("X-Empty", "")]


def test_http_client_reads_headers_with_relay_parser():
    assert http.client.parse_headers is upstream_http.parse_response_headers


HEADER_NAMES = st.sampled_from(["Content-Type", "vary", "X-Goog-Thing", "Set-Cookie", "From", "a", "X y", "É",
                                "Content-Length", "", "Name\t"])
HEADER_VALUES = st.text(alphabet=st.sampled_from(list("abc ,;=\t:é\x85\xa0\r")), max_size=12)
LINE_ENDS = st.sampled_from(["\r\n", "\n"])


@st.composite
def header_blocks(draw):
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["plain", "plain", "plain", "folded", "no colon", "from"]))
        end = draw(LINE_ENDS)
        if kind == "plain":
            lines.append(f"{draw(HEADER_NAMES)}:{draw(HEADER_VALUES)}{end}")
        elif kind == "folded":
            lines.append(f"{draw(st.sampled_from([' ', chr(9)]))}{draw(HEADER_VALUES)}{end}")
        elif kind == "no colon":
            lines.append(f"{draw(HEADER_VALUES)}{end}")
        else:
            lines.append(f"From {draw(HEADER_VALUES)}{end}")
    ending = draw(st.sampled_from(["\r\n", "\n", ""]))
    return ("".join(lines) + ending).encode("iso-8859-1")


@settings(max_examples=400, deadline=None)
@given(header_blocks())
def test_the_direct_parser_matches_the_email_package(block):
    assert described(upstream_http.parse_response_headers(io.BytesIO(block))) == described(email_parse(block))


def test_under_gevent_an_attempt_lets_waiting_answers_go_first(server, monkeypatch):
    """One cooperative yield before each upstream call: at saturation, answers already back are relayed
    before new calls start (without it gevent's loop let p99 grow ~10x at 64 callers on 2 workers)."""
    yields = []
    monkeypatch.setattr(upstream_http, "is_module_patched", lambda name: name == "socket")
    monkeypatch.setattr(upstream_http.gevent, "sleep", lambda seconds=0: yields.append(seconds))
    call(upstream_http.make_session(), server.url)
    assert yields == [0]


def test_without_gevent_an_attempt_does_not_yield(server, monkeypatch):
    monkeypatch.setattr(upstream_http.gevent, "sleep", lambda seconds=0: pytest.fail("yielded outside gevent"))
    assert call(upstream_http.make_session(), server.url)[1] == ANSWER
