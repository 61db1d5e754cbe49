"""This module provides the upstream side of a Live session: dialling Google's WebSocket with a pooled key, with
failover until Google accepts the setup.

websocket-client does the dialling: it is plain blocking sockets, which gunicorn's gevent worker has
patched, so each session's upstream is one more cooperative socket — no second event loop, no thread.
The key travels in ``x-goog-api-key`` on the upgrade request, never in the URL.  Until Google answers the
setup, a 429 or 5xx at the upgrade, a connection failure, a timeout or a close (unless it is about the
request: 1007/1008) moves on to the next key or upstream, at most ``RELAY_MAX_ATTEMPTS`` times within
``RELAY_RETRY_DEADLINE``; after that nothing is retried.  Once established the socket has no timeout:
how long a quiet session may stay open is Google's call (RELAY_READ_TIMEOUT does not apply).
"""

import socket
import time
from dataclasses import dataclass

import websocket

from relay.errors import RelayError
from relay.live.protocol import (
    INTERNAL, TRY_AGAIN_LATER, LiveRefusal, judge_close, parse_close, refusal_for, sendable,
)
from relay.live.client_socket import SOCKET_OPTIONS
from relay.live.tokens import TOKEN_PREFIX
from relay.pipeline.forward import judge_error_body, plan_targets
from relay.upstream.pool import KEYS_REFUSED

SETUP_TIMEOUT = 30.0  # seconds from the upgrade to Google's answer to setup
PING_SECONDS = 20.0  # google-genai's (websockets') default ping interval
ERROR_BODY_LIMIT = 64 * 1024
FORWARD_HEADERS = ("User-Agent", "X-Goog-Api-Client")
OPCODES = {websocket.ABNF.OPCODE_TEXT: "text", websocket.ABNF.OPCODE_BINARY: "binary",
           websocket.ABNF.OPCODE_CLOSE: "close"}
CONNECTION_ERRORS = (websocket.WebSocketException, OSError)


class UpstreamLost(Exception):
    """The upstream connection ended without a close frame (reset, EOF, protocol error)."""


def live_url(base_url, version, rpc="BidiGenerateContent"):
    """The WebSocket URL of the Live method on an upstream whose REST base is ``base_url`` (https → wss)."""
    scheme, _, rest = base_url.rstrip("/").partition("://")
    ws_scheme = "ws" if scheme == "http" else "wss"
    return f"{ws_scheme}://{rest}/ws/google.ai.generativelanguage.{version}.GenerativeService.{rpc}"


class UpstreamSocket:
    """A connected upstream WebSocket: ``receive`` → (kind, bytes), ``send`` str or bytes, ``close`` once."""

    def __init__(self, ws):
        self._ws = ws
        self._closing = False

    def receive(self):
        """The next message as ("text" | "binary" | "close", payload); raises UpstreamLost without a close."""
        try:
            while True:
                opcode, frame = self._ws.recv_data_frame(control_frame=False)
                kind = OPCODES.get(opcode)
                if kind is not None:
                    return kind, frame.data
        except CONNECTION_ERRORS as error:
            raise UpstreamLost(str(error) or type(error).__name__) from None

    def send(self, message):
        """Send a str as a text frame, bytes as a binary frame; returns the payload's length in bytes."""
        if isinstance(message, str):
            message, opcode = message.encode(), websocket.ABNF.OPCODE_TEXT
        else:
            opcode = websocket.ABNF.OPCODE_BINARY
        try:
            self._ws.send(message, opcode)
        except CONNECTION_ERRORS as error:
            raise UpstreamLost(str(error) or type(error).__name__) from None
        return len(message)

    def ping(self):
        """A WebSocket ping, as google-genai sends one every 20 s: an idle session looks to Google as it would
        without relay in between (the caller's own pings end at relay)."""
        try:
            self._ws.ping()
        except CONNECTION_ERRORS:
            pass  # the receiving side notices a dead connection

    def settimeout(self, seconds):
        self._ws.settimeout(seconds)

    def close(self, code, reason):
        """Send a close frame without waiting for the answer (the receiving side reads it); never raises."""
        if self._closing:
            return
        self._closing = True
        try:
            self._ws.send_close(sendable(code, 1000), reason.encode()[:123])
        except CONNECTION_ERRORS:
            pass

    def shutdown(self):
        self._ws.shutdown()


@dataclass
class Established:
    """An upstream that accepted the setup, and its first message (``setupComplete``), to relay first."""

    socket: UpstreamSocket
    kind: str
    data: bytes


@dataclass
class Failed:
    outcome: str
    refusal: LiveRefusal


def connect(session, setup_message):
    """Dial targets in turn until one accepts ``setup_message``: an :class:`Established`, or a LiveRefusal."""
    call, services = session.call, session.services
    settings = services.settings
    try:
        targets = plan_targets(call, services)
    except RelayError as error:  # every key cooling (429) or refused (503), or no upstream serves the model
        raise refusal_for(error) from None
    deadline = time.monotonic() + settings.retry_deadline
    failures = []
    for target in targets[: settings.max_attempts]:
        if call.attempts and time.monotonic() > deadline:
            break
        call.attempts += 1
        call.target = target
        result = attempt(session, target, setup_message)
        if isinstance(result, Established):
            return result
        failures.append(result)
        if result.outcome == "caller_error":
            break
    raise final_refusal(failures, settings.managed)


def final_refusal(failures, managed):
    """What the caller hears when no attempt got through: the request's own fault as Google put it; else 429s
    as 1013, refused keys and everything else as 1011."""
    outcomes = [failure.outcome for failure in failures]
    if "caller_error" in outcomes:
        return failures[-1].refusal
    if "rate_limited" in outcomes:
        return LiveRefusal(TRY_AGAIN_LATER, "RESOURCE_EXHAUSTED: every upstream key is rate limited; retry later.", 429)
    if managed and "key_invalid" in outcomes:
        return LiveRefusal(INTERNAL, f"UNAVAILABLE: {KEYS_REFUSED}", 503)
    return LiveRefusal(INTERNAL, "UNAVAILABLE: the upstream service is unreachable. Please try again later.", 503)


def attempt(session, target, setup_message):
    """One upstream attempt: upgrade, send setup, read the answer; the outcome is recorded for the key."""
    call, services = session.call, session.services
    try:
        upstream = dial(session, target)
    except websocket.WebSocketBadStatusException as refused:
        return handshake_refused(session, target, refused)
    except CONNECTION_ERRORS as error:
        services.record(call, target, "connection_error", "timeout" if _timed_out(error) else "connection")
        return Failed("connection_error", None)
    try:
        upstream.send(setup_message)
        kind, data = upstream.receive()
    except UpstreamLost:
        upstream.shutdown()
        services.record(call, target, "connection_error", "setup")
        return Failed("connection_error", None)
    if kind == "close":
        upstream.shutdown()
        code, reason = parse_close(data)
        outcome = judge_close(code, reason)
        services.record(call, target, outcome, f"close_{code}")
        call.upstream_status = code
        return Failed(outcome, LiveRefusal(sendable(code), reason, 400 if outcome == "caller_error" else 502))
    services.record(call, target, "ok")
    call.upstream_status = 101
    upstream.settimeout(None)
    return Established(upstream, kind, data)


def dial(session, target):
    """Open the upstream WebSocket for ``target`` (a relay key, or the caller's own in passthrough mode)."""
    settings = session.services.settings
    key = target.key if target.key is not None else session.call.client.passthrough_key
    headers = [f"{name}: {session.headers[name]}" for name in FORWARD_HEADERS if session.headers.get(name)]
    rpc = "BidiGenerateContent"
    if key.startswith(TOKEN_PREFIX):  # passthrough mode: a caller's token from Google, for Google to check
        headers.append(f"Authorization: Token {key}")
        rpc = "BidiGenerateContentConstrained"
    else:
        headers.append(f"x-goog-api-key: {key}")
    timeout = target.upstream.connect_timeout or settings.connect_timeout
    ws = websocket.create_connection(
        live_url(target.upstream.url, session.call.version, rpc), timeout=timeout, header=headers, suppress_origin=True,
        sockopt=SOCKET_OPTIONS, enable_multithread=True, skip_utf8_validation=True, http_no_proxy=["*"],
    )
    ws.settimeout(SETUP_TIMEOUT)
    return UpstreamSocket(ws)


def handshake_refused(session, target, refused):
    """A non-101 answer to the upgrade, judged like a REST error answer (relay.upstream.verdict)."""
    call = session.call
    answered = (refused.resp_body or b"")[:ERROR_BODY_LIMIT]
    _, error, verdict = judge_error_body(call, session.services, target, refused.status_code, answered)
    call.upstream_status = refused.status_code
    message = (error or {}).get("message") or f"the upstream answered HTTP {refused.status_code} to the upgrade."
    status = (error or {}).get("status") or "UNAVAILABLE"
    code = 1007 if refused.status_code == 400 else 1008 if refused.status_code in (401, 403, 404) else INTERNAL
    return Failed(verdict.outcome, LiveRefusal(code, f"{status}: {message}", refused.status_code))


def _timed_out(error):
    return isinstance(error, (websocket.WebSocketTimeoutException, TimeoutError, socket.timeout))
