"""This module provides uploads streamed through relay: the caller's body goes upstream as it arrives.

A Files API upload (a resumable chunk, or a whole multipart upload) can be 2 GB.  Its body is read
straight from the server's input stream (gunicorn's reader, never werkzeug's buffered ``get_data``),
:data:`PIECE` bytes at a time, and handed to requests as an iterable with the ``Content-Length`` the
caller declared, so neither relay's memory nor its disk ever holds more than a piece or two.  The
length is required (411 without one), checked against ``RELAY_MAX_UPLOAD_MB`` before anything is sent
(413), and must be what arrives: a body that ends early, or that stays silent for ``RELAY_READ_TIMEOUT``
seconds, means the caller is gone, and the upstream request is cut short (urllib3 closes its
connection), which leaves Google's upload where it was so the caller can ask (``query``) and resume.

An upload is sent once, to the one key that owns its session: nothing is retried on another key after
its first byte left.  The upstream's answer (plain text or JSON, with Google's ``X-Goog-Upload-*``
headers) is relayed as it came, minus anything that names the upstream session.
"""

import re

from relay.errors import DeadlineExceeded, InvalidArgument, PayloadTooLarge, RelayError, Unavailable
from relay.pipeline.forward import CallerCancelled, Reply, judge_error, response_headers, scrub
from relay.upstream.http import UpstreamFailure, read_limited, send

try:
    import gevent
    from gevent import monkey
except ImportError:  # pragma: no cover - gevent is a runtime dependency
    gevent = None

# Read and sent a MiB at a time: gunicorn's reader takes up to a MiB per recv() anyway, and on this 2-core box
# 64 KiB pieces cost a third of the throughput in per-piece Python (bench/transfer_files.py).
PIECE = 1024 * 1024
ANSWER_LIMIT = 1024 * 1024  # an upload answer is empty, a status, or one File resource
COMMANDS = frozenset({"start", "upload", "finalize", "query", "cancel"})
# The upload protocol's request headers relay passes on: (header, pattern of a valid value, required to be
# valid).  A malformed protocol, command, offset or length is a 400; a file name or type that HTTP cannot
# carry on as it is (non-ASCII, control characters) is dropped: Google takes them from the start's body too.
PROTOCOL_HEADERS = (
    ("X-Goog-Upload-Protocol", re.compile(r"resumable|multipart", re.IGNORECASE), True),
    ("X-Goog-Upload-Command", re.compile(r"[a-z ,]{1,64}", re.IGNORECASE), True),
    ("X-Goog-Upload-Offset", re.compile(r"\d{1,19}"), True),
    ("X-Goog-Upload-Header-Content-Length", re.compile(r"\d{1,19}"), True),
    ("X-Goog-Upload-Header-Content-Type", re.compile(r"[\x21-\x7e][\x20-\x7e]{0,254}"), False),
    ("X-Goog-Upload-File-Name", re.compile(r"[\x21-\x7e][\x20-\x7e]{0,511}"), False),
)
# Upstream answer headers that name the upstream session (its id is the credential to upload into it).
SESSION_HEADERS = frozenset({"x-guploader-uploadid", "x-goog-upload-url", "x-goog-upload-control-url"})


class CallerHungUp(Exception):
    """The caller's body ended before its Content-Length, or stalled: it is gone (never an OSError, so that
    urllib3 and requests let it through untouched)."""


class LengthRequired(RelayError):
    code, status = 411, "INVALID_ARGUMENT"
    message = "An upload needs a Content-Length header (chunked bodies are not relayed)."


def environ_header(environ, name):
    return environ.get("HTTP_" + name.upper().replace("-", "_"))


def protocol_headers(environ):
    """The caller's upload-protocol headers, each checked: a malformed one is a 400, never passed on."""
    headers = {}
    for name, pattern, required in PROTOCOL_HEADERS:
        value = environ_header(environ, name)
        if value is None:
            continue
        value = value.strip()
        if pattern.fullmatch(value):
            headers[name] = value
        elif required:
            raise InvalidArgument(f"Invalid {name} header {value[:60]!r}.")
    return headers


def commands(headers):
    """The set of ``X-Goog-Upload-Command`` words (``upload, finalize`` → {upload, finalize}); 400 for others."""
    words = {word.strip().lower() for word in headers.get("X-Goog-Upload-Command", "").split(",") if word.strip()}
    if not words <= COMMANDS:
        raise InvalidArgument(f"Unknown X-Goog-Upload-Command {', '.join(sorted(words - COMMANDS))[:60]!r}.")
    return words


def body_length(environ, limit):
    """The caller's declared body length: required, and at most ``limit`` bytes (413 before anything is sent)."""
    if environ_header(environ, "Transfer-Encoding"):
        raise LengthRequired()
    text = (environ.get("CONTENT_LENGTH") or "").strip()
    if not text.isdigit():
        raise LengthRequired()
    length = int(text)
    if length > limit:
        raise PayloadTooLarge(f"Request payload size exceeds the limit: {limit} bytes (RELAY_MAX_UPLOAD_MB).")
    return length


def caller_body(stream, length, idle_timeout):
    """The caller's body as a generator of pieces, exactly ``length`` bytes, read as requests sends them.

    Raises :class:`CallerHungUp` when the stream ends early, fails, or stays silent for ``idle_timeout``.
    """
    remaining = length
    while remaining:
        piece = _read(stream, min(PIECE, remaining), idle_timeout)
        if not piece:
            raise CallerHungUp("the body ended before its Content-Length")
        remaining -= len(piece)
        yield piece


def _read(stream, size, idle_timeout):
    try:
        if gevent is None or not monkey.is_module_patched("socket"):
            return stream.read(size)
        with gevent.Timeout(idle_timeout, CallerHungUp("the caller stopped sending")):
            return stream.read(size)
    except OSError:
        raise CallerHungUp("the caller's connection failed") from None


def send_once(call, services, target, path, headers, body, length):
    """Send ``body`` (bytes, or :func:`caller_body`) to ``path`` on ``target`` once, never retried.

    Returns the upstream response when it is not an error; relays an error answer as a Reply (see
    :func:`relay_answer`); raises CallerCancelled when the caller hung up, 503/504 when the upstream failed.
    """
    call.target, call.attempts = target, call.attempts + 1
    headers = dict(headers)
    key = target.key if target.key is not None else call.client.passthrough_key
    if key:
        headers["x-goog-api-key"] = key
    settings = services.settings
    timeout = (target.upstream.connect_timeout or settings.connect_timeout,
               call.read_timeout or target.upstream.read_timeout or settings.read_timeout)
    try:
        response = send(services.session, "POST", target.upstream.url + path, headers, body, timeout, length=length)
    except CallerHungUp:
        call.aborted = "client"
        raise CallerCancelled() from None
    except UpstreamFailure as failure:
        services.record(call, target, "connection_error", failure.reason)
        if failure.reason == "timeout":
            raise DeadlineExceeded("The upstream did not answer the upload in time; ask where it stands "
                                   "(X-Goog-Upload-Command: query) and resume.") from None
        raise Unavailable("The upstream connection failed during the upload; ask where it stands "
                          "(X-Goog-Upload-Command: query) and resume.") from None
    call.upstream_status = response.status_code
    if response.status_code < 400:
        services.record(call, target, "ok")
    return response


def relay_answer(call, services, response, hidden=()):
    """The Reply for an upstream upload answer, relayed as it came: status, body (read whole, it is small)
    and headers, minus the headers that name the upstream session and any of the ``hidden`` strings (the
    upstream session's id and URL), which are also scrubbed from the body.  Returns (Reply, body bytes)."""
    call.status = response.status_code
    if response.status_code >= 400:
        _verdict, error = judge_error(call, services, call.target, response, steered=False)
        status, upstream_headers, body = error.status, error.headers, error.body
    else:
        status, upstream_headers, body = response.status_code, response.headers, read_limited(response, ANSWER_LIMIT)
    body = scrub(body, [secret for secret in hidden if secret])
    headers = [(name, value) for name, value in response_headers(upstream_headers, call)
               if name.lower() not in SESSION_HEADERS and not any(secret and secret in value for secret in hidden)]
    return Reply(status, headers, call.encoder.unary(call, body)), body
