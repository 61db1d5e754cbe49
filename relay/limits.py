"""This module provides per-client-key limits: model allowlists, requests and tokens per minute, daily tokens.

Limits live in the shared store so they hold across workers and instances: requests per minute is a token
bucket taken atomically before the call; tokens per minute is a bucket the finished call is charged to
(it may go into debt, which blocks the key until it refills); the daily quota is a per-UTC-day counter.
Over a limit, the caller gets Google's 429: ``QuotaFailure`` naming the limit and ``RetryInfo`` saying when.
"""

import fnmatch
import logging
import threading
import time
from datetime import datetime, timedelta, timezone

from relay.errors import QUOTA_FAILURE_TYPE, PermissionDenied, ResourceExhausted, retry_info
from relay.store import StoreError

log = logging.getLogger("relay.limits")
DAY_SECONDS = 86400


def quota_exceeded(client, metric, quota_id, limit, wait):
    violation = {
        "quotaMetric": f"relay/{metric}",
        "quotaId": quota_id,
        "quotaDimensions": {"client_key": client.name},
        "quotaValue": str(limit),
    }
    return ResourceExhausted(
        f"You exceeded this relay key's quota ({quota_id}: {limit}). Please retry in {wait:.1f}s.",
        details=[{"@type": QUOTA_FAILURE_TYPE, "violations": [violation]}, retry_info(wait)],
        headers={"Retry-After": str(max(1, int(wait + 0.999)))},
    )


def model_allowed(patterns, *models):
    return any(fnmatch.fnmatchcase(model, pattern) for pattern in patterns for model in models if model)


class Limits:
    def __init__(self, store, clock=time.time):
        self.store = store
        self.clock = clock
        self._last_used = {}
        self._lock = threading.Lock()

    def admit(self, call):
        """Refuse the call (403 or 429) if its client key may not make it now; count it otherwise."""
        client = call.client
        if client.kind != "managed":
            return
        self._last_used[client.name] = self.clock()
        if client.models and not model_allowed(client.models, call.requested_model, call.upstream_model):
            raise PermissionDenied(f"This relay key may not use model {call.requested_model!r}.")
        now = self.clock()
        try:
            self._check(client, now)
        except StoreError:
            log.warning("store unreachable while checking limits for %s; letting the call through", client.name)

    def _check(self, client, now):
        if client.tpm:
            tokens = self.store.peek(f"tpm:{client.name}", client.tpm, client.tpm / 60.0, now)
            if tokens <= 0:
                wait = (1 - tokens) / (client.tpm / 60.0)
                raise quota_exceeded(client, "tokens_per_minute", "TokensPerMinutePerKey", client.tpm, wait)
        if client.daily_tokens:
            used = self.store.get_counter(self._day_counter(client, now))
            if used >= client.daily_tokens:
                raise quota_exceeded(client, "tokens_per_day", "TokensPerDayPerKey", client.daily_tokens, _until_midnight(now))
        if client.rpm:
            wait = self.store.take(f"rpm:{client.name}", client.rpm, client.rpm / 60.0, 1, now)
            if wait > 0:
                raise quota_exceeded(client, "requests_per_minute", "RequestsPerMinutePerKey", client.rpm, wait)

    def charge(self, call, total_tokens):
        """Charge a finished call's tokens to its key's per-minute bucket and daily counter."""
        client = call.client
        if client is None or client.kind != "managed" or not total_tokens:
            return
        now = self.clock()
        try:
            if client.tpm:
                self.store.debit(f"tpm:{client.name}", client.tpm, client.tpm / 60.0, total_tokens, now)
            if client.daily_tokens:
                self.store.incr(self._day_counter(client, now), total_tokens, 2 * DAY_SECONDS)
        except StoreError:
            log.warning("could not charge %d tokens to %s", total_tokens, client.name)

    def flush_last_used(self):
        last_used, self._last_used = self._last_used, {}
        if last_used:
            self.store.touch_client_keys(last_used)

    @staticmethod
    def _day_counter(client, now):
        return f"day:{client.name}:{datetime.fromtimestamp(now, timezone.utc):%Y-%m-%d}"


def _until_midnight(now):
    moment = datetime.fromtimestamp(now, timezone.utc)
    midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - moment).total_seconds()
