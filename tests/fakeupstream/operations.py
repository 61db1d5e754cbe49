"""This module provides Imagen ``:predict`` and Veo ``:predictLongRunning`` with its operations on the fake upstream.

Shapes from RESOURCES.md §3.1: ``:predict`` answers ``{"predictions": [{"bytesBase64Encoded", "mimeType"}]}``
(a real 1×1 PNG per ``parameters.sampleCount``).  ``:predictLongRunning`` answers ``{"name":
"models/{model}/operations/{id}"}``, owned by the key; ``GET /{ver}/models/{model}/operations/{id}`` by
the owner is done after ``operation_polls`` GETs (or ``operation_after_s``; ``POST /_fake/progress``
forces it) with ``response.generateVideoResponse.generatedSamples[].video.uri`` naming GENERATED video
files the Files download route serves.  Another key's operation is a 403; an instance whose
``video.uri`` names another key's file (extending a video) is the File 403.
"""
from __future__ import annotations

import base64
import json
import re
import struct
import time
import zlib

from . import fixtures, plans, references
from .resources import GOOGLE_BASE, TYPE_PREFIX, Operation, Resources, new_id, permission_denied

PREDICT_ROUTE = re.compile(rf"^/{plans.VERSION}/models/(?P<model>[^/:]+):(?P<method>predict|predictLongRunning)$")
OPERATION_ROUTE = re.compile(rf"^/{plans.VERSION}/models/(?P<model>[^/:]+)/operations/(?P<operation_id>[^/:]+)$")


def plan(resources: Resources, request, upstream_key: str) -> plans.Plan | None:
    """The answer to a predict or operation route, or None for other routes."""
    match = PREDICT_ROUTE.match(request.path)
    if match and request.method == "POST":
        return _predict(resources, request, upstream_key, match)
    match = OPERATION_ROUTE.match(request.path)
    if not match:
        return None
    name = f"models/{match['model']}/operations/{match['operation_id']}"
    operation = resources.owned(resources.operations, name, upstream_key)
    if operation is None:
        return plans.error_plan(request, 403, permission_denied("Operation", name))
    if request.method != "GET":
        return plans.error_plan(request, 404, fixtures.google_error(404, "Method not found.", "NOT_FOUND"))
    advance(resources, operation)
    return _json(body(operation))


def _predict(resources: Resources, request, upstream_key: str, match) -> plans.Plan:
    model, method = match["model"], match["method"]
    if plans.is_missing_model(model):
        return plans.error_plan(request, 404, fixtures.model_not_found(model, match["version"], method))
    try:
        payload = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):
        payload = None
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        return plans.error_plan(request, 400, fixtures.google_error(
            400, "* PredictRequest.instances: instances must not be empty.", "INVALID_ARGUMENT"))
    parameters = payload.get("parameters") if isinstance(payload.get("parameters"), dict) else {}
    count = _sample_count(parameters)
    if method == "predict":
        image = base64.b64encode(_png()).decode()
        return _json({"predictions": [{"bytesBase64Encoded": image, "mimeType": "image/png"} for _ in range(count)]})
    videos = [instance.get("video") for instance in instances if isinstance(instance, dict)]
    uris = [{"fileData": {"fileUri": video.get("uri")}} for video in videos if isinstance(video, dict)]
    refused = references.file_problem(resources, request, references.referenced_files(uris), upstream_key)
    if refused is not None:
        return refused
    name = f"models/{model}/operations/{new_id()}"
    resources.operations[name] = Operation(name, upstream_key, match["version"], count)
    return _json({"name": name})


def advance(resources: Resources, operation: Operation) -> None:
    """One GET by the owner; done (videos generated) after ``operation_polls`` GETs or ``operation_after_s``."""
    if operation.done:
        return
    operation.polls += 1
    polls, after = resources.settings["operation_polls"], resources.settings["operation_after_s"]
    by_polls = polls is not None and operation.polls >= int(polls)
    if by_polls or (after is not None and time.time() - operation.created >= after):
        finish(resources, operation)


def finish(resources: Resources, operation: Operation, error: dict | None = None) -> None:
    """Mark ``operation`` done: with ``error``, or with freshly generated video files owned by its key."""
    operation.done = True
    if error is not None:
        operation.error = error
        return
    samples = []
    for _ in range(operation.sample_count):
        stored = resources.generated_file(operation.owner, operation.version, int(resources.settings["video_bytes"]),
                                          "video/mp4")
        samples.append({"video": {"uri": f"{GOOGLE_BASE}/{operation.version}/{stored.name}:download?alt=media"}})
    operation.response = {"@type": f"{TYPE_PREFIX}{operation.version}.PredictLongRunningResponse",
                          "generateVideoResponse": {"generatedSamples": samples}}


def body(operation: Operation) -> dict:
    answer = {"name": operation.name}
    if operation.done:
        answer["done"] = True
        answer.update({"error": operation.error} if operation.error is not None else {"response": operation.response})
    return answer


def _sample_count(parameters: dict) -> int:
    try:
        return min(max(int(parameters.get("sampleCount") or parameters.get("sample_count") or 1), 1), 4)
    except (TypeError, ValueError):
        return 1


def _png() -> bytes:
    """A valid 1×1 PNG (a grey pixel)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + \
        chunk(b"IEND", b"")


def _json(payload: dict) -> plans.Plan:
    return plans.unary((fixtures.pretty_json(payload) + "\n").encode())
