"""This module provides what a Live session reports: its metrics, its one access-log line and its usage row.

Metrics count across gunicorn's workers like relay's others (prometheus_client multiprocess mode): open
sessions (a gauge that stops counting a worker that died), sessions ended by how they ended, and frames
and bytes relayed each way.  Labels are fixed words, never a key, a model or a caller's name.
"""

import time

from prometheus_client import Counter, Gauge

from relay.observability import accesslog
from relay.observability.metrics import child

OPEN_SESSIONS = Gauge("relay_live_sessions_open", "Live API sessions being relayed right now.",
                      multiprocess_mode="livesum")
SESSIONS = Counter("relay_live_sessions_total", "Live API sessions ended, by how they ended.", ["end"])
FRAMES = Counter("relay_live_frames_total", "Live API messages relayed, by direction and frame type.",
                 ["direction", "kind"])
BYTES = Counter("relay_live_bytes_total", "Live API payload bytes relayed, by direction.", ["direction"])
TO_UPSTREAM, TO_CLIENT = "to_upstream", "to_client"
ENDS = ("refused", "client", "upstream", "upstream_lost", "client_lost", "shutdown", "expired", "error")


class Traffic:
    """Frames and bytes one session relayed each way; every frame also counts in the metrics at once."""

    __slots__ = ("frames", "bytes", "_children")

    def __init__(self):
        self.frames = {TO_UPSTREAM: 0, TO_CLIENT: 0}
        self.bytes = {TO_UPSTREAM: 0, TO_CLIENT: 0}
        self._children = {}

    def count(self, direction, kind, size):
        self.frames[direction] += 1
        self.bytes[direction] += size
        counters = self._children.get((direction, kind))
        if counters is None:
            counters = self._children[(direction, kind)] = (child(FRAMES, direction, kind), child(BYTES, direction))
        counters[0].inc()
        counters[1].inc(size)


def session_opened():
    OPEN_SESSIONS.inc()


def session_closed(end):
    OPEN_SESSIONS.dec()
    child(SESSIONS, end if end in ENDS else "error").inc()


def access_line(session):
    """The session's access-log record: the request's fields, then how the session went."""
    call = session.call
    line = accesslog.access_line(call.request_id, "GET", session.route, call.status, session.started, call)
    ending = session.ending
    line.update({
        "live": True,
        "established": session.established,
        "end": ending.end if ending else None,
        "close_code": ending.code if ending else None,
        "close_reason": ending.reason if ending else None,
        "duration_ms": round((time.perf_counter() - session.started) * 1000, 2),
        "turns": session.usage.turns,
        "frames": dict(session.traffic.frames),
        "bytes": dict(session.traffic.bytes),
        "token": session.grant is not None,
    })
    return line


def write_access_line(session):
    accesslog.write(access_line(session))
