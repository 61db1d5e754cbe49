"""This module provides relay's Prometheus metrics, counted across all gunicorn workers.

gunicorn.conf.py points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before any worker starts, so
prometheus_client runs in multiprocess mode and ``/metrics`` sums every worker.  Labels are bounded and
never secret: route templates, model names, upstream names, outcomes, status codes — no keys, no key ids.
"""

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

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
TOKENS = Counter("relay_tokens_total", "Tokens Google reported, by model and kind.", ["model", "kind"])
OPEN_STREAMS = Gauge("relay_open_streams", "Streams being relayed right now.", multiprocess_mode="livesum")

TOKEN_KINDS = ("prompt_tokens", "candidates_tokens", "thoughts_tokens", "cached_tokens", "tool_use_tokens")


def request_done(route, model, status, seconds):
    REQUESTS.labels(route, model or "", str(status)).inc()
    LATENCY.labels(route).observe(seconds)


def attempt(upstream, outcome, retry_reason=None):
    ATTEMPTS.labels(upstream, outcome).inc()
    if retry_reason:
        RETRIES.labels(upstream, retry_reason).inc()


def key_blocked(upstream, kind):
    COOLDOWNS.labels(upstream, kind).inc()


def first_byte(model, seconds):
    TTFB.labels(model or "").observe(seconds)


def tokens(model, row):
    for kind in TOKEN_KINDS:
        if row.get(kind):
            TOKENS.labels(model or "", kind.removesuffix("_tokens")).inc(row[kind])


def exposition():
    """The text exposition for /metrics: all workers when in multiprocess mode, else this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)
