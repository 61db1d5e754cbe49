"""This module provides the upstream HTTP layer: one pooled ``requests.Session`` per worker, and body readers.

The Session decides nothing about keys or retries (that is :mod:`relay.upstream.pool`); it keeps TLS
connections alive across requests and never reads the environment (``trust_env`` off: no proxies or
``.netrc`` credentials slipping into upstream requests behind our back).
"""

import socket

import requests
import urllib3
from requests.adapters import HTTPAdapter

# What can go wrong while reading an upstream body after the headers arrived.
READ_ERRORS = (urllib3.exceptions.HTTPError, requests.RequestException, OSError)


# What every upstream request carries unless the caller's own headers say otherwise.
DEFAULT_HEADERS = {"User-Agent": "relay", "Accept": "*/*", "Accept-Encoding": "gzip, deflate"}


class UpstreamFailure(Exception):
    """An attempt that produced no HTTP response: ``reason`` is connect_timeout, timeout or connection."""

    def __init__(self, reason, detail=""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def make_session(pool_size=2048):
    """A Session with a large per-host pool (gevent runs thousands of streams per worker) and no retries."""
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=16, pool_maxsize=pool_size, max_retries=0, pool_block=False)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def send(session, method, url, headers, body, timeout):
    """Send one attempt and return the streaming response once its headers arrived.

    The request is prepared here and handed to the Session's adapter: ``Session.request`` would re-parse
    and re-quote a URL relay built from checked parts, merge cookie jars, hooks and environment settings
    it never uses — a few hundred microseconds per request that buy nothing on this path.
    """
    prepared = requests.PreparedRequest()
    prepared.prepare_method(method)
    prepared.url = url
    prepared.prepare_headers({**DEFAULT_HEADERS, **headers})
    prepared.body = body
    if body is not None:
        prepared.headers["Content-Length"] = str(len(body))
    prepared.hooks = {"response": []}
    try:
        return session.get_adapter(url).send(prepared, stream=True, timeout=timeout)
    except requests.ConnectTimeout as exc:
        raise UpstreamFailure("connect_timeout", type(exc).__name__) from None
    except requests.Timeout as exc:
        raise UpstreamFailure("timeout", type(exc).__name__) from None
    except (requests.RequestException, OSError) as exc:
        # The exception text names host and path; keys travel only in headers, so it is safe, but we keep
        # just the class name so nothing upstream-specific reaches a client.
        raise UpstreamFailure("connection", type(exc).__name__) from None


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
