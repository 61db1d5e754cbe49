"""relay_worker's response class: the header block leaves with the first body bytes, never out of order.

These drive gunicorn's own Response machinery with a socket that records each write; the e2e suites
run the same class in real workers.
"""

import pytest
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser


@pytest.fixture(scope="module")
def conf():
    import relay_worker

    return relay_worker


class RecordingSocket:
    def __init__(self):
        self.writes = []

    def sendall(self, data):
        self.writes.append(bytes(data))

    def sendfile(self, file, offset=0, count=None):
        file.seek(offset)
        self.writes.append(b"<sendfile>" + file.read(count))


def response(conf, method="GET", version="1.1"):
    cfg = Config()
    request = next(RequestParser(cfg, iter([f"{method} /x HTTP/{version}\r\nHost: h\r\n\r\n".encode()]),
                                 ("127.0.0.1", 1)))
    sock = RecordingSocket()
    return conf.OneWriteResponse(request, sock, cfg), sock


def split(write):
    head, _, body = write.partition(b"\r\n\r\n")
    return head, body


def test_a_unary_answer_is_one_write(conf):
    resp, sock = response(conf)
    resp.start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "5")])
    resp.write(b"hello")
    resp.close()
    [write] = sock.writes
    head, body = split(write)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 5" in head
    assert body == b"hello"


def test_a_stream_sends_its_headers_with_the_first_event_and_the_rest_as_they_come(conf):
    resp, sock = response(conf)
    resp.start_response("200 OK", [("Content-Type", "text/event-stream")])
    resp.write(b"data: 1\r\n\r\n")
    assert len(sock.writes) == 1
    head, body = split(sock.writes[0])
    assert b"Transfer-Encoding: chunked" in head and body == b"B\r\ndata: 1\r\n\r\n\r\n"
    resp.write(b"data: 2\r\n\r\n")
    resp.close()
    assert sock.writes[1:] == [b"B\r\ndata: 2\r\n\r\n\r\n", b"0\r\n\r\n"]


def test_an_empty_write_sends_the_headers_at_once(conf):
    resp, sock = response(conf)
    resp.start_response("200 OK", [("Content-Type", "text/event-stream")])
    resp.write(b"")
    assert len(sock.writes) == 1 and sock.writes[0].endswith(b"\r\n\r\n")
    resp.write(b"data: 1\r\n\r\n")
    resp.close()
    assert sock.writes[1:] == [b"B\r\ndata: 1\r\n\r\n\r\n", b"0\r\n\r\n"]


def test_a_response_without_a_body_still_sends_its_headers(conf):
    resp, sock = response(conf, method="HEAD")
    resp.start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "5")])
    resp.write(b"hello")  # gunicorn drops a HEAD body
    resp.close()
    [write] = sock.writes
    assert write.startswith(b"HTTP/1.1 200 OK\r\n") and write.endswith(b"\r\n\r\n")


def test_an_answer_with_no_write_at_all_sends_headers_at_close(conf):
    resp, sock = response(conf)
    resp.start_response("204 No Content", [])
    resp.close()
    [write] = sock.writes
    assert write.startswith(b"HTTP/1.1 204 No Content\r\n") and write.endswith(b"\r\n\r\n")


def test_a_large_first_piece_follows_the_headers_without_being_copied(conf):
    resp, sock = response(conf)
    big = b"x" * (conf.OneWriteResponse.ONE_WRITE_MAX + 1)
    resp.start_response("200 OK", [("Content-Length", str(len(big)))])
    resp.write(big)
    resp.close()
    assert len(sock.writes) == 2 and sock.writes[0].endswith(b"\r\n\r\n") and sock.writes[1] == big


def test_a_file_sent_with_sendfile_comes_after_its_headers(conf, tmp_path):
    path = tmp_path / "page.html"
    path.write_bytes(b"<html></html>")

    class Wrapper:
        def __init__(self, filelike):
            self.filelike = filelike

    resp, sock = response(conf)
    resp.start_response("200 OK", [("Content-Length", "13")])
    with open(path, "rb") as handle:
        if not resp.sendfile(Wrapper(handle)):
            pytest.skip("this gunicorn build does not use sendfile here")
    resp.close()
    assert sock.writes[0].endswith(b"\r\n\r\n") and sock.writes[-1].endswith(b"<html></html>")
