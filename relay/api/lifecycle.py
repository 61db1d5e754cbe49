"""This module provides what every request goes through: a request id, one error handler, the access log.

Errors have one way out: anything raised as a :class:`RelayError` (or a Werkzeug HTTP error, or a bug)
is rendered in Google's shape here.  The access-log line and the usage row are written when the response
body is finished — for streams, after the last event or the client's disconnect.
"""

import logging
import re
import time
import uuid

from flask import Response, g, request
from werkzeug.exceptions import HTTPException

from relay.observability import accesslog, metrics
from relay.errors import (
    InvalidArgument, Internal, MethodNotAllowed, NotFound, PayloadTooLarge, RelayError,
)
from relay.pipeline.encoders import GEMINI
from relay.pipeline.streams import StreamBody
from relay.services import current

log = logging.getLogger("relay")

HTTP_ERRORS = {
    404: lambda: NotFound("The requested URL was not found on this relay. See the README for the endpoints."),
    405: lambda: MethodNotAllowed(f"Method {request.method} is not allowed for this resource."),
    413: lambda: PayloadTooLarge(
        f"Request payload size exceeds the limit: {current().settings.max_body_bytes} bytes."),
}


def init_app(app):
    app.before_request(_start)
    app.after_request(_finish)
    app.register_error_handler(RelayError, render_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)


def _start():
    g.request_id = uuid.uuid4().hex
    g.started = time.perf_counter()
    host = request.environ.get("HTTP_HOST")
    if (host is None and request.environ.get("SERVER_PROTOCOL") == "HTTP/1.1") or (host is not None and "," in host):
        # HTTP/1.1 requires exactly one Host header (RFC 9112 §3.2).
        raise InvalidArgument("An HTTP/1.1 request must carry exactly one Host header.")


def render_error(error):
    """A RelayError in the shape of the front door the call came through (Google's, stream-shaped variants
    included, unless the call's encoder says otherwise).  A front door that must answer in its own shape
    before a call exists (a bad key, an unmatched path) sets ``g.encoder``, which then wins."""
    call = g.get("call")
    encoder = g.get("encoder") or (call.encoder if call is not None else GEMINI)
    status, content_type, body = encoder.render_error(call, error)
    if call is not None:
        call.status = status
    response = Response(body, status=status, content_type=content_type)
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def respond(reply):
    """The Flask response for forwarding's Reply; a streamed body is handed to the server as it is."""
    return Response(reply.body, status=reply.status, headers=reply.headers, direct_passthrough=reply.streamed)


def _http_error(error):
    make = HTTP_ERRORS.get(error.code)
    if make is not None:
        relay_error = make()
        if getattr(error, "valid_methods", None):
            relay_error.headers["Allow"] = ", ".join(error.valid_methods)
        return render_error(relay_error)
    relay_error = InvalidArgument(error.description or "Bad request.") if error.code == 400 else RelayError(error.description)
    relay_error.code = error.code
    return render_error(relay_error)


def _unexpected(error):
    log.exception("unexpected error in request %s", g.get("request_id"))
    return render_error(Internal(f"Internal error encountered. Request id: {g.get('request_id')}."))


_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def route_name(call):
    """A readable route for the log: ``/{version}/models/{model}:generateContent`` (never the raw URL)."""
    if request.url_rule is None:
        return "(unmatched)"
    rule = request.url_rule.rule
    if call is not None and rule.endswith("<target>"):
        rule = rule[: -len("<target>")] + "<model>:" + call.method
    return _CONVERTER.sub(lambda match: "{" + match.group(1) + "}", rule)


def _finish(response):
    request_id = g.get("request_id") or uuid.uuid4().hex
    response.headers["X-Request-Id"] = request_id
    call = g.get("call")
    http_method = request.method
    route = route_name(call)
    started = g.get("started") or time.perf_counter()
    status = response.status_code
    services = current()
    door_encoder = g.get("encoder")
    if call is not None and door_encoder is not None and call.encoder is GEMINI:
        call.encoder = door_encoder  # the call failed (e.g. a bad key) before its view set its door's encoder
    door = call.door if call is not None else (door_encoder or GEMINI).door

    def done():
        if call is not None:
            call.latency_ms = (time.perf_counter() - call.started) * 1000
            call.status = call.status or status
            services.finished(call)
        final_status = call.status if call else status
        accesslog.write(accesslog.access_line(request_id, http_method, route, final_status, started, call, door))
        metrics.request_done(route, call.requested_model if call else None, final_status, time.perf_counter() - started,
                             door)

    # Relayed streams bypass werkzeug's closing wrapper (see streams.StreamBody) and run it themselves.
    body = response.response if response.direct_passthrough else None
    (body.call_on_close if isinstance(body, StreamBody) else response.call_on_close)(done)
    return response
