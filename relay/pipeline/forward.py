"""This module provides the forwarding core: one request in, attempts upstream with failover, bytes back out.

A view builds a :class:`Call` (what was asked, by whom, with which body) and hands it to :func:`forward`.
Before any byte reaches the client, failures move on to the next key or upstream; after the first byte
nothing is retried and a failure ends the stream with one in-band error.  Bodies are relayed as the
upstream sent them: streams event by event, large unary bodies chunk by chunk, never parsed whole.
"""

import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from relay.pipeline import clientwatch
from relay.gemini import framing
from relay.gemini.methods import accounts_usage
from relay.errors import JSON_CONTENT_TYPE, DeadlineExceeded, RelayError, Unavailable
from relay.pipeline.encoders import GEMINI
from relay.pipeline.streams import StreamBody, relay_stream, relay_unary_chunks
from relay.upstream.http import READ_ERRORS, UpstreamFailure, iter_body, read_limited, send
from relay.upstream.pool import KEYS_REFUSED, Target
from relay.upstream.verdict import classify_error, google_error, steers_identity

INF = float("inf")
ERROR_BODY_LIMIT = 1024 * 1024
SMALL_BODY = 1024 * 1024
INSPECT_LIMIT = 64 * 1024 * 1024
# Request headers worth passing on; everything else stays here: credentials (Authorization, x-goog-api-key,
# Cookie, X-Goog-AuthUser…), hop-by-hop headers, method overrides, and what picks the format of the bytes
# relay must read: Accept (relay wants JSON, chosen by ``alt``) and Content-Type (relay sends its own, see
# pipeline/request.py).  relay.gemini.parameters widens X-Goog-FieldMask and, in managed mode, drops
# X-Goog-User-Project.
FORWARD_REQUEST_HEADERS = (
    "User-Agent", "X-Goog-Api-Client", "X-Goog-Request-Params", "X-Goog-User-Project", "X-Server-Timeout",
    "X-Goog-Request-Reason", "X-Goog-FieldMask", "Accept-Language",
)
DROP_RESPONSE_HEADERS = {
    "content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive", "date", "server",
    "alt-svc", "set-cookie", "proxy-authenticate", "trailer", "upgrade",
}


@dataclass(frozen=True)
class UpstreamError:
    """An upstream answer with an error status, its (small, already read and scrubbed) body."""

    status: int
    headers: object
    body: bytes
    google_shaped: bool


class UpstreamHttpError(RelayError):
    """An upstream error status relayed in Google's shape when the upstream's own body was not."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.status = GOOGLE_STATUS.get(code, "UNKNOWN")


class CallerCancelled(RelayError):
    """The caller hung up before the answer was ready (nobody reads this; it is for the log and usage)."""

    code, status = 499, "CANCELLED"
    message = "The caller closed the connection before the response was ready."


GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED",
                 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


@dataclass
class Call:
    """Everything about one relayed request, filled in as it goes (the access log and usage read it)."""

    request_id: str
    http_method: str
    version: str
    route: str
    resource: str  # upstream path after the version, e.g. "models/gemini-2.5-flash:generateContent"
    method: str  # generateContent, models.list, cachedContents.get, ...
    query: list
    headers: dict
    client: object = None
    requested_model: str | None = None
    upstream_model: str | None = None
    body: bytes | None = None
    parsed: dict | None = None
    stream: str | None = None  # "sse", "array" or None
    pinned_key_id: str | None = None
    read_timeout: float | None = None
    client_socket: object = None  # gunicorn's socket for the caller, to notice a hang-up mid-stream
    inspect: object = None  # callable(call, body bytes) -> new bytes or None, for bodies relay must read
    scratch: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    ts: float = field(default_factory=time.time)
    target: Target | None = None
    attempts: int = 0
    upstream_status: int | None = None
    status: int | None = None
    usage: dict | None = None
    first_byte_ms: float | None = None
    aborted: str | None = None  # "client", "upstream" or "shutdown"
    latency_ms: float = 0.0
    encoder: object = GEMINI  # how the answer is written to the caller (pipeline.encoders)
    batch: bool = False  # the usage of a batch job (relay.clients.batch_usage), not of this request's own answer
    prefix: str = ""  # upstream path before the version: "/upload" or "/download" for Files API media

    @property
    def door(self):
        """The front door the call came through, "gemini" or "openai": its encoder's."""
        return self.encoder.door


@dataclass
class Reply:
    """What forwarding answers, for the front door to send: a status, headers and a body (bytes, or a
    StreamBody that yields the answer as it arrives)."""

    status: int
    headers: list
    body: object
    streamed: bool = False


def forward(call, services):
    """Relay ``call`` upstream and return its :class:`Reply` (streamed or not)."""
    stop_watching = clientwatch.interrupt_on_hangup(call.client_socket)
    try:
        return _forward(call, services)
    except clientwatch.CallerGone:
        call.aborted = "client"
        raise CallerCancelled() from None
    finally:
        stop_watching()


def _forward(call, services):
    upstream, target = open_upstream(call, services)
    call.target = target
    if isinstance(upstream, UpstreamError):
        return upstream_error_response(call, upstream)
    headers = response_headers(upstream.headers, call)
    if call.stream:
        return Reply(upstream.status_code, headers, StreamBody(relay_stream(call, upstream)), streamed=True)
    length = upstream.headers.get("Content-Length")
    small = length is not None and length.isdigit() and int(length) <= SMALL_BODY
    if call.inspect is not None or call.encoder.translates_units or small:
        body, head = read_for_inspection(upstream)
        if body is None and not call.encoder.translates_units:
            # Too long to read whole (a finished batch's inlined results can be): relayed uninspected.
            return Reply(upstream.status_code, headers, StreamBody(relay_unary_chunks(call, upstream, head)),
                         streamed=True)
        if body is None:
            upstream.close()
            body = b"".join(head)[:INSPECT_LIMIT]
        call.status = upstream.status_code
        if call.inspect is not None:
            body = call.inspect(call, body) or body
        call.usage = framing.find_usage(body) if accounts_usage(call.method) else None
        return Reply(upstream.status_code, headers, call.encoder.unary(call, body))
    return Reply(upstream.status_code, headers, StreamBody(relay_unary_chunks(call, upstream)), streamed=True)


def read_for_inspection(upstream):
    """(body, None) for an answer of at most INSPECT_LIMIT bytes, read whole; (None, the chunks read so far) for a
    longer one, the rest of which is still to be read."""
    chunks, size = [], 0
    try:
        for chunk in iter_body(upstream):
            chunks.append(chunk)
            size += len(chunk)
            if size > INSPECT_LIMIT:
                return None, chunks
    except READ_ERRORS:
        pass
    upstream.close()
    return b"".join(chunks), None


def open_upstream(call, services):
    """Try targets in order until one answers 2xx or a non-retryable error: (response or UpstreamError, target)."""
    settings = services.settings
    targets = plan_targets(call, services)
    deadline = time.monotonic() + settings.retry_deadline
    url = upstream_url(call)
    last_failure = last_error = last_outcome = None
    soonest_429 = None  # (retry delay, error) of the rate-limited attempt whose key frees up first
    steered = steers_identity(call.query, call.headers)
    route_header(call)
    for target in targets[: settings.max_attempts]:
        if call.attempts and time.monotonic() > deadline:
            break
        call.attempts += 1
        call.target = target
        headers = dict(call.headers)
        headers["x-goog-api-key"] = target.key if target.key is not None else call.client.passthrough_key
        timeout = (target.upstream.connect_timeout or settings.connect_timeout,
                   call.read_timeout or target.upstream.read_timeout or settings.read_timeout)
        try:
            response = send(services.session, call.http_method, target.upstream.url + url, headers, call.body, timeout)
        except UpstreamFailure as failure:
            services.record(call, target, "connection_error", failure.reason)
            last_failure, last_error, last_outcome = failure, None, "connection_error"
            continue
        call.upstream_status = response.status_code
        if response.status_code < 400:
            services.record(call, target, "ok")
            return response, target
        verdict, last_error = judge_error(call, services, target, response, steered)
        last_outcome, retry_delay, last_failure = verdict.outcome, verdict.retry_delay, None
        if last_outcome == "rate_limited" and (soonest_429 is None or (retry_delay or INF) < soonest_429[0]):
            soonest_429 = (retry_delay or INF, last_error)
        if last_outcome == "caller_error":
            break
    if settings.managed and last_outcome == "key_invalid":
        # Google refused relay's key, not the caller's: say what it means for them, never which key.
        plan_targets(call, services)  # 429 if the others are cooling down, 503 if all are disabled
        raise Unavailable(KEYS_REFUSED)
    if last_outcome == "rate_limited":
        # Relay Google's own 429, the one whose RetryInfo frees up first.
        last_error = soonest_429[1]
    if last_error is not None:
        return last_error, call.target
    if last_failure is not None and last_failure.reason == "timeout":
        raise DeadlineExceeded("The upstream did not answer in time.")
    raise Unavailable("The upstream service is unreachable. Please try again later.")


def judge_error(call, services, target, response, steered):
    """Read an upstream error answer, judge it (see relay.upstream.verdict) and record the verdict for the key:
    (Verdict, UpstreamError)."""
    error_body, error, verdict = judge_error_body(call, services, target, response.status_code,
                                                  read_limited(response, ERROR_BODY_LIMIT), steered)
    return verdict, UpstreamError(response.status_code, response.headers, error_body, google_shaped=error is not None)


def judge_error_body(call, services, target, status, body, steered=False):
    """Judge an upstream error answer's (at most ERROR_BODY_LIMIT) ``body`` for the key that got it and record
    the verdict: (the body with keys scrubbed, Google's error object or None, Verdict).  REST and Live share it."""
    body = scrub(body[:ERROR_BODY_LIMIT], call_secrets(call, target))
    error = google_error(body)
    verdict = classify_error(status, error, steered=steered)
    services.record(call, target, verdict.outcome, retry_delay=verdict.retry_delay,
                    model=call.upstream_model if verdict.per_model else None, reason=verdict.reason)
    return body, error, verdict


def route_header(call):
    """Google's routing header (legacy SDKs send ``model=models/…``) must name the model relay calls, not the
    one the caller wrote: after a suffix or alias they differ.  Any other value is dropped."""
    if "X-Goog-Request-Params" not in call.headers:
        return
    resource = call.resource.partition(":")[0]
    if resource.startswith(("models/", "tunedModels/")):
        call.headers["X-Goog-Request-Params"] = f"model={resource}"
    else:
        del call.headers["X-Goog-Request-Params"]


def plan_targets(call, services):
    if not services.settings.managed:
        upstreams = services.pool.serving(call.upstream_model) or list(services.settings.upstreams)
        return [Target(upstreams[0], None, "passthrough")]
    return services.pool.plan(call.upstream_model, pinned_key_id=call.pinned_key_id)


def upstream_url(call):
    query = f"?{urlencode(call.query)}" if call.query else ""
    return f"{call.prefix}/{call.version}/{call.resource}{query}"


def call_secrets(call, target):
    """The keys an upstream answer to ``call`` must never carry back: the upstream key, the caller's own."""
    return [secret for secret in (target.key if target else None, getattr(call.client, "passthrough_key", None))
            if secret]


def scrub(body, secrets):
    """Remove any key that an upstream error body might echo back."""
    for secret in secrets:
        if len(secret) >= 8:
            body = body.replace(secret.encode(), b"[redacted]")
    return body


def upstream_error_response(call, error):
    """Relay an upstream error as it came, if it is Google-shaped; otherwise say the same thing in Google's shape."""
    call.status = error.status
    if not error.google_shaped:
        # An HTML 502 page from a front end, an empty 500: callers and SDKs expect {"error": {...}}.
        raise UpstreamHttpError(error.status, f"The upstream answered HTTP {error.status} without a Google error body.")
    headers = response_headers(error.headers, call)
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", JSON_CONTENT_TYPE))
    return Reply(*call.encoder.upstream_error(call, error.status, headers, error.body))


def response_headers(upstream_headers, call):
    """The upstream's headers worth relaying, repeated ones kept apart as sent; any that would carry a key is
    dropped."""
    secrets = call_secrets(call, call.target)
    return [
        (name, value) for name, value in upstream_headers.items()
        if name.lower() not in DROP_RESPONSE_HEADERS and not any(secret in value for secret in secrets)
    ]
