"""This module provides the operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document.

``/debug/runtime`` reports the answering worker's own live greenlets and open file descriptors, so a
fault test (or an operator chasing a leak) can compare them with a baseline.  Like ``/metrics`` it needs
the admin token and is off when no admin token is set.  Counting greenlets walks the
worker's heap (tens of milliseconds on a busy worker): it is for occasional looks, not for scraping.
"""

import functools
import gc
import importlib.resources
import os

from flask import Blueprint, Response, jsonify, request

from relay.clients.auth import require_admin_token
from relay.errors import JSON_CONTENT_TYPE
from relay.observability import metrics
from relay.services import current
from relay.store import StoreError

try:
    import greenlet
except ImportError:  # pragma: no cover - gevent (and so greenlet) is a runtime dependency
    greenlet = None

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """The process is up and serving; no upstream or store call."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Configuration loaded, the shared store reachable and (managed mode) some upstream key usable: ready.

    ``keys`` counts relay's upstream keys (see Pool.key_health): a key resting for a 429 still counts as
    usable, since it comes back on its own and callers get a 429 with Retry-After meanwhile; only when the
    upstream has refused every key does readiness fail, because nothing but the operator can fix that.
    """
    services = current()
    store_ok = services.store.ping()
    body = {"status": "ok", "store": "ok" if store_ok else "unreachable",
            "mode": "managed" if services.settings.managed else "passthrough",
            "upstreams": len(services.settings.upstreams)}
    ready = store_ok
    if store_ok and services.settings.managed:
        try:
            body["keys"] = services.pool.key_health()
        except StoreError:
            ready, body["store"] = False, "unreachable"
        else:
            ready = body["keys"]["usable"] > 0
    if not ready:
        body["status"] = "unavailable"
    return jsonify(body), 200 if ready else 503


@bp.get("/metrics")
def prometheus():
    """Prometheus text format for all workers (admin token; off without one: its labels name models and
    routes callers chose)."""
    require_admin_token(request.headers, current().settings.admin_token, "/metrics")
    return Response(metrics.exposition(), content_type="text/plain; version=0.0.4; charset=utf-8")


@bp.get("/openapi.json")
def openapi():
    """relay's own surface (Gemini routes, ops, admin) as OpenAPI 3.1; public, like Google's discovery docs."""
    return Response(openapi_document(), content_type=JSON_CONTENT_TYPE)


@bp.get("/debug/runtime")
def runtime():
    """This worker's pid, live greenlets and open file descriptors (admin token; off without one)."""
    require_admin_token(request.headers, current().settings.admin_token, "/debug/runtime")
    return jsonify(pid=os.getpid(), greenlets=live_greenlets(), open_fds=open_fds())


@functools.cache
def openapi_document():
    return importlib.resources.files("relay").joinpath("openapi.json").read_bytes()


def live_greenlets():
    """Greenlets started and not yet finished (the hub and this request's own included)."""
    if greenlet is None:
        return None
    return sum(1 for obj in gc.get_objects() if isinstance(obj, greenlet.greenlet) and bool(obj))


def open_fds():
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # listing the directory opens one itself
    except OSError:
        return None
