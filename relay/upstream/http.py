"""This module provides the upstream HTTP layer: one pooled ``requests.Session`` per worker, and body readers.

The Session decides nothing about keys or retries (that is :mod:`relay.upstream.pool`); it keeps TLS
connections alive across requests and never reads the environment (``trust_env`` off: no proxies or
``.netrc`` credentials slipping into upstream requests behind our back).

Relay's upstreams are a handful of fixed origins, so the transport adapter does once per origin what
requests' stock adapter redoes on every request (see :class:`RelayAdapter`), and the response headers are
read by a direct parser instead of the ``email`` package (see :func:`parse_response_headers`). Together
they take about a third off the CPU an upstream round trip costs; bench/README.md has the numbers.
"""

import datetime
import email.parser
import http.client
import logging
import re
import select
import socket
import ssl

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import Timeout

try:  # the real poll(), not gevent's cooperative stand-in: a zero-timeout check never blocks
    import gevent
    from gevent.monkey import get_original, is_module_patched
except ImportError:  # pragma: no cover - gevent is a runtime dependency
    gevent = None
    _poll = select.poll
else:
    _poll = get_original("select", "poll")

log = logging.getLogger("relay.upstream")

# What can go wrong while reading an upstream body after the headers arrived.
READ_ERRORS = (urllib3.exceptions.HTTPError, requests.RequestException, OSError)


# What every upstream request carries unless the caller's own headers say otherwise.
DEFAULT_HEADERS = {"User-Agent": "relay", "Accept": "*/*", "Accept-Encoding": "gzip, deflate"}
# A request body up to this size goes out in one write with its header block (see _OneWrite).
ONE_WRITE_LIMIT = 256 * 1024


class UpstreamFailure(Exception):
    """An attempt that produced no HTTP response: ``reason`` is connect_timeout, timeout or connection;
    ``cause`` says why in an operator's terms (a key of CAUSES)."""

    def __init__(self, reason, detail="", cause="connection"):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.cause = cause


CAUSES = {
    "dns": "the host name does not resolve (DNS)",
    "refused": "connection refused",
    "tls": "the TLS handshake failed",
    "connect_timeout": "no connection within the connect timeout",
    "timeout": "no answer within the read timeout",
    "reset": "the connection was reset",
    "closed": "the connection closed before an answer",
    "connection": "the connection failed",
}


class _OneWrite:
    """What relay's upstream connections change in urllib3's: a small body leaves in the same write as the
    header block, and the reuse check does not go through the event loop.

    urllib3 writes the header block and then the body, two segments the upstream has to wait for one
    after the other; a request body up to ``ONE_WRITE_LIMIT`` rides along with the headers instead.
    """

    _body_after_headers = None

    def request(self, method, url, body=None, headers=None, **kwargs):
        if (isinstance(body, bytes) and 0 < len(body) <= ONE_WRITE_LIMIT and not kwargs.get("chunked")
                and headers is not None and "Content-Length" in headers):
            self._body_after_headers, body = body, None
        try:
            super().request(method, url, body, headers, **kwargs)
        finally:
            self._body_after_headers = None  # sent with the headers, or the request failed before

    def send(self, data):
        body = self._body_after_headers
        if body is not None:  # the first write after request() is the header block
            self._body_after_headers = None
            data += body
        super().send(data)

    @property
    def is_connected(self):
        # urllib3 asks this before reusing a pooled connection. Its own check goes through gevent's
        # select.poll emulation (an I/O watcher and a hub switch) to learn something a zero-timeout
        # poll(2) says at once: whether the idle socket turned readable, i.e. the upstream closed it.
        return self.sock is not None and not _readable(self.sock)


class _Connection(_OneWrite, HTTPConnection):
    pass


class _TlsConnection(_OneWrite, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection
    tls_settings = None  # the (verify, cert) RelayAdapter.cert_verify last applied


class _TlsPool(HTTPSConnectionPool):
    ConnectionCls = _TlsConnection
    tls_settings = None


class RelayAdapter(HTTPAdapter):
    """requests' transport adapter, minus the per-request work that is fixed per upstream origin.

    The stock adapter parses the URL twice and rebuilds the pool key on every request, stats the CA
    bundle twice for every HTTPS request, copies the response headers into a new dict and runs the cookie
    jar over them. Here the pool and TLS settings are looked up once per origin, the path is cut from the
    URL, and the response keeps urllib3's header dict (case-insensitive, and repeated headers stay apart,
    as Google sent them). ``send`` itself is requests' own, so its error mapping and test doubles
    (``responses``) apply unchanged.
    """

    def init_poolmanager(self, *args, **kwargs):  # called by HTTPAdapter.__init__ (and on unpickling)
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TlsPool}
        self._pools = {}  # (origin, verify, cert) -> the manager's pool for it

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        if proxies:
            return super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        key = (origin_of(request.url), verify, cert)
        pool = self._pools.get(key)
        if pool is None or pool.pool is None:  # a pool the manager evicted is closed: ask it again
            pool = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
            if len(self._pools) >= 64:
                self._pools.clear()
            self._pools[key] = pool
        return pool

    def cert_verify(self, conn, url, verify, cert):
        settings = (verify, cert)
        if getattr(conn, "tls_settings", None) != settings:
            super().cert_verify(conn, url, verify, cert)
            conn.tls_settings = settings

    def request_url(self, request, proxies):
        if proxies:
            return super().request_url(request, proxies)
        return request.url[len(origin_of(request.url)):] or "/"

    def build_response(self, req, resp):
        response = UpstreamResponse()
        response.status_code = resp.status
        response.headers = resp.headers
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url
        response.request = req
        response.connection = self
        return response


class UpstreamResponse(requests.Response):
    """A requests Response that makes its (always empty: relay keeps no cookies) cookie jar only if asked.

    A RequestsCookieJar is built with its own lock for every Response, a tenth of the adapter's cost.
    """

    def __getattr__(self, name):
        if name == "cookies":
            self.cookies = requests.cookies.cookiejar_from_dict({})
            return self.cookies
        raise AttributeError(name)

    def __init__(self):  # requests.Response.__init__, minus the cookie jar
        self._content = False
        self._content_consumed = False
        self._next = None
        self.status_code = None
        self.headers = None
        self.raw = None
        self.url = None
        self.encoding = None
        self.history = []
        self.reason = None
        self.elapsed = _NO_TIME
        self.request = None


_NO_TIME = datetime.timedelta(0)


def origin_of(url):
    """``scheme://host[:port]`` of an absolute URL."""
    end = url.find("/", url.find("://") + 3)
    return url if end < 0 else url[:end]


def make_session(pool_size=2048):
    """A Session with a large per-host pool (gevent runs thousands of streams per worker) and no retries.

    Its responses' headers are read by :func:`parse_response_headers` (installed here if it is not yet).
    """
    install_header_parser()
    session = requests.Session()
    session.trust_env = False
    adapter = RelayAdapter(pool_connections=16, pool_maxsize=pool_size, max_retries=0, pool_block=False)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.relay_adapter = adapter  # send() skips the Session's prefix search: one adapter serves both
    return session


_timeouts = {}


def send(session, method, url, headers, body, timeout, length=None):
    """Send one attempt and return the streaming response once its headers arrived.

    The request is prepared here and handed to the Session's adapter: ``Session.request`` would re-parse
    and re-quote a URL relay built from checked parts, merge cookie jars, hooks and environment settings
    it never uses — a few hundred microseconds per request that buy nothing on this path.

    ``body`` is bytes, or an iterable of bytes sent piece by piece as it yields them (an upload streamed
    through) with ``length`` bytes in all, declared as ``Content-Length``.  An exception the iterable
    raises (the caller hung up) is not an upstream failure: it propagates as it is, after urllib3 closed the
    connection, so the upstream sees the request cut short.
    """
    prepared = requests.PreparedRequest()
    prepared.prepare_method(method)
    prepared.url = url
    prepared.prepare_headers({**DEFAULT_HEADERS, **headers})
    prepared.body = body
    if body is not None:
        prepared.headers["Content-Length"] = str(len(body) if length is None else length)
    prepared.hooks = {"response": []}
    resolved = _timeouts.get(timeout)
    if resolved is None:
        resolved = _timeouts[timeout] = Timeout(connect=timeout[0], read=timeout[1])
    _finish_others_first()
    try:
        adapter = getattr(session, "relay_adapter", None) or session.get_adapter(url)
        return adapter.send(prepared, stream=True, timeout=resolved)
    except requests.ConnectTimeout as exc:
        raise _failure("connect_timeout", exc, url) from None
    except requests.Timeout as exc:
        raise _failure("timeout", exc, url) from None
    except (requests.RequestException, OSError) as exc:
        raise _failure("connection", exc, url) from None


def _failure(reason, exc, url):
    """The UpstreamFailure for ``exc``, logged once with its cause (the log names the upstream's origin only)."""
    cause = failure_cause(exc)
    origin = origin_of(url)
    scheme, _, rest = origin.partition("://")
    origin = f"{scheme}://{rest.rpartition('@')[2]}"
    log.warning("upstream %s failed before answering: %s", origin, CAUSES[cause],
                extra={"upstream_url": origin, "cause": cause, "error": type(exc).__name__})
    # The exception's text names host and path; only its class name goes on, so nothing upstream-specific
    # reaches a client.
    return UpstreamFailure(reason, type(exc).__name__, cause)


def failure_cause(exc):
    """Why an attempt got no HTTP answer, as a key of CAUSES: dns, refused, tls, a timeout, reset, closed."""
    if isinstance(exc, requests.ConnectTimeout):
        return "connect_timeout"
    if isinstance(exc, requests.Timeout):
        return "timeout"
    wrapped = _wrapped(exc)
    for kind, classes in (("dns", (socket.gaierror, urllib3.exceptions.NameResolutionError)),
                          ("tls", (ssl.SSLError, urllib3.exceptions.SSLError, requests.exceptions.SSLError)),
                          ("refused", (ConnectionRefusedError,)),
                          ("reset", (ConnectionResetError, BrokenPipeError)),
                          ("closed", (http.client.RemoteDisconnected, http.client.IncompleteRead))):
        if any(isinstance(error, classes) for error in wrapped):
            return kind
    return "connection"


def _wrapped(exc):
    """``exc`` and the exceptions it wraps (requests → urllib3 → socket), through causes, reasons and args."""
    found, pending = [], [exc]
    while pending and len(found) < 16:
        error = pending.pop(0)
        if not isinstance(error, BaseException) or any(error is seen for seen in found):
            continue
        found.append(error)
        pending += [error.__cause__, error.__context__, getattr(error, "reason", None), *error.args]
    return found


def _finish_others_first():
    """Under gevent, let requests whose upstream answer is already here go on before this one starts its call.

    A request otherwise runs from its first byte to its upstream write without yielding, and gevent's loop
    keeps picking up new requests ahead of answers that are waiting to be relayed: at saturation (64
    callers on 2 workers) p99 was ~0.6 s against ~50 ms with this one yield, and throughput is no lower.
    """
    if gevent is not None and is_module_patched("socket"):
        gevent.sleep(0)


def iter_body(response, chunk_size=65536):
    """An iterator of decoded body bytes as they arrive: per HTTP chunk when chunked, else what is readable.

    It hands back urllib3's own reader rather than wrapping it in a generator of ours: every generator
    layer is a frame kept alive (with its slice of C stack) by each open stream.
    """
    raw = response.raw
    if raw.chunked:
        return raw.stream(None, decode_content=True)
    return iter(lambda: raw.read1(chunk_size, decode_content=True), b"")


def read_limited(response, limit):
    """Read a (small, e.g. error) body completely, keeping at most ``limit`` bytes."""
    parts, size = [], 0
    try:
        for chunk in iter_body(response):
            if size < limit:
                parts.append(chunk[: limit - size])
            size += len(chunk)
    except READ_ERRORS:
        pass
    finally:
        response.close()
    return b"".join(parts)


def abort(response):
    """Cut an upstream response from another greenlet: shut its socket down so a blocked read returns.

    Closing the response there would re-enter the reader the streaming greenlet is blocked in; a socket
    shutdown does not, and the streaming greenlet closes the response itself when its read comes back.
    """
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer: the blocked read has returned or is about to


def _readable(sock):
    poller = _poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


# Response headers: http.client hands the header block to the email package, a general RFC 5322 parser
# that costs more than the rest of reading a response. A block of plain `Name: value` lines (every
# block Google and the usual front ends send) is split here into the same HTTPMessage; anything else
# (folded lines, lines without a colon, odd bytes in a name) still goes to the email parser.
_PLAIN_BLOCK = re.compile(r"(?:[!-9;-~]+:[^\r\n]*\r?\n)*(?:\r?\n)?")
_PLAIN_LINE = re.compile(r"([!-9;-~]+):[ \t]*([^\r\n]*)\r?\n")
_read_headers = http.client._read_headers  # the line reader with http.client's line-length and count limits


def parse_response_headers(fp, _class=http.client.HTTPMessage):
    """``http.client.parse_headers`` with a direct path for plain header blocks; same result, same limits."""
    text = b"".join(_read_headers(fp)).decode("iso-8859-1")
    if _PLAIN_BLOCK.fullmatch(text) is None:
        return email.parser.Parser(_class=_class).parsestr(text)
    message = _class()
    for name, value in _PLAIN_LINE.findall(text):
        message.set_raw(name, value)
    message.set_payload("")
    return message


def install_header_parser():
    """Make http.client (so urllib3, so every upstream response) read headers with parse_response_headers.

    A process-wide change, so it is made by an explicit call at start-up (create_app, make_session), never
    by importing this module.
    """
    http.client.parse_headers = parse_response_headers
