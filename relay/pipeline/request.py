"""This module provides the first steps of every relayed call: the Call, who is calling, and what they sent
besides the body (headers and query parameters worth passing on).

Both front doors start here, so what reaches the upstream is decided in one place: the caller's headers
pass an allowlist (``FORWARD_REQUEST_HEADERS``), and headers and query parameters alike go through
:mod:`relay.gemini.parameters` (credentials stripped, field masks widened, unreadable formats refused).
"""

from flask import g, request

from relay.clients.auth import presented_key
from relay.errors import bad_request
from relay.gemini import parameters
from relay.pipeline.forward import FORWARD_REQUEST_HEADERS, Call
from relay.services import current

# (header name, WSGI environ key): read straight from the environ, once per header, on every request.
FORWARD_ENVIRON_KEYS = tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in FORWARD_REQUEST_HEADERS)
# relay parses every body it forwards as JSON, so that is what it tells the upstream, whatever the caller said.
BODY_CONTENT_TYPE = "application/json"
BODY_METHODS = ("POST", "PATCH")


def begin(version, method, requested_model=None, resource="", stream=None, authenticate=True):
    """Start the Call every view fills in (the access log reads it too), authenticate the caller, then decide
    which of its query parameters and headers go upstream (a 400 for one relay cannot relay).

    ``authenticate=False`` leaves ``call.client`` to the view: an upload's chunks may carry no key, their
    upload id is the credential (relay.api.uploads)."""
    services = current()
    call = Call(
        request_id=g.request_id, http_method=request.method, version=version, route=request.url_rule.rule,
        resource=resource, method=method, query=[], headers={}, requested_model=requested_model, stream=stream,
        client_socket=request.environ.get("gunicorn.socket"),
    )
    g.call = call
    if authenticate:
        call.client = services.auth.authenticate(presented_key(request.headers, request.args))
    managed = services.settings.managed
    call.query = parameters.forwarded_query(request.args.items(multi=True), method, managed)
    call.headers = parameters.forwarded_header_values(forwarded_headers(request.environ), method, managed)
    if request.method in BODY_METHODS:
        call.headers["Content-Type"] = BODY_CONTENT_TYPE
    return services, call


def forwarded_headers(environ):
    """The caller's headers worth passing on, trimmed; a value HTTP cannot carry on is dropped, not fatal."""
    headers = {}
    for name, key in FORWARD_ENVIRON_KEYS:
        value = environ.get(key)
        if value is not None:
            value = value.strip()  # also U+00A0 / U+0085, which requests refuses at the start of a value
            if value and value.isprintable():
                headers[name] = value
    return headers


def checked_id(value, field, pattern):
    if not pattern.fullmatch(value) or ".." in value or not value.strip("."):
        raise bad_request([(field, f"{value[:80]!r} is not a valid resource id (letters, digits, '.', '_', '-').")])
    return value
