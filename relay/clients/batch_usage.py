"""This module provides batch usage: a batch job's tokens, accounted once, when relay first sees it finished.

A batch's usage is not in the answer to its creation.  It is the sum of the ``usageMetadata`` of its
results: the inlined responses of the finished batch (``response.inlinedResponses.inlinedResponses[]``, or
the same under ``metadata.output``), or the lines of its results file (JSONL, one ``{"key", "response"}``
per line) as relay streams that file to its owner.  Either way the batch's ownership record is claimed
``accounted`` first (:meth:`Store.claim_resource`: one winner across workers and instances), and only the
winner writes the usage row: route ``batchGenerateContent`` (or ``asyncBatchEmbedContent``), ``batch``
true, the batch's models, upstream and key, the summed tokens, and the request id of the call that saw it
finished with ``-batch`` appended; its tokens are charged to the client key's limits.
A results file read only in part accounts nothing (a later full download will).
"""

import dataclasses
import logging
import time

import orjson

from relay.clients.usage import DETAIL_FIELDS, TOKEN_FIELDS
from relay.store import StoreError

log = logging.getLogger("relay.batch_usage")

TERMINAL_STATES = frozenset({
    "BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED",
    "JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
})
ACCOUNTED = "accounted"
# A results-file line may be this large (an answer with images); past it the file is not accounted.
MAX_LINE = 64 * 1024 * 1024


def is_finished(operation):
    """True when a batch Operation is done, or its batch is in a terminal state."""
    metadata = operation.get("metadata")
    state = metadata.get("state") if isinstance(metadata, dict) else None
    return operation.get("done") is True or state in TERMINAL_STATES


def output_of(operation):
    """The batch's output (``response``, else ``metadata.output``): one of the two, which repeat each other."""
    for output in (operation.get("response"), (operation.get("metadata") or {}).get("output")):
        if isinstance(output, dict) and ("inlinedResponses" in output or "responsesFile" in output):
            return output
    return {}


def inline_usages(output):
    """The usageMetadata of each inlined response of a batch's output."""
    inlined = output.get("inlinedResponses")
    items = inlined.get("inlinedResponses") if isinstance(inlined, dict) else None
    return [usage for item in items if isinstance(item, dict) for usage in [_response_usage(item)] if usage] \
        if isinstance(items, list) else []


def _response_usage(item):
    response = item.get("response")
    usage = response.get("usageMetadata") if isinstance(response, dict) else None
    return usage if isinstance(usage, dict) else None


def sum_usage(usages):
    """One usageMetadata object adding up ``usages``: counts summed, per-modality details merged.

    An answer without ``totalTokenCount`` (embeddings) counts its prompt as its total, as for one call.
    """
    total = {field: 0 for field in TOKEN_FIELDS.values()}
    details = {}
    for usage in usages:
        for field in TOKEN_FIELDS.values():
            total[field] += _count(usage.get(field))
        if "totalTokenCount" not in usage:
            total["totalTokenCount"] += _count(usage.get("promptTokenCount"))
        for keys in DETAIL_FIELDS.values():
            for key in keys:
                for detail in usage.get(key) if isinstance(usage.get(key), list) else ():
                    if isinstance(detail, dict):
                        modality = str(detail.get("modality", "MODALITY_UNSPECIFIED"))
                        merged = details.setdefault(key, {})
                        merged[modality] = merged.get(modality, 0) + _count(detail.get("tokenCount"))
    for key, by_modality in details.items():
        total[key] = [{"modality": modality, "tokenCount": count} for modality, count in by_modality.items()]
    return total


def _count(value):
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class ResultsUsage:
    """Reads a batch's results file (JSONL) as it streams by and sums its lines' usageMetadata."""

    def __init__(self):
        self.pending = bytearray()
        self.usages = []
        self.readable = True  # False once a line could not be read: the sum would be short

    def feed(self, chunk):
        self.pending += chunk
        if b"\n" not in chunk:
            if len(self.pending) > MAX_LINE:
                self.readable, self.pending = False, bytearray()
            return
        *lines, rest = bytes(self.pending).split(b"\n")
        self.pending = bytearray(rest)
        for line in lines:
            self._line(line)

    def finish(self):
        """The summed usage once the whole file went by, or None when it could not all be read."""
        self._line(bytes(self.pending))
        self.pending = bytearray()
        return sum_usage(self.usages) if self.readable else None

    def _line(self, line):
        if not line.strip():
            return
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.readable = False
            return
        usage = _response_usage(parsed) if isinstance(parsed, dict) else None
        if usage is not None:
            self.usages.append(usage)


def account(services, call, batch_name, record, usage):
    """Write the usage row of batch ``batch_name`` (its ownership ``record``) once, if this call wins the claim."""
    try:
        if not services.store.claim_resource("batches", batch_name, ACCOUNTED, time.time()):
            return False
    except StoreError:
        log.warning("could not claim %s for accounting; a later look at it will", batch_name)
        return False
    target = services.pool.targets_by_id.get(record.get("key_id")) or call.target
    row_call = dataclasses.replace(
        call, request_id=f"{call.request_id}-batch", method=record.get("method") or "batchGenerateContent",
        requested_model=record.get("requested_model"),
        upstream_model=record.get("upstream_model"), target=target, usage=usage, batch=True, status=200,
        upstream_status=200, stream=None, aborted=None, first_byte_ms=None, latency_ms=0.0, scratch={})
    services.finished(row_call)
    return True


def counted_download(services, call, batch_name, record, reply):
    """A results-file download Reply whose body is read for the batch's usage on its way to the caller."""
    from relay.pipeline.streams import StreamBody  # the pipeline imports clients, not the other way round

    if not reply.streamed:
        reader = ResultsUsage()
        reader.feed(reply.body)
        _account_file(services, call, batch_name, record, reader)
        return reply
    inner = reply.body.generator

    def counted():
        reader = ResultsUsage()
        try:
            for chunk in inner:
                reader.feed(chunk)
                yield chunk
        finally:
            inner.close()
        if call.aborted is None:
            _account_file(services, call, batch_name, record, reader)

    body = StreamBody(counted())
    return dataclasses.replace(reply, body=body)


def _account_file(services, call, batch_name, record, reader):
    usage = reader.finish()
    if usage is None:
        log.warning("the results file of %s could not be read whole; its usage is not accounted", batch_name)
        return
    account(services, call, batch_name, record, usage)
