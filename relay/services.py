"""This module provides the per-worker services relay's views use, kept in ``app.extensions["relay"]``.

One instance per app (so per gunicorn worker, since nothing is preloaded): settings, the shared store,
the pooled upstream Session, the key pool, the authenticator, the plugin registry, the memory of request
objects already validated, the usage recorder and the background flusher.  Views reach it with :func:`current`.
"""

import atexit
import logging

from flask import current_app

from relay.observability import metrics
from relay.clients.auth import Authenticator
from relay.store.flusher import Flusher
from relay.clients.limits import Limits
from relay.plugins import default_registry
from relay.schemas import ValidationMemory
from relay.store import open_store
from relay.upstream.http import make_session
from relay.upstream.pool import Pool
from relay.clients.usage import UsageRecorder

log = logging.getLogger("relay")


class Services:
    def __init__(self, settings, store=None):
        self.settings = settings
        self.store = store or open_store(settings.redis_url, settings.db_path)
        self.session = make_session()
        self.pool = Pool(settings, self.store)
        self.auth = Authenticator(settings, self.store)
        self.plugins = default_registry(settings)
        self.validated = ValidationMemory()
        self.limits = Limits(self.store)
        self.usage = UsageRecorder(self.store)
        self.flusher = Flusher()
        self.flusher.add(self.usage.flush)
        self.flusher.add(self.pool.flush_counts)
        self.flusher.add(self.limits.flush_last_used)
        self._closed = False
        self._at_shutdown = []  # what a feature ends before the final flush (Live: its session leases)
        atexit.register(self.shutdown)

    def record(self, call, target, outcome, detail=None, retry_delay=None, model=None, reason=None):
        """An upstream attempt finished: count it, and tell the pool (managed mode: passthrough keys aren't ours).

        A key the upstream refused (``reason``: Google's ErrorInfo reason) is logged as a warning naming the
        key's id (never the key), the upstream and the reason: the operator has to replace it.
        """
        retry_reason = call.scratch.get("previous_outcome") if call.attempts > 1 else None
        metrics.attempt(target.upstream.name, outcome, retry_reason)
        call.scratch["previous_outcome"] = detail or outcome
        if self.settings.managed and target.key is not None:
            self.pool.record(target, outcome, retry_delay=retry_delay, model=model, reason=reason)
            if outcome in ("rate_limited", "key_invalid"):
                metrics.key_blocked(target.upstream.name, "cooldown" if outcome == "rate_limited" else "disabled")
            if outcome == "key_invalid":
                log.warning("upstream %s refused relay's key %s (%s); it is disabled until re-probed",
                            target.upstream.name, target.key_id, reason,
                            extra={"key_id": target.key_id, "upstream": target.upstream.name, "reason": reason})

    def finished(self, call):
        """A relayed call is completely done (body sent or abandoned): queue its usage row, charge its tokens."""
        self.flusher.ensure_started()
        row = self.usage.record(call)
        self.limits.charge(call, row["total_tokens"])
        metrics.tokens(call.requested_model, call.upstream_model, row)
        if call.first_byte_ms is not None:
            metrics.first_byte(call.requested_model, call.first_byte_ms / 1000)

    def at_shutdown(self, callback):
        """Run ``callback()`` when the worker shuts down, before queued usage is flushed."""
        self._at_shutdown.append(callback)

    def shutdown(self):
        """Flush everything queued; safe to call twice (worker_exit hook, then atexit)."""
        if self._closed:
            return
        self._closed = True
        for callback in self._at_shutdown:
            callback()
        self.flusher.stop()  # a store that is down is one log line there, not a traceback here
        self.session.close()


def current():
    return current_app.extensions["relay"]
