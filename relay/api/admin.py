"""This module provides relay's own views: upstream health and usage (JSON), and the usage page.

``/relay/upstreams`` and the page need ``RELAY_ADMIN_TOKEN`` as a Bearer token; ``/relay/usage`` also
answers a client key, with that key's own usage only.
"""

import hmac
import time

from flask import Blueprint, current_app, jsonify, request

from relay.auth import presented_key
from relay.errors import InvalidArgument, PermissionDenied, Unauthenticated
from relay.services import current

bp = Blueprint("admin", __name__, url_prefix="/relay")

GROUPS = ("model", "key", "day", "status", "upstream")
MAX_DAYS = 366


def is_admin():
    token = current().settings.admin_token
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


def require_admin():
    if not current().settings.admin_token:
        raise PermissionDenied("The admin views are off: set RELAY_ADMIN_TOKEN to enable them.")
    if not is_admin():
        raise Unauthenticated("This view needs the admin token as 'Authorization: Bearer <RELAY_ADMIN_TOKEN>'.")


@bp.get("/upstreams")
def upstreams():
    require_admin()
    return jsonify(upstreams=current().pool.report())


@bp.get("/usage")
def usage():
    services = current()
    client = None
    if not is_admin():
        client = services.auth.authenticate(presented_key(request.headers, request.args)).name
    try:
        days = int(request.args.get("days", "7"))
    except ValueError:
        raise InvalidArgument("days must be a whole number of days.") from None
    group = request.args.get("group", "model")
    if group not in GROUPS or not 1 <= days <= MAX_DAYS:
        raise InvalidArgument(f"group must be one of {', '.join(GROUPS)} and days between 1 and {MAX_DAYS}.")
    since = time.time() - days * 86400
    services.usage.flush()  # include what this worker has queued but not yet written
    rows = services.store.query_usage(since, group, client)
    return jsonify(days=days, group=group, client=client, rows=rows)


@bp.get("/")
def page():
    return current_app.send_static_file("usage.html")
