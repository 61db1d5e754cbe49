"""This module provides the client-disconnect watch: a stream's upstream is closed as soon as its caller hangs up.

Without it a disconnect is only noticed at the next write, which on a thinking model can be a minute of
silence away — a minute of upstream quota and an open connection for nobody.  Under gunicorn's gevent
worker an I/O watcher on the client socket fires when it turns readable; if a non-blocking peek then
reads nothing, the caller is gone.  It is a bare event-loop watcher, not a greenlet: thousands of open
streams should not each carry a second stack.  Elsewhere (Flask's test client, other servers) it does
nothing.
"""

import socket

try:
    import gevent
    from gevent import monkey
except ImportError:  # pragma: no cover - gevent is a runtime dependency; this keeps pure imports working
    gevent = None

READ = 1  # libev/libuv event mask for "readable"
PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


def watch(client_socket, on_gone):
    """Call ``on_gone()`` (from the event loop: it must not block) when the peer closes ``client_socket``.

    Returns a function that stops watching; call it when the response is over.
    """
    if not _watchable(client_socket):
        return _nothing
    # gevent's socket wraps the OS socket; the callback runs in the hub, where only non-blocking calls
    # are allowed, so it peeks on the wrapped one.
    raw_socket = getattr(client_socket, "_sock", client_socket)
    watcher = gevent.get_hub().loop.io(client_socket.fileno(), READ)

    def readable():
        try:
            gone = raw_socket.recv(1, PEEK) == b""
        except BlockingIOError:
            return  # a spurious wake-up: keep watching
        except OSError:
            gone = True
        watcher.stop()
        if gone:
            on_gone()
        # Readable with data is a pipelined next request: nothing to do, and nothing more to learn.

    watcher.start(readable)

    def stop():
        watcher.stop()
        watcher.close()

    return stop


def _watchable(client_socket):
    """A caller's socket under gevent's patched sockets (gunicorn's gevent worker), where the loop can watch it."""
    return gevent is not None and client_socket is not None and monkey.is_module_patched("socket")


def _nothing():
    return None


class CallerGone(Exception):
    """Raised into a request's greenlet when its caller hangs up while relay waits on the upstream."""


def interrupt_on_hangup(client_socket):
    """Raise :class:`CallerGone` in the current greenlet if the caller hangs up; returns stop().

    For the wait before an upstream answers (a thinking model can take minutes) and for unary bodies:
    like a gevent.Timeout, the exception is thrown into the greenlet from the event loop, so whatever
    upstream read it is blocked in unwinds and closes its connection.  After stop() nothing is thrown.
    """
    if not _watchable(client_socket):
        return _nothing
    request_greenlet = gevent.getcurrent()
    active = [True]

    def deliver():  # runs in the hub, like a timer's callback
        if active[0]:
            active[0] = False
            request_greenlet.throw(CallerGone())

    stop_watching = watch(client_socket, deliver)

    def stop():
        active[0] = False
        stop_watching()

    return stop
