"""gunicorn settings for relay.  It never imports relay: gevent must patch sockets before requests/ssl load.

Each setting reads its environment variable so a PaaS (Heroku-style ``PORT``/``WEB_CONCURRENCY``) can
drive it; relay's own settings are documented in the README.
"""

import logging
import os
import re
import resource
import shutil
import socket
import tempfile

import gevent
from gunicorn.glogging import Logger
from gunicorn.http import wsgi
from gunicorn.workers.ggevent import GeventWorker

# -- where to listen --------------------------------------------------------------------------------
# PaaS routers give the port in $PORT.
bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"

# -- workers ----------------------------------------------------------------------------------------
# One process per core is enough: each gevent worker holds thousands of concurrent streams.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))


class RelayWorker(GeventWorker):
    """gunicorn's gevent worker, with a shutdown that suits long streams.

    On SIGTERM gunicorn waits until every connection is gone, counting an idle keep-alive connection (a
    load balancer's, an SDK's pool) as busy, and the arbiter SIGKILLs the worker at the same timeout the
    worker waits: every shutdown took the whole graceful timeout, and a stream still running then died
    before its usage row was written.  This worker closes idle connections at once, and ends what still
    runs a little before the deadline, so it exits — and flushes — on its own.
    """

    def init_process(self):
        self._clients = set()
        self._serving = {}  # client socket -> the greenlet serving a request on it
        wsgi.Response = OneWriteResponse  # gunicorn builds each response with the module's class
        super().init_process()

    def handle(self, listener, client, addr):
        self._clients.add(client)
        try:
            super().handle(listener, client, addr)
        finally:
            self._clients.discard(client)

    def handle_request(self, listener_name, req, sock, addr):
        self._serving[sock] = gevent.getcurrent()
        try:
            super().handle_request(listener_name, req, sock, addr)
        finally:
            self._serving.pop(sock, None)

    def handle_exit(self, sig, frame):
        winding_down = not self.alive
        super().handle_exit(sig, frame)
        if not winding_down:
            gevent.spawn(self._wind_down)

    def _wind_down(self):
        for client in list(self._clients):
            if client not in self._serving:
                _stop_reading(client)  # an idle keep-alive connection: its handler sees EOF and returns
        graceful = self.cfg.graceful_timeout
        gevent.sleep(graceful - min(3.0, graceful / 2))
        for greenlet in list(self._serving.values()):
            gevent.kill(greenlet)  # the stream ends, its usage row is queued, then flushed


class OneWriteResponse(wsgi.Response):
    """gunicorn's response, with the header block sent in the same write as the first piece of the body.

    gunicorn writes the headers and then the body: two segments, two wake-ups for the caller, which cannot
    use either alone (SDKs wait for the whole unary body, or the first whole event). Here the header block
    is held back by ``send_headers`` and goes out with the first body bytes gunicorn frames; anything that
    writes no body (an empty write, HEAD, a file sent with sendfile, the end of the response) sends it at
    once, just as gunicorn would have.
    """

    ONE_WRITE_MAX = 256 * 1024  # a larger first piece is written after the headers, not copied behind them
    _held = None
    _hold = True

    def send_headers(self):
        if self.headers_sent or not self._hold:
            return super().send_headers()
        real, self.sock = self.sock, _Gather()
        try:
            super().send_headers()
        finally:
            gathered, self.sock = self.sock, real
        self._held = gathered.data

    def _emit_body(self, data):
        held, self._held = self._held, None
        if held is None:
            return super()._emit_body(data)
        if len(data) > self.ONE_WRITE_MAX:
            self.sock.sendall(held)
            return super()._emit_body(data)
        real, self.sock = self.sock, _Gather(held)
        try:
            super()._emit_body(data)  # gunicorn frames the body (chunked or not) behind the held headers
        finally:
            gathered, self.sock = self.sock, real
        real.sendall(gathered.data)

    def write(self, arg):
        super().write(arg)
        self._flush()  # the write carried no body: the headers go now, as gunicorn's own would

    def sendfile(self, respiter):
        self._flush()
        self._hold = False
        return super().sendfile(respiter)

    def close(self):
        self._flush()
        self._hold = False
        super().close()

    def _flush(self):
        held, self._held = self._held, None
        if held is not None:
            self.sock.sendall(held)


class _Gather:
    """Stands in for the socket while gunicorn writes: keeps the bytes for one sendall."""

    __slots__ = ("data",)

    def __init__(self, data=b""):
        self.data = data

    def sendall(self, data):
        self.data += data


def _stop_reading(client):
    # On the OS socket: gevent's own shutdown() would throw "closed in another greenlet" into the waiting
    # handler (a traceback in the log); the kernel's EOF lets it end like any client that went away.
    try:
        getattr(client, "_sock", client).shutdown(socket.SHUT_RD)
    except OSError:
        pass  # already gone


worker_class = RelayWorker
# Concurrent connections per worker (open streams count).
worker_connections = int(os.environ.get("RELAY_WORKER_CONNECTIONS", "10000"))
# Each open stream holds two sockets (caller and upstream): lift the soft file limit to the hard one.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft != resource.RLIM_INFINITY and (_hard == resource.RLIM_INFINITY or _soft < _hard):
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard if _hard != resource.RLIM_INFINITY else 1 << 20, _hard))
# Never preload: each worker builds its own app (and upstream connection pool) after gevent has patched.
preload_app = False

# gunicorn 27's control socket lives at one fixed path per user: several relays on one box would clash.
control_socket_disable = True

# -- timeouts ---------------------------------------------------------------------------------------
# Heartbeat timeout for a stuck worker; streams are fine (gevent workers heartbeat between greenlets).
timeout = int(os.environ.get("RELAY_WORKER_TIMEOUT", "60"))
# On SIGTERM: stop accepting, give in-flight requests and streams this long, then flush usage and exit.
graceful_timeout = int(os.environ.get("RELAY_GRACEFUL_TIMEOUT", "30"))
keepalive = 75

# -- logging ----------------------------------------------------------------------------------------
_SECRETS = re.compile(r"(?i)((?:[?&;]|%3F|%26)key=|x-goog-api-key[:=]\s*|bearer\s+)[^&\s'\"\\]+")


class _RedactSecrets(logging.Filter):
    def filter(self, record):
        message = record.getMessage()
        redacted = _SECRETS.sub(r"\1[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


class RedactingLogger(Logger):
    """gunicorn's logger; a malformed request line it reports may carry ?key=, which must not reach the log."""

    def setup(self, cfg):
        super().setup(cfg)
        self.error_log.addFilter(_RedactSecrets())


logger_class = RedactingLogger
# relay writes its own JSON access log; gunicorn's would repeat it (and could carry ?key= in URLs).
accesslog = None
errorlog = "-"
loglevel = os.environ.get("RELAY_LOG_LEVEL", "info")
# Allow the huge single-line request bodies Google accepts; request *lines* stay bounded.
limit_request_field_size = 16384


def worker_exit(server, worker):
    """Write whatever usage is still queued before the worker process goes away."""
    shutdown = getattr(getattr(worker, "wsgi", None), "relay_shutdown", None)
    if shutdown is not None:
        shutdown()


# -- metrics ----------------------------------------------------------------------------------------
# prometheus_client's multiprocess mode: every worker writes its samples under one directory, /metrics
# sums them.  A fresh directory per master, so a restart does not resurrect old counts.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="relay-metrics-")
    _OWN_METRICS_DIR = True
else:
    _OWN_METRICS_DIR = False


def child_exit(server, worker):
    """A worker is gone: its live gauges (open streams) must stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
