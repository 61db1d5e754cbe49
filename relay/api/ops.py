"""This module provides the operations endpoints: liveness, readiness and Prometheus metrics."""

import hmac

from flask import Blueprint, Response, jsonify, request

from relay import metrics
from relay.errors import Unauthenticated
from relay.services import current

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """The process is up and serving; no upstream or store call."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Configuration loaded and the shared store reachable: ready for traffic."""
    services = current()
    store_ok = services.store.ping()
    body = {"status": "ok" if store_ok else "unavailable", "store": "ok" if store_ok else "unreachable",
            "mode": "managed" if services.settings.managed else "passthrough",
            "upstreams": len(services.settings.upstreams)}
    return jsonify(body), 200 if store_ok else 503


@bp.get("/metrics")
def prometheus():
    """Prometheus text format for all workers; needs the admin token as Bearer when one is set."""
    token = current().settings.admin_token
    if token:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
            raise Unauthenticated("/metrics needs 'Authorization: Bearer <RELAY_ADMIN_TOKEN>'.")
    return Response(metrics.exposition(), content_type="text/plain; version=0.0.4; charset=utf-8")
