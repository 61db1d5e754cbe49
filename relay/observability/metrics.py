"""This module provides relay's Prometheus metrics, counted across all gunicorn workers.

relay_worker.start_up points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before any worker starts
(unless the operator set one), so
prometheus_client runs in multiprocess mode and ``/metrics`` sums every worker.  Labels are bounded and
never secret: route templates, model names, upstream names, outcomes, status codes — no keys, no key ids.
Model names come from callers, so :func:`model_label` bounds them: a caller relay did not authenticate
chooses no label at all, a name that is not a plain model id becomes ``invalid``, and past
``MAX_MODEL_LABELS`` distinct names per worker the rest count as ``other`` (a typo storm or a hostile
caller cannot grow the series — and the multiprocess files — without bound).
"""

import os
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

from relay.settings import MODEL_ID
from relay.store.base import TOKEN_FIELDS

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter("relay_requests_total", "Requests answered, by route, model and status.", ["route", "model", "status"])
ATTEMPTS = Counter("relay_upstream_attempts_total", "Upstream attempts, by upstream and outcome.", ["upstream", "outcome"])
RETRIES = Counter("relay_upstream_retries_total", "Attempts after the first for one request, by the reason for it.",
                  ["upstream", "reason"])
COOLDOWNS = Counter("relay_key_cooldowns_total", "Upstream keys put in cooldown (429) or disabled.", ["upstream", "kind"])
LATENCY = Histogram("relay_request_duration_seconds", "Time to the end of the response body.", ["route"],
                    buckets=LATENCY_BUCKETS)
TTFB = Histogram("relay_time_to_first_byte_seconds", "Time to the first streamed unit sent to the client.", ["model"],
                 buckets=LATENCY_BUCKETS)
TOKENS = Counter("relay_tokens_total", "Tokens Google reported, by requested model, upstream model and kind.",
                 ["model", "upstream_model", "kind"])
DOOR_REQUESTS = Counter("relay_door_requests_total", "Requests answered, by front door (gemini, openai) and status.",
                        ["door", "status"])
OPEN_STREAMS = Gauge("relay_open_streams", "Streams being relayed right now.", multiprocess_mode="livesum")

TOKEN_KINDS = tuple(field for field in TOKEN_FIELDS if field != "total_tokens")  # a total would count twice

MAX_MODEL_LABELS = 200
MAX_MODEL_LABEL = 128
_seen_models = set()
_seen_lock = threading.Lock()


def model_label(model):
    """A bounded label value for a model name: the name itself, ``""``, ``invalid`` or ``other``."""
    if not model:
        return ""
    if not isinstance(model, str) or (len(model) > MAX_MODEL_LABEL or not MODEL_ID.fullmatch(model)):
        return "invalid"
    if model in _seen_models:
        return model
    with _seen_lock:
        if len(_seen_models) >= MAX_MODEL_LABELS:
            return "other"
        _seen_models.add(model)
    return model


_children = {}


def child(metric, *values):
    """``metric.labels(*values)``, looked up once: label values are bounded, so are the children kept here.

    prometheus_client re-validates the values and takes a lock on every ``labels`` call; on the request
    path that is several calls per request for series that exist after the first minute.
    """
    key = (metric, values)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*values)
    return found


def request_done(route, model, status, seconds, door="gemini"):
    # An unauthenticated caller must not be able to mint label values (or see its key echoed as one).
    model = "" if status == 401 else model_label(model)
    child(REQUESTS, route, model, str(status)).inc()
    child(LATENCY, route).observe(seconds)
    child(DOOR_REQUESTS, door, str(status)).inc()  # door is one of two fixed names, never the caller's


def attempt(upstream, outcome, retry_reason=None):
    child(ATTEMPTS, upstream, outcome).inc()
    if retry_reason:
        child(RETRIES, upstream, retry_reason).inc()


def key_blocked(upstream, kind):
    child(COOLDOWNS, upstream, kind).inc()


def first_byte(model, seconds):
    child(TTFB, model_label(model)).observe(seconds)


def tokens(model, upstream_model, row):
    for kind in TOKEN_KINDS:
        if row.get(kind):
            child(TOKENS, model_label(model), model_label(upstream_model), kind.removesuffix("_tokens")).inc(row[kind])


def exposition():
    """The text exposition for /metrics: all workers when in multiprocess mode, else this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)
