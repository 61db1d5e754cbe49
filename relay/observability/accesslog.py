"""This module provides the access log: one JSON line per request on stderr, written when the body is done.

Lines name the client by its key's *name*, the upstream key by its id, and the route by its rule; they
never contain a key, a ``?key=`` value or a request body.
"""

import logging
import sys
import time

import orjson

from relay.clients.usage import TOKEN_FIELDS
from relay.observability import logs

log = logging.getLogger("relay.access")


def init_logging(level="info"):
    """The access log on stderr (its lines are JSON already), and relay's other lines as JSON (see logs)."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    logs.install(level)


def access_line(request_id, http_method, route, status, started, call=None, door="gemini"):
    """The access-log record for one finished request (``call`` is the relayed call, if there was one;
    ``door`` the front door, "gemini" or "openai")."""
    line = {
        "ts": round(time.time(), 3),
        "request_id": request_id,
        "method": http_method,
        "route": route,
        "status": status,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        "door": door,
    }
    if call is not None:
        target = call.target
        line.update({
            "model": call.requested_model,
            "upstream_model": call.upstream_model,
            "client": getattr(call.client, "name", None),
            "upstream": target.upstream.name if target else None,
            "upstream_key": target.key_id if target else None,
            "upstream_status": call.upstream_status,
            "attempts": call.attempts,
            "streamed": bool(call.stream),
            "ttfb_ms": round(call.first_byte_ms, 2) if call.first_byte_ms is not None else None,
            "aborted": call.aborted,
            "usage": usage_summary(call.usage),
        })
    return line


def usage_summary(usage):
    if not usage:
        return None
    return {key: usage[key] for key in TOKEN_FIELDS.values() if key in usage}


def write(line):
    # Logger.info would also walk the stack to find its caller (findCaller), for a record that never
    # shows it: one access line per request makes that a cost worth skipping.
    if log.isEnabledFor(logging.INFO):
        log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, orjson.dumps(line).decode(), None, None))
