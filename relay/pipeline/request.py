"""This module provides the first steps of every relayed call: the Call, who is calling, and what they sent
besides the body (headers and query parameters worth passing on).

Both front doors start here, so what reaches the upstream is decided in one place.
"""

from flask import g, request

from relay.clients.auth import presented_key
from relay.errors import bad_request
from relay.pipeline.forward import FORWARD_REQUEST_HEADERS, Call
from relay.services import current

# (header name, WSGI environ key): read straight from the environ, once per header, on every request.
FORWARD_ENVIRON_KEYS = tuple(
    (name, "CONTENT_TYPE" if name == "Content-Type" else "HTTP_" + name.upper().replace("-", "_"))
    for name in FORWARD_REQUEST_HEADERS
)


def begin(version, method, requested_model=None, resource="", stream=None):
    """Start the Call every view fills in (the access log reads it too) and authenticate the caller."""
    services = current()
    headers = forwarded_headers(request.environ)
    query = [(name, value) for name, value in request.args.items(multi=True) if name != "key"]
    call = Call(
        request_id=g.request_id, http_method=request.method, version=version, route=request.url_rule.rule,
        resource=resource, method=method, query=query, headers=headers, requested_model=requested_model, stream=stream,
        client_socket=request.environ.get("gunicorn.socket"),
    )
    g.call = call
    call.client = services.auth.authenticate(presented_key(request.headers, request.args))
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
