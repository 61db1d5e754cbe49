"""This module provides the fake upstream's ownership checks on requests that reference owned resources.

``generateContent``, ``streamGenerateContent`` and ``countTokens`` bodies may name files
(``fileData.fileUri``: ``https://generativelanguage.googleapis.com/{ver}/files/<id>`` under any version,
or ``files/<id>``; snake_case accepted) and a ``cachedContent``.  A file of another key, or one that
does not exist, gets Google's 403 (RESOURCES.md §1.7: Google says the same for both); a video still
PROCESSING gets Google's 400 FAILED_PRECONDITION.  A cache the fake created for another key gets the
fake's recorded cache 403.  cachedContents routes are scoped the same way: each key lists and touches
its own caches (caches the fake never created keep answering as before).  Pure code: no sockets.
"""
from __future__ import annotations

import json
import re

from . import fixtures, plans
from .resources import Resources, permission_denied

FILE_URI = re.compile(
    r"^(?:https?://[^/]*generativelanguage[^/]*/(?:download/)?(?:v1|v1beta|v1alpha|v1main)/)?files/"
    r"(?P<file_id>[a-z0-9-]+)(?::download)?(?:\?.*)?$")
GATED_METHODS = ("generateContent", "streamGenerateContent", "countTokens")
CACHE_DENIED = "CachedContent not found (or permission denied)"


def referenced_files(payload) -> list[str]:
    """File ids named by ``fileData``/``file_data`` parts anywhere in ``payload``, in document order."""
    found: list[str] = []
    stack = [payload]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in ("fileData", "file_data"):
                data = node.get(key)
                uri = (data.get("fileUri") or data.get("file_uri")) if isinstance(data, dict) else None
                match = FILE_URI.match(uri) if isinstance(uri, str) else None
                if match and match["file_id"] not in found:
                    found.append(match["file_id"])
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return found


def file_problem(resources: Resources, request, file_ids: list[str], upstream_key: str) -> plans.Plan | None:
    """Google's answer to the first file the key may not use, or None when all are usable."""
    for file_id in file_ids:
        stored = resources.owned(resources.files, file_id, upstream_key)
        if stored is None:
            return plans.error_plan(request, 403, permission_denied("File", file_id))
        if stored.state != "ACTIVE":
            return plans.error_plan(request, 400, fixtures.google_error(
                400, f"The File {file_id} is not in an ACTIVE state and usage is not allowed.", "FAILED_PRECONDITION"))
    return None


def gate(resources: Resources, request, upstream_key: str) -> plans.Plan | None:
    """The refusal of a generation call that names a file or cache the key may not use, else None."""
    match = plans.METHOD_ROUTE.match(request.path)
    if not match or match["method"] not in GATED_METHODS or request.method != "POST":
        return None
    if b"files/" not in request.body and b"cachedContents/" not in request.body:
        return None
    payload = _json_object(request.body)
    if payload is None:
        return None
    inner = payload.get("generateContentRequest") or payload.get("generate_content_request")
    for scope in (payload, inner if isinstance(inner, dict) else {}):
        cache = scope.get("cachedContent") or scope.get("cached_content")
        cache_id = cache.removeprefix("cachedContents/") if isinstance(cache, str) else None
        owner = resources.cache_owners.get(cache_id) if cache_id else None
        if owner is not None and owner != upstream_key:
            return plans.error_plan(request, 403, fixtures.google_error(403, CACHE_DENIED, "PERMISSION_DENIED"))
    return file_problem(resources, request, referenced_files(payload), upstream_key)


def cache_plan(resources: Resources, caches: dict, request, upstream_key: str) -> plans.Plan | None:
    """cachedContents scoped to their creating key (the recorded CRUD answers come from plans.py)."""
    match = plans.CACHE_ROUTE.match(request.path)
    if not match:
        return None
    cache_id = match["cache_id"]
    if cache_id is None and request.method == "POST":
        return _create_cache(resources, caches, request, upstream_key)
    if cache_id is None:
        visible = {name: entry for name, entry in caches.items()
                   if resources.cache_owners.get(name, upstream_key) == upstream_key}
        return plans.default_plan(request, visible)
    owner = resources.cache_owners.get(cache_id)
    if owner is not None and owner != upstream_key:
        return plans.error_plan(request, 403, fixtures.google_error(403, CACHE_DENIED, "PERMISSION_DENIED"))
    if request.method == "DELETE":
        resources.cache_owners.pop(cache_id, None)
    return plans.default_plan(request, caches)


def _create_cache(resources: Resources, caches: dict, request, upstream_key: str) -> plans.Plan:
    payload = _json_object(request.body) or {}
    refused = file_problem(resources, request, referenced_files(payload), upstream_key)
    if refused is not None:
        return refused
    before = set(caches)
    answer = plans.default_plan(request, caches)
    for cache_id in set(caches) - before:
        resources.cache_owners[cache_id] = upstream_key
    return answer


def _json_object(body: bytes) -> dict | None:
    try:
        payload = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None

