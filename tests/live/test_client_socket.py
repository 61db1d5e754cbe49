"""Tests for relay.live.client_socket: a caller who sends faster than relay can pass frames on is stopped."""

import threading

import simple_websocket

from relay.live import client_socket
from relay.live.client_socket import MAX_QUEUED_BYTES, POLICY_VIOLATION, QUEUE_FULL, _BoundedServer


def reader_state(queued):
    """A server as its reader thread sees it after queueing ``queued`` (no socket: only the queue matters)."""
    server = object.__new__(_BoundedServer)
    server.input_buffer, server.event, server.connected = list(queued), threading.Event(), True
    server.close_reason, server.close_message, server.sent = None, None, []

    def close(reason=None, message=None):
        server.sent.append((reason, message))
        server.connected = False

    server.close = close
    return server


def test_a_queue_within_the_bound_keeps_reading(monkeypatch):
    monkeypatch.setattr(simple_websocket.Server, "_handle_events", lambda self: True)
    server = reader_state([b"x" * 1024] * 10)
    assert server._handle_events() is True
    assert server.sent == [] and len(server.input_buffer) == 10


def test_a_caller_who_outruns_the_session_is_closed_with_1008_and_its_queue_dropped(monkeypatch):
    monkeypatch.setattr(simple_websocket.Server, "_handle_events", lambda self: True)
    chunk = b"a" * (1024 * 1024)
    server = reader_state([chunk] * (MAX_QUEUED_BYTES // len(chunk) + 1))
    assert server._handle_events() is False
    assert server.sent == [(POLICY_VIOLATION, QUEUE_FULL)] and server.input_buffer == []
    assert (server.close_reason, server.close_message) == (POLICY_VIOLATION, QUEUE_FULL)
    assert server.event.is_set()  # the session's receive wakes and sees the close
    assert len(QUEUE_FULL) <= 123  # fits a close frame


def test_text_messages_count_too(monkeypatch):
    monkeypatch.setattr(simple_websocket.Server, "_handle_events", lambda self: True)
    server = reader_state(["t" * (MAX_QUEUED_BYTES + 1)])
    assert server._handle_events() is False


def test_the_bound_is_in_use():
    assert client_socket.ClientSocket.__init__.__code__.co_names.count("_BoundedServer") == 1
