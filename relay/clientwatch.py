"""This module provides the client-disconnect watch: a stream's upstream is closed as soon as its caller hangs up.

Without it a disconnect is only noticed at the next write, which on a thinking model can be a minute of
silence away — a minute of upstream quota and an open connection for nobody.  Under gunicorn's gevent
worker a small greenlet waits for the client socket to turn readable; if a peek then reads nothing, the
caller is gone.  Elsewhere (Flask's test client, other servers) it does nothing.
"""

import socket

try:
    import gevent
    from gevent import monkey
    from gevent.socket import wait_read
except ImportError:  # pragma: no cover - gevent is a runtime dependency; this keeps pure imports working
    gevent = None


def watch(client_socket, on_gone):
    """Call ``on_gone()`` when the peer closes ``client_socket``; returns a function that stops watching."""
    if gevent is None or client_socket is None or not monkey.is_module_patched("socket"):
        return _nothing

    def run():
        try:
            wait_read(client_socket.fileno())
            gone = client_socket.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            gone = True
        except ValueError:  # the socket was closed under us: the response is over anyway
            return
        if gone:
            on_gone()
        # Readable with data is a pipelined next request: nothing to do, and nothing more to learn.

    watcher = gevent.spawn(run)
    return lambda: watcher.kill(block=False)


def _nothing():
    return None
