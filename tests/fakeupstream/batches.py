"""This module provides the Batch API on the fake upstream: create, get, list, cancel and delete, per API key.

Shapes follow Google's Operation-wrapped batches (RESOURCES.md §2; recorded poll sequence PENDING →
RUNNING → SUCCEEDED): ``metadata`` holds the batch (``@type``, ``model``, ``state``, ``batchStats``,
``output``), ``done``/``response`` appear once terminal.  A batch advances one step per ``GET`` by its
owner (settings ``batch_polls``/``batch_after_s``); ``POST /_fake/progress`` forces any state.  Inline
results carry the recorded ``usageMetadata``; file input (a JSONL file the key owns) yields a results
file downloadable through the Files routes.  Another key's batch is a 403.
"""
from __future__ import annotations

import copy
import json
import re
import time
from urllib.parse import parse_qsl

from . import fixtures, plans, references
from .resources import TYPE_PREFIX, Batch, Resources, new_id, paginate, permission_denied, rfc3339

CREATE_ROUTE = re.compile(
    rf"^/{plans.VERSION}/models/(?P<model>[^/:]+):(?P<method>batchGenerateContent|asyncBatchEmbedContent)$")
BATCHES_ROUTE = re.compile(rf"^/{plans.VERSION}/batches(?:/(?P<batch_id>[^/:]+)(?::(?P<verb>[A-Za-z]+))?)?$")
TERMINAL = ("BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED")
ERRORS = {"BATCH_STATE_FAILED": {"code": 13, "message": "Batch failed."},
          "BATCH_STATE_EXPIRED": {"code": 4, "message": "Batch expired before it could complete."}}


def plan(resources: Resources, request, upstream_key: str) -> plans.Plan | None:
    """The answer to a batch route, or None for other routes."""
    match = CREATE_ROUTE.match(request.path)
    if match and request.method == "POST":
        return _create(resources, request, upstream_key, match)
    match = BATCHES_ROUTE.match(request.path)
    if not match:
        return None
    batch_id, verb = match["batch_id"], match["verb"]
    if batch_id is None:
        if request.method == "GET":
            return _list(resources, request, upstream_key)
        return _not_found(request)
    batch = resources.owned(resources.batches, batch_id, upstream_key)
    if batch is None:
        return plans.error_plan(request, 403, permission_denied("Batch", batch_id))
    route = (request.method, verb)
    if route == ("GET", None):
        advance(resources, batch)
        return _json(operation(batch))
    if route == ("POST", "cancel"):
        if batch.state not in TERMINAL:
            finish(resources, batch, "BATCH_STATE_CANCELLED")
        return _json({})
    if route == ("DELETE", None):
        resources.batches.pop(batch_id, None)
        return _json({})
    return _not_found(request)


def _create(resources: Resources, request, upstream_key: str, match) -> plans.Plan:
    model, method, version = match["model"], match["method"], match["version"]
    if plans.is_missing_model(model):
        return plans.error_plan(request, 404, fixtures.model_not_found(model, version, method))
    try:
        payload = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):
        return _invalid(request, "Invalid JSON payload received.")
    spec = payload.get("batch") if isinstance(payload, dict) else None
    config = (spec.get("inputConfig") or spec.get("input_config")) if isinstance(spec, dict) else None
    if not isinstance(config, dict):
        return _invalid(request, "batch.input_config is required.")
    file_name = config.get("fileName") or config.get("file_name")
    file_id = str(file_name).removeprefix("files/") if file_name else None
    if file_id:
        stored = resources.owned(resources.files, file_id, upstream_key)
        if stored is None:
            return plans.error_plan(request, 403, permission_denied("File", file_id))
        requests = _jsonl_requests(stored.path, stored.offset, stored.size)
    else:
        inline = config.get("requests")
        requests = inline.get("requests") if isinstance(inline, dict) else None
    if not isinstance(requests, list) or not requests:
        return _invalid(request, "The batch has no requests.")
    kind = "embed" if method == "asyncBatchEmbedContent" else "generate"
    batch = Batch(new_id(36), upstream_key, version, model, kind, spec.get("displayName") or spec.get("display_name"),
                  requests, input_file=f"files/{file_id}" if file_id else None)
    resources.batches[batch.batch_id] = batch
    return _json(operation(batch))


def advance(resources: Resources, batch: Batch) -> None:
    """One GET by the owner: PENDING → RUNNING → … → SUCCEEDED after ``batch_polls`` GETs or ``batch_after_s``."""
    if batch.state in TERMINAL:
        return
    batch.polls += 1
    polls, after = resources.settings["batch_polls"], resources.settings["batch_after_s"]
    by_polls = polls is not None and batch.polls >= int(polls)
    if by_polls or (after is not None and time.time() - batch.created >= after):
        finish(resources, batch, "BATCH_STATE_SUCCEEDED")
    else:
        batch.state, batch.updated = "BATCH_STATE_RUNNING", time.time()


def finish(resources: Resources, batch: Batch, state: str) -> None:
    """Put ``batch`` in ``state`` now; a success computes its output (inline, or a results file)."""
    batch.state = state
    batch.updated = batch.ended = time.time()
    batch.error = ERRORS.get(state)
    if state != "BATCH_STATE_SUCCEEDED":
        return
    results = [_result(resources, batch, item) for item in batch.requests]
    if batch.input_file is None:
        inlined = [_inlined(item, result) for item, result in zip(batch.requests, results, strict=True)]
        batch.output = {"inlinedResponses": {"inlinedResponses": inlined}}
        return
    lines = [_results_line(item, result) for item, result in zip(batch.requests, results, strict=True)]
    content = ("\n".join(lines) + "\n").encode()
    stored = resources.generated_file(batch.owner, batch.version, len(content), "application/jsonl",
                                      f"{batch.name} responses", content=content)
    batch.output = {"responsesFile": stored.name}


def _result(resources: Resources, batch: Batch, item) -> dict:
    """``{"response": …}`` for one request, or ``{"error": Status}`` when it names a file the key may not use."""
    request = item.get("request", item) if isinstance(item, dict) else {}
    for file_id in references.referenced_files(request):
        stored = resources.owned(resources.files, file_id, batch.owner)
        if stored is None:
            error = json.loads(permission_denied("File", file_id))["error"]
            return {"error": {"code": error["code"], "message": error["message"]}}
    if batch.kind == "embed":
        return {"response": json.loads(fixtures.embed_single_body())}
    return {"response": copy.deepcopy(_recorded_response())}


def _results_line(item, result: dict) -> str:
    """One line of a results file: the input line's ``key`` and its response (or error)."""
    keyed = {"key": item["key"]} if isinstance(item, dict) and "key" in item else {}
    return json.dumps(dict(keyed, **result))


def _inlined(item, result: dict) -> dict:
    metadata = item.get("metadata") if isinstance(item, dict) else None
    return dict(result, metadata=metadata) if metadata is not None else result


def _recorded_response() -> dict:
    return json.loads(fixtures.load(fixtures.DEFAULT_UNARY).body)


def operation(batch: Batch) -> dict:
    """The batch as Google's Operation: name, metadata (the batch), and done/response/error once terminal."""
    kind = "GenerateContentBatch" if batch.kind == "generate" else "EmbedContentBatch"
    metadata = {"@type": f"{TYPE_PREFIX}v1main.{kind}", "model": f"models/{batch.model}"}
    if batch.display_name:
        metadata["displayName"] = batch.display_name
    if batch.input_file:
        metadata["inputConfig"] = {"fileName": batch.input_file}
    if batch.output is not None:
        metadata["output"] = batch.output
    metadata["createTime"] = rfc3339(batch.created)
    if batch.ended is not None:
        metadata["endTime"] = rfc3339(batch.ended)
    metadata.update(updateTime=rfc3339(batch.updated or batch.created), batchStats=_stats(batch),
                    state=batch.state, name=batch.name)
    body = {"name": batch.name, "metadata": metadata}
    if batch.state in TERMINAL:
        body["done"] = True
        if batch.output is not None:
            body["response"] = dict({"@type": f"{TYPE_PREFIX}v1main.{kind}Output"}, **batch.output)
        if batch.error is not None:
            body["error"] = batch.error
    return body


def _stats(batch: Batch) -> dict:
    count = len(batch.requests)
    if batch.state == "BATCH_STATE_SUCCEEDED":
        failed = sum(1 for result in _output_items(batch) if "error" in result)
        stats = {"requestCount": str(count), "successfulRequestCount": str(count - failed)}
        return dict(stats, failedRequestCount=str(failed)) if failed else stats
    if batch.state in ("BATCH_STATE_FAILED", "BATCH_STATE_EXPIRED"):
        return {"requestCount": str(count), "failedRequestCount": str(count)}
    return {"requestCount": str(count), "pendingRequestCount": str(count)}


def _output_items(batch: Batch) -> list:
    inline = (batch.output or {}).get("inlinedResponses")
    return inline["inlinedResponses"] if inline else []


def _list(resources: Resources, request, upstream_key: str) -> plans.Plan:
    own = [operation(batch) for batch in resources.batches.values() if batch.owner == upstream_key]
    try:
        page, next_token = paginate(own, dict(parse_qsl(request.query)), int(resources.settings["page_size"]))
    except ValueError as exc:
        return _invalid(request, str(exc))
    listing = {"operations": page} if page else {}
    if next_token:
        listing["nextPageToken"] = next_token
    return _json(listing)


def _jsonl_requests(path: str, offset: int, size: int) -> list:
    """The input file's lines (``{"key", "request"}`` objects), read line by line."""
    requests, remaining = [], size
    with open(path, "rb") as handle:
        handle.seek(offset)
        while remaining > 0:
            line = handle.readline(remaining)
            if not line:
                break
            remaining -= len(line)
            if line.strip():
                try:
                    requests.append(json.loads(line))
                except ValueError:
                    requests.append({"invalid_line": line[:200].decode("utf-8", "replace")})
    return requests


def _invalid(request, message: str) -> plans.Plan:
    return plans.error_plan(request, 400, fixtures.google_error(400, message, "INVALID_ARGUMENT"))


def _not_found(request) -> plans.Plan:
    return plans.error_plan(request, 404, fixtures.google_error(404, "Method not found.", "NOT_FOUND"))


def _json(payload: dict) -> plans.Plan:
    return plans.unary((fixtures.pretty_json(payload) + "\n").encode())
