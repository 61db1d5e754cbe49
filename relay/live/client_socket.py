"""This module provides the caller's side of a Live session: the WebSocket upgrade on gunicorn's own socket.

simple-websocket (wsproto underneath) answers the upgrade on the socket gunicorn hands the app
(``gunicorn.socket``) and reads frames in a thread of its own — a greenlet under gunicorn's gevent worker,
so there is no second event loop.  Three things are adjusted around it, without touching its internals:

* every write is one whole ``sendall`` under a lock: its ``send`` would drop the rest of a frame that a
  busy socket takes only in part, and two greenlets (the relay, the pong to a ping) could interleave;
* permessage-deflate is not offered back: it costs ~300 KB of zlib state per session and CPU per frame,
  for JSON whose audio is base64 already (the client's offer is removed before the handshake);
* dead peers are found by TCP keepalive, not WebSocket pings: simple-websocket's ping loop waits in
  ``select``, which does not see bytes TLS has already decrypted into its buffer.
"""

import socket
import threading

import simple_websocket
from wsproto.utilities import RemoteProtocolError

from relay.errors import InvalidArgument

RECEIVE_BYTES = 65536  # more than a TLS record (16 KB): one read drains what TLS decrypted
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Messages read from the caller and not yet passed upstream: past this, the caller is sending faster than
# the session can relay (a few seconds of audio and video are a few hundred KB).
MAX_QUEUED_BYTES = 32 * 1024 * 1024
POLICY_VIOLATION = 1008
QUEUE_FULL = "Messages arrive faster than the session can relay them; send at the rate of the media."
# Each message is one write: Nagle's algorithm would only hold small frames (audio) back.
SOCKET_OPTIONS = ((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1), (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60),
                  (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 20), (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
                  (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1))


class ClientClosed(Exception):
    """The caller's WebSocket is closed: ``code`` and ``reason`` of its close frame (1005/1006 without one)."""

    def __init__(self, code, reason=""):
        super().__init__(code, reason)
        self.code = int(code)
        self.reason = reason or ""


class _WholeWrites:
    """gunicorn's socket as simple-websocket sees it: ``send`` writes all of it, one writer at a time."""

    def __init__(self, sock):
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, data):
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class _BoundedServer(simple_websocket.Server):
    """simple-websocket's server, except that its reader ends a session whose caller has more than
    ``MAX_QUEUED_BYTES`` of messages waiting: a caller who sends faster than the upstream takes its frames
    would otherwise grow the worker without bound.  The session closes with 1008 and the queue is dropped.

    ``_handle_events`` (simple-websocket 1.1, pinned) is where its reader thread queues each whole message."""

    def _handle_events(self):
        keep_going = super()._handle_events()
        if keep_going and sum(map(len, self.input_buffer)) > MAX_QUEUED_BYTES:
            self.input_buffer.clear()
            self.close_reason, self.close_message = POLICY_VIOLATION, QUEUE_FULL
            try:
                self.close(POLICY_VIOLATION, QUEUE_FULL)
            except (simple_websocket.ConnectionClosed, OSError):
                pass
            self.event.set()  # wake the receiver: the session ends
            return False
        return keep_going


class ClientSocket:
    """One caller's WebSocket: receive and send messages (str: text frame, bytes: binary frame), close once."""

    def __init__(self, environ):
        sock = environ["gunicorn.socket"]
        for option in SOCKET_OPTIONS:
            try:
                sock.setsockopt(*option)
            except OSError:
                pass  # a platform without TCP keepalive tuning: dead peers then wait for the kernel default
        environ = {name: value for name, value in environ.items() if name != "HTTP_SEC_WEBSOCKET_EXTENSIONS"}
        environ["gunicorn.socket"] = _WholeWrites(sock)
        try:
            self._ws = _BoundedServer(environ, receive_bytes=RECEIVE_BYTES, max_message_size=MAX_MESSAGE_BYTES)
        except (RemoteProtocolError, simple_websocket.ConnectionError) as error:
            # Nothing was sent yet: the caller gets an ordinary HTTP 400.
            raise InvalidArgument(f"Not a valid WebSocket upgrade: {error}") from None
        self._closed_by_us = False

    def receive(self, timeout=None):
        """The next message, or None after ``timeout`` seconds; raises ClientClosed once the caller is gone."""
        try:
            message = self._ws.receive(timeout=timeout)
        except simple_websocket.ConnectionClosed as closed:
            raise ClientClosed(closed.reason, closed.message or "") from None
        if message is None and not self._ws.connected:
            raise ClientClosed(self._ws.close_reason, self._ws.close_message or "")
        return message

    def send(self, message):
        try:
            self._ws.send(message)
        except simple_websocket.ConnectionClosed as closed:
            raise ClientClosed(closed.reason, closed.message or "") from None
        except OSError:
            raise ClientClosed(1006, "connection lost") from None

    def close(self, code, reason, wait=1.0):
        """Send a close frame (once; never raises) and give the caller ``wait`` seconds to answer it."""
        if self._closed_by_us:
            return
        self._closed_by_us = True
        try:
            self._ws.close(code, reason)
        except (simple_websocket.ConnectionClosed, OSError):
            return
        self._ws.thread.join(wait)

    @property
    def open(self):
        return self._ws.connected
