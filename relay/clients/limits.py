"""This module provides per-client-key limits: model allowlists, requests and tokens per minute, daily tokens.

Limits live in the shared store so they hold across workers and instances: requests per minute is a token
bucket taken atomically before the call; tokens per minute is a bucket the finished call is charged to
(it may go into debt, which blocks the key until it refills); the daily quota is a per-UTC-day counter.
Over a limit, the caller gets Google's 429: ``QuotaFailure`` naming the limit and ``RetryInfo`` saying when.
Keys without limits (static keys, passthrough callers) cost no store call at all.
"""

import fnmatch
import logging
import math
import time
from datetime import datetime, timedelta, timezone

from relay.errors import QUOTA_FAILURE_TYPE, PermissionDenied, ResourceExhausted, retry_info
from relay.store import StoreError

log = logging.getLogger("relay.limits")
DAY_SECONDS = 86400
# A wait the store cannot bound (math.inf) is reported as one day: RetryInfo needs a finite duration.
LONGEST_WAIT_SECONDS = float(DAY_SECONDS)


def quota_exceeded(client, model, metric, quota_id, limit, wait):
    """Google's 429 for a relay key over one of its limits; ``wait`` is seconds until a retry can succeed."""
    wait = LONGEST_WAIT_SECONDS if not math.isfinite(wait) else min(max(wait, 0.0), LONGEST_WAIT_SECONDS)
    dimensions = {"client_key": client.name}
    if model:
        dimensions["model"] = model
    violation = {
        "quotaMetric": f"relay/{metric}",
        "quotaId": quota_id,
        "quotaDimensions": dimensions,
        "quotaValue": str(limit),
    }
    return ResourceExhausted(
        f"You exceeded this relay key's quota ({quota_id}: {limit}). Please retry in {wait:.1f}s.",
        details=[{"@type": QUOTA_FAILURE_TYPE, "violations": [violation]}, retry_info(wait)],
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


def model_allowed(patterns, requested_model, upstream_model):
    """True when the key may make this call.

    Patterns are globs over the model relay calls upstream (after aliases and thinking suffixes), so
    ``gemini-2.5-*`` cannot be widened by an alias named ``gemini-2.5-anything``; a pattern equal to the
    requested name (an alias listed on purpose) allows it too.
    """
    if requested_model and requested_model in patterns:
        return True
    target = upstream_model or requested_model
    return bool(target) and any(fnmatch.fnmatchcase(target, pattern) for pattern in patterns)


class Limits:
    """Admits calls against their key's limits and charges finished calls; one instance per worker."""

    def __init__(self, store, clock=time.time):
        self.store = store
        self.clock = clock
        self._last_used = {}

    def admit(self, call):
        """Refuse the call (403 or 429) if its client key may not make it now; count it otherwise."""
        client = call.client
        if client is None or client.kind != "managed":
            return
        now = self.clock()
        self._last_used[client.name] = now
        if client.models and not model_allowed(client.models, call.requested_model, call.upstream_model):
            raise PermissionDenied(f"This relay key may not use model {call.requested_model!r}.")
        try:
            self._check(client, call.requested_model, now)
        except StoreError:
            log.warning("store unreachable while checking limits for %s; letting the call through", client.name)

    def _check(self, client, model, now):
        # Checks that change nothing come first, so a refused call does not use up a request.
        if client.tpm:
            refill = client.tpm / 60.0
            tokens = self.store.peek(tpm_bucket(client), client.tpm, refill, now)
            if tokens <= 0:
                wait = (1 - tokens) / refill
                raise quota_exceeded(client, model, "tokens_per_minute", "TokensPerMinutePerKey", client.tpm, wait)
        if client.daily_tokens:
            used = self.store.get_counter(day_counter(client, now))
            if used >= client.daily_tokens:
                raise quota_exceeded(client, model, "tokens_per_day", "TokensPerDayPerKey", client.daily_tokens,
                                     until_midnight(now))
        if client.rpm:
            wait = self.store.take(rpm_bucket(client), client.rpm, client.rpm / 60.0, 1, now)
            if wait > 0:
                raise quota_exceeded(client, model, "requests_per_minute", "RequestsPerMinutePerKey", client.rpm, wait)

    def charge(self, call, total_tokens):
        """Charge a finished call's tokens to its key's per-minute bucket and daily counter."""
        client = call.client
        if client is None or client.kind != "managed" or not total_tokens:
            return
        if not client.tpm and not client.daily_tokens:
            return
        now = self.clock()
        try:
            if client.tpm:
                self.store.debit(tpm_bucket(client), client.tpm, client.tpm / 60.0, total_tokens, now)
            if client.daily_tokens:
                self.store.incr(day_counter(client, now), total_tokens, 2 * DAY_SECONDS)
        except StoreError:
            log.warning("could not charge %d tokens to %s", total_tokens, client.name)

    def flush_last_used(self):
        """Write the keys' last-used times gathered since the last flush (background flusher task)."""
        last_used, self._last_used = self._last_used, {}
        if not last_used:
            return
        try:
            self.store.touch_client_keys(last_used)
        except StoreError:
            for name, used_at in last_used.items():  # keep them for the next round; later times win
                self._last_used[name] = max(used_at, self._last_used.get(name, used_at))
            raise


def rpm_bucket(client):
    return f"rpm:{client.name}"


def tpm_bucket(client):
    return f"tpm:{client.name}"


def day_counter(client, now):
    return f"day:{client.name}:{datetime.fromtimestamp(now, timezone.utc):%Y-%m-%d}"


def until_midnight(now):
    """Seconds from ``now`` to the next 00:00 UTC, when the daily quota starts again."""
    moment = datetime.fromtimestamp(now, timezone.utc)
    midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - moment).total_seconds()
