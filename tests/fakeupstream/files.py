"""This module provides the Files API on the fake upstream: list, get, delete and download, per API key.

Paths (RESOURCES.md §1.6): ``GET /{ver}/files`` (the caller's files, ``pageSize``/``pageToken``),
``GET|DELETE /{ver}/files/{id}``, ``GET /{ver}/files/{id}:download?alt=media`` and the same under
``/download/{ver}/…`` (Google's batch guide).  Downloads stream from disk.  Another key's file, or one
that does not exist, is Google's 403.  Unlike Google, uploaded files are downloadable too, so tests
can read back exactly what arrived; their resource still has no ``downloadUri``, as Google's.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qsl

from . import fixtures, plans
from .resources import Resources, StoredFile, paginate, permission_denied

FILES_ROUTE = re.compile(
    rf"^/(?P<download>download/)?{plans.VERSION}/files(?:/(?P<file_id>[^/:]+)(?::(?P<verb>[A-Za-z]+))?)?$")


def plan(resources: Resources, request, upstream_key: str) -> plans.Plan | None:
    """The answer to a Files route, or None for other routes."""
    match = FILES_ROUTE.match(request.path)
    if not match:
        return None
    file_id, verb = match["file_id"], match["verb"]
    if file_id is None and request.method == "GET" and not match["download"]:
        return _list(resources, request, upstream_key)
    if file_id is None or (verb not in (None, "download")) or (match["download"] and verb != "download"):
        return plans.error_plan(request, 404, fixtures.google_error(404, "Method not found.", "NOT_FOUND"))
    stored = resources.owned(resources.files, file_id, upstream_key)
    if stored is None:
        return plans.error_plan(request, 403, permission_denied("File", file_id))
    if verb == "download" and request.method == "GET":
        return _download(request, stored)
    if verb is None and request.method == "GET":
        poll(stored)
        return _json(stored.resource())
    if verb is None and request.method == "DELETE":
        resources.delete_file(file_id)
        return _json({})
    return plans.error_plan(request, 404, fixtures.google_error(404, "Method not found.", "NOT_FOUND"))


def poll(stored: StoredFile) -> None:
    """A files.get: a PROCESSING video comes one poll closer to ACTIVE."""
    if stored.state == "PROCESSING" and stored.polls_to_active > 0:
        stored.polls_to_active -= 1
        if stored.polls_to_active == 0:
            stored.state = "ACTIVE"


def _list(resources: Resources, request, upstream_key: str) -> plans.Plan:
    query = dict(parse_qsl(request.query))
    own = [stored.resource() for stored in resources.files.values() if stored.owner == upstream_key]
    try:
        page, next_token = paginate(own, query, int(resources.settings["page_size"]))
    except ValueError as exc:
        return plans.error_plan(request, 400, fixtures.google_error(400, str(exc), "INVALID_ARGUMENT"))
    listing = {"files": page} if page else {}
    if next_token:
        listing["nextPageToken"] = next_token
    return _json(listing)


def _download(request, stored: StoredFile) -> plans.Plan:
    if ("alt", "media") not in parse_qsl(request.query):
        return plans.error_plan(request, 400, fixtures.google_error(
            400, "Downloads need alt=media (GET .../files/<id>:download?alt=media).", "INVALID_ARGUMENT"))
    headers = [("Content-Type", stored.mime_type), ("X-GUploader-UploadID", f"download-{stored.file_id}"),
               ("Content-Disposition", f'attachment; filename="{stored.file_id}"')]
    return plans.Plan(200, body_file=(stored.path, stored.offset, stored.size), headers=headers)


def _json(payload: dict) -> plans.Plan:
    return plans.unary((fixtures.pretty_json(payload) + "\n").encode())
