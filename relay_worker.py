"""This module provides what gunicorn.conf.py plugs into gunicorn: relay's gevent worker, its one-write response,
its JSON logger, and the master's start-up (settings checked once, the start-up line, the metrics directory).

It imports gunicorn, gevent and, of relay, only modules that load nothing but the standard library
(relay, relay.config, relay.errors, relay.observability.logs): the master must not load requests, ssl-using
clients or Flask before gevent patches each worker (tests/test_relay_worker.py checks this).
"""

import errno
import logging
import os
import resource
import shutil
import socket
import tempfile
import time
import uuid
from http import HTTPStatus

import gevent
from gunicorn.glogging import Logger
from gunicorn.http import errors as http_errors
from gunicorn.http import wsgi
from gunicorn.workers.ggevent import GeventWorker

from relay import check_clients
from relay.config import ConfigError, load_settings, summary
from relay.errors import render_json
from relay.observability import logs

log = logging.getLogger("relay.startup")


class RelayWorker(GeventWorker):
    """gunicorn's gevent worker, with a shutdown that suits long streams and errors in Google's shape.

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
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            self._serving.pop(sock, None)
            if getattr(req.body, "failed", False):
                try:
                    _linger(sock)  # answered before the whole body arrived: let the caller read the answer
                except OSError:
                    pass  # the caller went quiet or away: gunicorn closes the connection either way

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
        close_live = getattr(self.wsgi, "relay_close_live", None)
        if close_live is not None:
            close_live(wait=1.0)  # Live sessions get WebSocket 1001 ("going away": resume elsewhere) first
        for greenlet in list(self._serving.values()):
            gevent.kill(greenlet)  # the stream ends, its usage row is queued, then flushed

    def handle_error(self, req, client, addr, exc):
        """Answer what gunicorn refuses before relay sees it as relay answers everything: Google's error JSON.

        gunicorn's own page is HTML (and says "501 Bad Request" for a transfer coding it does not know).
        The message names the problem without repeating the request, which may hold a key.
        """
        code, status, message = http_problem(exc)
        if code >= 500:
            self.log.exception("error handling a request", extra={"status": code})
        else:
            self.log.warning("invalid request from %s: %s", (addr or ("",))[0], exc,
                             extra={"status": code, "error": type(exc).__name__})
        body = render_json({"error": {"code": code, "message": message, "status": status}})
        head = (f"HTTP/1.1 {code} {HTTPStatus(code).phrase}\r\nContent-Type: application/json; charset=UTF-8\r\n"
                f"Content-Length: {len(body)}\r\nX-Request-Id: {uuid.uuid4().hex}\r\nConnection: close\r\n\r\n")
        try:
            client.sendall(head.encode() + body)
            _linger(client)
        except OSError:
            pass  # the client is gone already


# gunicorn's refusals: (its exception classes, HTTP code, Google status, message); the first match wins.
HTTP_PROBLEMS = (
    ((http_errors.InvalidResponseHeader, http_errors.InvalidResponseHeaderName), 500, "INTERNAL",
     "Internal error encountered."),
    ((http_errors.LimitRequestLine,), 414, "INVALID_ARGUMENT", "The request line is too long."),
    ((http_errors.LimitRequestHeaders,), 431, "INVALID_ARGUMENT", "The request headers are too large or too many."),
    ((http_errors.ExpectationFailed,), 417, "FAILED_PRECONDITION", "Only 'Expect: 100-continue' is supported."),
    ((http_errors.UnsupportedTransferCoding,), 501, "UNIMPLEMENTED", "This Transfer-Encoding is not supported."),
    ((http_errors.ForbiddenProxyRequest,), 403, "PERMISSION_DENIED", "PROXY protocol is not accepted from here."),
    ((http_errors.ConfigurationProblem,), 500, "INTERNAL", "Internal error encountered."),
    ((http_errors.InvalidRequestLine, http_errors.InvalidRequestMethod, http_errors.InvalidHTTPVersion),
     400, "INVALID_ARGUMENT", "The request line is not valid HTTP/1.1."),
    ((http_errors.InvalidHeader, http_errors.InvalidHeaderName, http_errors.ObsoleteFolding), 400,
     "INVALID_ARGUMENT", "A request header is not valid HTTP/1.1."),
    ((http_errors.InvalidChunkSize, http_errors.ChunkMissingTerminator, http_errors.InvalidChunkExtension), 400,
     "INVALID_ARGUMENT", "The chunked request body is not valid HTTP/1.1."),
    ((http_errors.ParseException,), 400, "INVALID_ARGUMENT", "The request is not valid HTTP/1.1."),
)


def http_problem(exc):
    """(code, Google status, message) for an exception gunicorn's worker hands to handle_error."""
    for classes, code, status, message in HTTP_PROBLEMS:
        if isinstance(exc, classes):
            return code, status, message
    return 500, "INTERNAL", "Internal error encountered."


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
        if getattr(self.req.body, "failed", False):
            self.force_close()  # relay answered before reading the whole body: say the connection ends
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


def _linger(client, seconds=1.0, limit=1 << 20):
    """Read what the client still sends before gunicorn closes: closing on unread bytes resets the
    connection, and a client may then lose the error it was sent (a 414 or 431 comes mid-upload)."""
    client.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + seconds
    while limit > 0 and time.monotonic() < deadline:
        client.settimeout(max(0.01, deadline - time.monotonic()))
        data = client.recv(65536)  # a timeout is an OSError, which handle_error expects
        if not data:
            break
        limit -= len(data)


def _stop_reading(client):
    # On the OS socket: gevent's own shutdown() would throw "closed in another greenlet" into the waiting
    # handler (a traceback in the log); the kernel's EOF lets it end like any client that went away.
    try:
        getattr(client, "_sock", client).shutdown(socket.SHUT_RD)
    except OSError:
        pass  # already gone


class RelayLogger(Logger):
    """gunicorn's logger, writing relay's JSON lines (keys scrubbed, a traceback as one field)."""

    def setup(self, cfg):
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(logs.JsonFormatter())


# --- the master's start-up ----------------------------------------------------------------------------


def read_settings(environ=None):
    """(settings, None), or (the defaults, the ConfigError) for :func:`start_up` to report.

    gunicorn.conf.py needs values either way; the error is reported once, by the master, before it binds.
    """
    try:
        return load_settings(environ), None
    except ConfigError as error:
        return load_settings({}), error


def start_up(server, settings, problem):
    """In the master, before any port is bound: refuse bad settings once, then prepare what workers share."""
    logs.install(settings.log_level)
    problem = problem or _port_problem(server.cfg, settings)
    if problem is not None:
        logs.refuse(problem)
    if not _clients_checked(settings):
        raise SystemExit(logs.REFUSED)  # the check has said why
    raise_file_limit()
    server.relay_metrics_dir = None
    if not settings.metrics_dir:
        # prometheus_client's multiprocess mode: every worker writes its samples under one directory and
        # /metrics sums them.  A fresh one per master, so a restart does not resurrect old counts.
        server.relay_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="relay-metrics-")


def announce(server, settings):
    """The start-up line: mode, upstreams (names, URLs, how many keys), store, admin views, where it listens."""
    facts = {**summary(settings), "listening": [str(listener) for listener in server.LISTENERS],
             "workers": server.num_workers}
    upstreams = ", ".join(f"{upstream['name']} {upstream['url']} ({upstream['keys']} key"
                          f"{'' if upstream['keys'] == 1 else 's'})" for upstream in facts["upstreams"])
    log.info("relay starting in %s mode: upstreams %s; store %s; admin views %s; listening on %s", facts["mode"],
             upstreams, facts["store"], facts["admin_views"], ", ".join(facts["listening"]), extra=facts)


def clean_up(server):
    if getattr(server, "relay_metrics_dir", None):
        shutil.rmtree(server.relay_metrics_dir, ignore_errors=True)


def raise_file_limit():
    """Each open stream holds two sockets (caller and upstream): lift the soft file limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))


def _clients_checked(settings):
    """Whether the open-relay check passed; it runs in a child process, which reports a failure itself.

    Only managed mode without a static client key needs it, and it needs the store (are there keys made
    with the CLI?), whose drivers must not load in the master.
    """
    if not settings.managed or settings.client_keys:
        return True
    pid = os.fork()
    if pid == 0:  # the child: whatever happens, it must not go on as a second master
        status = logs.REFUSED
        try:
            status = _check_clients_here(settings)
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _check_clients_here(settings):
    try:
        check_clients(settings)
    except ConfigError as error:
        log.error(str(error), extra={"setting": error.setting})
        return logs.REFUSED
    except Exception:  # noqa: BLE001 - whatever stops the check stops start-up, reported once with its traceback
        log.exception("relay cannot start: checking for client keys failed")
        return logs.REFUSED
    return 0


def _port_problem(cfg, settings):
    """A ConfigError naming the setting to change when an address gunicorn is about to bind is taken."""
    if os.environ.get("LISTEN_FDS") or os.environ.get("GUNICORN_FD"):
        return None  # the sockets are inherited, not bound here
    setting = "PORT" if cfg.bind == [f"0.0.0.0:{settings.port}"] else "--bind"
    for address in cfg.address:
        if not isinstance(address, tuple):
            continue  # a unix socket
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address[:2])
            except OSError as exc:
                where = f"{address[0]}:{address[1]}"
                if exc.errno == errno.EADDRINUSE:
                    return ConfigError(f"{where}: {exc.strerror}: another process listens there; stop it, or set "
                                       f"{setting} to a free port", setting)
                return ConfigError(f"relay cannot listen on {where} ({exc.strerror}); set {setting} to an address "
                                   "this machine has and a port this user may bind", setting)
    return None
