"""This module provides the operations endpoints: liveness, readiness (and, with them, metrics)."""

from flask import Blueprint, jsonify

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
