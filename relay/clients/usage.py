"""This module provides usage accounting: a row per relayed request, queued and written in batches.

Token counts are exactly what Google reported in the *last* ``usageMetadata`` it sent (streams repeat it
cumulatively on every event, so it is never summed); an aborted stream records what had arrived.
Rows go to an in-memory queue on the request path and reach the store from the background flusher.
"""

import logging
import threading
from collections import deque

from relay.store.base import TOKEN_FIELDS as STORED_TOKEN_FIELDS

log = logging.getLogger("relay.usage")

# Each usage-row count (store.base.TOKEN_FIELDS, in order) and the usageMetadata field Google reports it in.
TOKEN_FIELDS = dict(zip(STORED_TOKEN_FIELDS, (
    "promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "cachedContentTokenCount",
    "toolUsePromptTokenCount", "totalTokenCount",
), strict=True))
DETAIL_FIELDS = {
    "prompt": ("promptTokensDetails", "promptTokenDetails"),  # embeddings spell it in the singular
    "candidates": ("candidatesTokensDetails",),
    "cached": ("cacheTokensDetails",),
    "tool_use": ("toolUsePromptTokensDetails",),
}
# Past this many queued rows the store is not keeping up: say so (once per episode), keep queueing.
QUEUE_WARNING_ROWS = 200_000
BATCH_ROWS = 2000


def token_counts(usage):
    """Flat token counts and per-modality details from one usageMetadata object (a missing count is 0).

    Google leaves ``totalTokenCount`` out only where the prompt is all there is (embeddings), so the
    total is then the prompt count it did report.
    """
    usage = usage if isinstance(usage, dict) else {}
    counts = {name: _int(usage.get(key)) for name, key in TOKEN_FIELDS.items()}
    if "totalTokenCount" not in usage:
        counts["total_tokens"] = counts["prompt_tokens"]
    modalities = {}
    for name, keys in DETAIL_FIELDS.items():
        for key in keys:
            details = usage.get(key)
            if not isinstance(details, list):
                continue
            for detail in details:
                if isinstance(detail, dict):
                    modality = str(detail.get("modality", "MODALITY_UNSPECIFIED"))
                    bucket = modalities.setdefault(name, {})
                    bucket[modality] = bucket.get(modality, 0) + _int(detail.get("tokenCount"))
    counts["modalities"] = modalities
    return counts


def usage_row(call):
    """The usage row for a finished call: who, which models, where it went, how it ended, what Google counted."""
    target = call.target
    row = {
        "ts": call.ts,
        "request_id": call.request_id,
        "client": getattr(call.client, "name", None),
        "requested_model": call.requested_model,
        "upstream_model": call.upstream_model,
        "upstream": target.upstream.name if target else None,
        "key_id": target.key_id if target else None,
        "status": call.status or 0,
        "upstream_status": call.upstream_status,
        "latency_ms": round(call.latency_ms or 0.0, 2),
        "streamed": bool(call.stream),
        "aborted": bool(call.aborted),
        "route": call.method,
        "door": call.door,
        "batch": call.batch,
    }
    row.update(token_counts(call.usage))
    return row


def _int(value):
    if isinstance(value, bool):
        return 0
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


class UsageRecorder:
    """Queues usage rows on the request path; :meth:`flush` writes them from the background."""

    def __init__(self, store):
        self.store = store
        self.queue = deque()
        self._lock = threading.Lock()
        self._warned = False

    def record(self, call):
        """Queue the call's row (no I/O) and return it."""
        row = usage_row(call)
        self.queue.append(row)
        if len(self.queue) >= QUEUE_WARNING_ROWS and not self._warned:
            self._warned = True
            log.warning("usage queue holds %d rows; the store is not keeping up", len(self.queue))
        return row

    def flush(self):
        """Write every queued row in batches; on StoreError the unwritten rows stay queued, in order."""
        with self._lock:  # one writer at a time, so a shutdown flush cannot race the periodic one
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(BATCH_ROWS, len(self.queue)))]
                try:
                    self.store.write_usage(batch)
                except BaseException:
                    self.queue.extendleft(reversed(batch))
                    raise
            self._warned = False
