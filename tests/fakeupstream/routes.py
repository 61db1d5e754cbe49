"""This module provides the fake upstream's decision for one request and its resource control API.

:func:`plan_for` is what both the process (server.py) and the in-process twin (inprocess.py) ask: the
API-key check, then a scripted rule, then the owned-resource routes (uploads, files, batches, media
operations, ownership checks on generation calls and caches), then the recorded default answers.

Control API for resources (JSON, not logged):

* ``GET /_fake/resources[?key=K]`` – files (Google's resource plus ``owner``, ``sha256`` hex, ``path``),
  upload sessions (``owner``, ``declared``, ``received``, ``status``, ``file``, and every chunk's
  ``command``, ``offset``, ``length``, ``key``, ``sha256``, ``status``), batches, operations and cache owners.
* ``GET|POST /_fake/settings`` – read or merge ``batch_polls``, ``batch_after_s``, ``operation_polls``,
  ``operation_after_s``, ``video_processing_polls``, ``video_bytes``, ``page_size`` (reset restores them).
* ``POST /_fake/progress`` – ``{"name": "batches/<id>", "state": "SUCCEEDED"|"FAILED"|"CANCELLED"|"EXPIRED"|
  "RUNNING"}``, ``{"name": "models/<m>/operations/<id>"[, "error": Status]}`` (done now),
  ``{"name": "files/<id>", "state": "ACTIVE"|"FAILED"}``.
* ``POST /_fake/files`` – ``{"key", "size_bytes", "mime_type"?, "display_name"?, "version"?}`` makes a
  GENERATED (downloadable) file of deterministic bytes for ``key``, written piece by piece.
"""
from __future__ import annotations

import json
from urllib.parse import parse_qsl

from . import batches, files, fixtures, operations, plans, references, thought_signatures, uploads
from .resources import DEFAULT_SETTINGS, Resources

streams_body = uploads.streams_body


def plan_for(state, request, entry: dict) -> plans.Plan:
    """The answer to ``request`` (its streamed body, if any, already in ``request.sink``)."""
    try:
        return _decide(state, request, entry)
    finally:
        if request.sink is not None:
            request.sink.finish()


def _decide(state, request, entry: dict) -> plans.Plan:
    upstream_key = request.header("x-goog-api-key")
    keyless_chunk = uploads.UPLOAD_ROUTE.match(request.path) and "upload_id=" in request.query
    if not upstream_key and not keyless_chunk:
        return plans.error_plan(request, 400, fixtures.api_key_invalid())
    rejected = thought_signatures.rejection(request)
    if rejected is not None:
        return rejected
    found = state.take_rule(request, upstream_key)
    if found:
        entry["rule"] = found[0]
        if any(key in found[1] for key in plans.CONTENT_KEYS):
            return plans.apply_rule(request, found[1], plans.Plan())
    plan = resource_plan(state, request, upstream_key) or plans.default_plan(request, state.caches)
    return plans.apply_rule(request, found[1], plan) if found else plan


def resource_plan(state, request, upstream_key: str | None) -> plans.Plan | None:
    """The answer of the owned-resource routes, or None to fall through to the recorded answers."""
    resources = state.resources
    for route in (uploads.plan, files.plan, batches.plan, operations.plan):
        answer = route(resources, request, upstream_key)
        if answer is not None:
            return answer
    cached = references.cache_plan(resources, state.caches, request, upstream_key)
    return cached if cached is not None else references.gate(resources, request, upstream_key)


def control(state, request) -> tuple[int, object] | None:
    """(status, JSON payload) for the resource control routes, or None for other paths."""
    resources: Resources = state.resources
    route = (request.method, request.path)
    if route == ("GET", "/_fake/resources"):
        return 200, snapshot(resources, dict(parse_qsl(request.query)).get("key"))
    if route == ("GET", "/_fake/settings"):
        return 200, resources.settings
    if route[1] not in ("/_fake/settings", "/_fake/progress", "/_fake/files") or request.method != "POST":
        return None
    try:
        spec = json.loads(request.body or b"{}")
        if not isinstance(spec, dict):
            raise ValueError("expected a JSON object")
        if route[1] == "/_fake/settings":
            resources.settings.update(_checked_settings(spec))
            return 200, resources.settings
        if route[1] == "/_fake/progress":
            return progress(resources, spec)
        return 200, _make_file(resources, spec)
    except (ValueError, TypeError, KeyError) as exc:
        return 400, {"error": f"bad {route[1]} request: {exc}"}


def _checked_settings(spec: dict) -> dict:
    unknown = set(spec) - set(DEFAULT_SETTINGS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(DEFAULT_SETTINGS)}")
    for name, value in spec.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"{name} must be a non-negative number or null, not {value!r}")
    return spec


def progress(resources: Resources, spec: dict) -> tuple[int, object]:
    """Force a batch's state, finish an operation, or set a file's state."""
    name = str(spec["name"])
    if name.startswith("batches/") and name[len("batches/"):] in resources.batches:
        batch = resources.batches[name[len("batches/"):]]
        state = "BATCH_STATE_" + str(spec.get("state", "SUCCEEDED")).upper().removeprefix("BATCH_STATE_")
        if state in batches.TERMINAL:
            batches.finish(resources, batch, state)
        elif state in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
            batch.state = state
        else:
            raise ValueError(f"unknown batch state {state}")
        return 200, batches.operation(batch)
    if name in resources.operations:
        operation = resources.operations[name]
        if not operation.done:
            operations.finish(resources, operation, spec.get("error"))
        return 200, operations.body(operation)
    if name.startswith("files/") and name[len("files/"):] in resources.files:
        stored = resources.files[name[len("files/"):]]
        stored.state, stored.polls_to_active = str(spec.get("state", "ACTIVE")), 0
        return 200, stored.resource()
    return 404, {"error": f"no resource named {name!r}"}


def _make_file(resources: Resources, spec: dict) -> dict:
    stored = resources.generated_file(str(spec["key"]), str(spec.get("version", "v1beta")), int(spec["size_bytes"]),
                                      str(spec.get("mime_type", "application/octet-stream")), spec.get("display_name"))
    return dict(stored.resource(), owner=stored.owner, sha256=stored.sha256, path=stored.path)


def snapshot(resources: Resources, key: str | None = None) -> dict:
    """Every resource (or those ``key`` owns) with its owner: what tests read to see what arrived where."""
    def mine(owner: str) -> bool:
        return key is None or owner == key
    return {
        "files": [dict(stored.resource(), owner=stored.owner, sha256=stored.sha256, path=stored.path)
                  for stored in resources.files.values() if mine(stored.owner)],
        "uploads": [{"upload_id": session.upload_id, "owner": session.owner, "version": session.version,
                     "declared": session.declared, "received": session.received, "status": session.status,
                     "file": f"files/{session.file_id}" if session.status == "final" else None,
                     "chunks": session.chunks} for session in resources.uploads.values() if mine(session.owner)],
        "batches": [{"name": batch.name, "owner": batch.owner, "model": batch.model, "kind": batch.kind,
                     "state": batch.state, "polls": batch.polls, "input_file": batch.input_file}
                    for batch in resources.batches.values() if mine(batch.owner)],
        "operations": [{"name": operation.name, "owner": operation.owner, "done": operation.done,
                        "polls": operation.polls}
                       for operation in resources.operations.values() if mine(operation.owner)],
        "caches": [{"name": f"cachedContents/{cache_id}", "owner": owner}
                   for cache_id, owner in resources.cache_owners.items() if mine(owner)],
    }
