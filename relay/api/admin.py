"""This module provides relay's own views: upstream health and usage (JSON), and the usage page.

``/relay/upstreams`` needs ``RELAY_ADMIN_TOKEN`` as a Bearer token; ``/relay/usage`` also answers a relay
client key, with that key's own usage only.  ``/relay/`` is a static page with no data in it: it asks
for the admin token in the browser and calls the two JSON views with it.
"""

import time

from flask import Blueprint, current_app, jsonify, request

from relay.clients.auth import presented_key, presents_admin_token, require_admin_token
from relay.errors import InvalidArgument, PermissionDenied, Unauthenticated, Unavailable
from relay.services import current
from relay.store import StoreError
from relay.store.base import MAX_USAGE_DAYS, USAGE_GROUPS, usage_window_start

bp = Blueprint("admin", __name__, url_prefix="/relay")

GROUPS = USAGE_GROUPS
# The page loads nothing from elsewhere and talks only to this relay; its one script is inline.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@bp.get("/upstreams")
def upstreams():
    require_admin_token(request.headers, current().settings.admin_token, "/relay/upstreams")
    services = current()
    try:
        # Managed mode: which client keys' uploads stick to each upstream key (stickiness: Pool.sticky_target).
        clients = services.auth.client_names() if services.settings.managed else ()
        report = services.pool.report(clients)
    except StoreError:
        raise Unavailable("The shared store is unreachable; upstream key health cannot be read.") from None
    return jsonify(upstreams=report)


@bp.get("/usage")
def usage():
    """Usage totals for the last ``days`` (from the start of that hour) by ``group``: everyone's for the
    admin, a key's own otherwise."""
    services = current()
    client = None if presents_admin_token(request.headers, services.settings.admin_token) else usage_client(services)
    days, group = usage_query()
    try:
        services.usage.flush()  # include what this worker has queued but not yet written
        rows = services.store.query_usage(usage_window_start(time.time(), days), group, client)
    except StoreError:
        raise Unavailable("The shared store is unreachable; usage cannot be read right now.") from None
    return jsonify(days=days, group=group, client=client, rows=rows)


def usage_client(services):
    """The name whose usage a non-admin caller may see: its own relay key's."""
    try:
        client = services.auth.authenticate(presented_key(request.headers, request.args))
    except Unauthenticated as error:
        # The usage page sends what it was given as the admin token: say that it was not that either.
        raise Unauthenticated(f"{error.message} /relay/usage takes the admin token (RELAY_ADMIN_TOKEN) for "
                              "everyone's usage, or a relay client key for that key's own.") from None
    if client.kind == "passthrough":
        # Passthrough callers bring their own Google keys, which relay cannot verify: no per-caller view.
        raise PermissionDenied("Usage per caller needs a relay client key; use the admin token for everyone's.")
    return client.name


def usage_query():
    try:
        days = int(request.args.get("days", "7"))
    except ValueError:
        raise InvalidArgument("days must be a whole number of days.") from None
    group = request.args.get("group", "model")
    if group not in GROUPS or not 1 <= days <= MAX_USAGE_DAYS:
        raise InvalidArgument(f"group must be one of {', '.join(GROUPS)} and days between 1 and {MAX_USAGE_DAYS}.")
    return days, group


@bp.get("/")
def page():
    response = current_app.send_static_file("usage.html")
    response.headers.update(PAGE_HEADERS)
    return response
