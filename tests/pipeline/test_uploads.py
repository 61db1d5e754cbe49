"""Tests of the streamed-upload steps (relay.pipeline.uploads): the caller's body read piece by piece and never
past its length, the length and protocol headers checked, and a caller that stops sending treated as gone."""

import io

import gevent
import pytest

from relay.errors import InvalidArgument, PayloadTooLarge
from relay.pipeline import uploads


class Trickle(io.RawIOBase):
    """A body stream that hands out at most ``step`` bytes per read, then ends after ``available`` bytes."""

    def __init__(self, available, step=1000, stall=None):
        self.left, self.step, self.stall, self.reads = available, step, stall, []

    def read(self, size=-1):
        if self.stall is not None and not self.left:
            gevent.sleep(self.stall)
        piece = b"z" * min(size, self.step, self.left)
        self.left -= len(piece)
        self.reads.append(size)
        return piece


def test_the_body_is_read_in_pieces_and_never_past_its_length():
    stream = Trickle(available=10 ** 9, step=uploads.PIECE)
    pieces = list(uploads.caller_body(stream, 3 * uploads.PIECE + 5, idle_timeout=5))
    assert [len(piece) for piece in pieces] == [uploads.PIECE] * 3 + [5]
    assert max(stream.reads) == uploads.PIECE and stream.reads[-1] == 5


def test_a_body_that_ends_early_is_a_caller_gone():
    with pytest.raises(uploads.CallerHungUp):
        list(uploads.caller_body(Trickle(available=2500), 5000, idle_timeout=5))


def test_a_caller_that_stops_sending_is_gone_after_the_idle_timeout(monkeypatch):
    monkeypatch.setattr(uploads.monkey, "is_module_patched", lambda name: True)
    body = uploads.caller_body(Trickle(available=100, stall=5), 200, idle_timeout=0.05)
    assert len(next(body)) == 100
    with pytest.raises(uploads.CallerHungUp):
        next(body)


def test_a_failing_stream_is_a_caller_gone():
    class Broken(io.RawIOBase):
        def read(self, size=-1):
            raise ConnectionResetError()

    with pytest.raises(uploads.CallerHungUp):
        list(uploads.caller_body(Broken(), 10, idle_timeout=5))


@pytest.mark.parametrize("environ, error", [
    ({}, uploads.LengthRequired),
    ({"CONTENT_LENGTH": "ten"}, uploads.LengthRequired),
    ({"CONTENT_LENGTH": "-1"}, uploads.LengthRequired),
    ({"CONTENT_LENGTH": "10", "HTTP_TRANSFER_ENCODING": "chunked"}, uploads.LengthRequired),
    ({"CONTENT_LENGTH": "1001"}, PayloadTooLarge),
])
def test_a_length_is_required_and_bounded(environ, error):
    with pytest.raises(error):
        uploads.body_length(environ, 1000)


def test_a_length_within_the_limit_is_taken():
    assert uploads.body_length({"CONTENT_LENGTH": " 1000 "}, 1000) == 1000


def test_protocol_headers_are_checked_and_odd_names_dropped():
    environ = {"HTTP_X_GOOG_UPLOAD_COMMAND": "upload, finalize", "HTTP_X_GOOG_UPLOAD_OFFSET": "8388608",
               "HTTP_X_GOOG_UPLOAD_FILE_NAME": "caf\xc3\xa9.pdf", "HTTP_X_GOOG_UPLOAD_HEADER_CONTENT_TYPE": "video/mp4"}
    headers = uploads.protocol_headers(environ)
    assert headers == {"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "8388608",
                       "X-Goog-Upload-Header-Content-Type": "video/mp4"}
    assert uploads.commands(headers) == {"upload", "finalize"}
    for name, value in (("HTTP_X_GOOG_UPLOAD_OFFSET", "1e9"), ("HTTP_X_GOOG_UPLOAD_PROTOCOL", "raw"),
                        ("HTTP_X_GOOG_UPLOAD_COMMAND", "upload\r\nX-Injected: 1")):
        with pytest.raises(InvalidArgument):
            uploads.protocol_headers({name: value})
    with pytest.raises(InvalidArgument):
        uploads.commands({"X-Goog-Upload-Command": "upload, delete"})
