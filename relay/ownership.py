"""This module provides ownership of upstream resources: who created each one, under which upstream key.

A context cache, a file, an upload session, a batch or an operation (the kinds in
``relay.store.base.RESOURCE_KINDS``) lives in the Google project of the key that created it.  Relaying a
create records (client key name, upstream, upstream key id, expiry, a small copy of the resource) in the
shared store; a later request that references resources is pinned to their key.  In managed mode only the
client that created a resource may see, use, update or delete it: anything else, and any resource relay
has no record of, gets Google's own answer to a resource that is not yours (403 ``PERMISSION_DENIED``).
Resources that live under different keys cannot be used together by any one key: 400
``FAILED_PRECONDITION``, naming them, before anything is sent.  Passthrough callers use their own key, so
none of this applies to them.
"""

import base64
import binascii
import logging
import re
import time

import orjson

from relay.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unavailable, render_json
from relay.store import StoreError
from relay.gemini.timestamps import parse_timestamp
from relay.store.base import CACHES

log = logging.getLogger("relay.ownership")
DEFAULT_TTL = 3600.0
FILE_TTL = 48 * 3600.0  # Google keeps a file 48 hours (a File without expirationTime is kept as long)
# A record past this size keeps only the resource's short scalar fields (name, times, state, ...).
MAX_RECORD_BYTES = 16 * 1024
# The names relay looks up, per kind; anything else is refused before the store is asked.
NAMES = {
    CACHES: re.compile(r"cachedContents/[A-Za-z0-9_-]{1,256}"),
    "files": re.compile(r"files/[a-z0-9-]{1,40}"),  # Google: <= 40 lowercase letters, digits and dashes
    # relay's own upload ids: secrets.token_urlsafe(UPLOAD_ID_BYTES), 43 characters.
    "uploads": re.compile(r"uploads/[A-Za-z0-9_-]{43}"),
    "batches": re.compile(r"batches/[A-Za-z0-9_-]{1,128}"),
    # Veo's models/{model}/operations/{id}; a model segment never starts with a dot (no "." or ".." segment).
    "operations": re.compile(
        r"(?:(?:models|tunedModels)/[A-Za-z0-9_-][A-Za-z0-9._-]{0,255}/)?operations/[A-Za-z0-9_-]{1,256}"),
}
UPLOAD_ID_BYTES = 32
# Listings built from the records page like Google's: pageSize defaults to 10 and is at most 100.
PAGE_SIZE, MAX_PAGE_SIZE = 10, 100
PRECONDITION_FAILURE_TYPE = "type.googleapis.com/google.rpc.PreconditionFailure"
# Each reference costs a store read before anything is sent: a bound, at Google's most files per prompt.
MAX_REFERENCES = 3000


def not_yours(kind, name):
    """Google's answer to a resource of another project (or one that does not exist)."""
    if kind == CACHES:
        return PermissionDenied("CachedContent not found (or permission denied)")
    if kind == "files":
        return PermissionDenied(f"You do not have permission to access the File {name.removeprefix('files/')} "
                                "or it may not exist.")
    return PermissionDenied(f"{name} not found (or permission denied)")


def unroutable(kind, name):
    """A reference relay cannot look up: refused as Google would a resource that is not yours (caches, whose
    names relay always took as written), else as an invalid argument that shows what relay accepts."""
    if kind == CACHES:
        return not_yours(kind, name)
    shown = repr(name[:80]) + ("…" if len(name) > 80 else "")
    hint = (" A file is referenced as files/<id> or by its uri, https://generativelanguage.googleapis.com/"
            "v1beta/files/<id> (<id>: up to 40 lowercase letters, digits and dashes)." if kind == "files" else "")
    return InvalidArgument(f"{shown} does not name a {kind} resource relay can route.{hint}")


def owner_of(services, call, kind, name):
    """The ownership record of ``name`` that ``call``'s client may use; raises 400 or 403 otherwise."""
    if not isinstance(name, str) or not NAMES[kind].fullmatch(name):
        raise unroutable(kind, str(name))
    try:
        owner = services.store.get_resource(kind, name, time.time())
    except StoreError:
        # Not a 403: the resource may well be the caller's, relay just cannot tell right now.
        raise Unavailable("Resource ownership could not be checked right now; try again.") from None
    if owner is None or owner.get("client") != call.client.name:
        raise not_yours(kind, name)
    return owner


def pin_one(services, call, kind, name):
    """Route ``call`` to the key that owns ``name`` (managed mode) and return its record; None in passthrough."""
    if not services.settings.managed:
        if not NAMES[kind].fullmatch(name):
            raise unroutable(kind, name)
        return None
    owner = owner_of(services, call, kind, name)
    call.pinned_key_id = owner["key_id"]
    return owner


def pin(services, call, references):
    """Route ``call`` to the one upstream key that owns every ``(kind, name)`` in ``references`` (managed mode).

    Every reference is checked before any key is compared, so a request naming another client's resource
    learns nothing about where resources live.
    """
    if not services.settings.managed or not references:
        return
    if len(references) > MAX_REFERENCES:
        raise InvalidArgument(f"This request references {len(references)} files and caches; relay accepts at most "
                              f"{MAX_REFERENCES} in one request.")
    owners = [(name, owner_of(services, call, kind, name)["key_id"]) for kind, name in references]
    by_key = {}
    for name, key_id in owners:
        by_key.setdefault(key_id, []).append(name)
    if len(by_key) > 1:
        raise split_across_keys(list(by_key.values()))
    call.pinned_key_id = owners[0][1]


def split_across_keys(groups):
    """The 400 for resources no one upstream key can use together; ``groups``: names per key."""
    where = ", ".join(f"{' and '.join(names)} under {'one' if index == 0 else 'another'} upstream key"
                      for index, names in enumerate(groups))
    violations = [{"type": "UPSTREAM_KEY", "subject": name,
                   "description": f"Created under upstream key group {index + 1}."}
                  for index, names in enumerate(groups) for name in names]
    return FailedPrecondition(
        f"This request uses resources that were created under different upstream keys, and no one key can use "
        f"them all: {where}. Use them in separate requests, or create them again (a client's uploads stay on "
        f"one key while it is healthy).",
        details=[{"@type": PRECONDITION_FAILURE_TYPE, "violations": violations}])


def small_copy(resource, drop=()):
    """``resource`` without the ``drop`` fields; past MAX_RECORD_BYTES, only its short scalar fields."""
    copy = {key: value for key, value in resource.items() if key not in drop}
    if len(orjson.dumps(copy)) > MAX_RECORD_BYTES:
        copy = {key: value for key, value in copy.items()
                if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 1024)}
    return copy


def remember(services, call, kind, resource, drop=(), default_ttl=DEFAULT_TTL, extra=None):
    """After a successful create or update relayed for ``call``: record that its client owns ``resource`` (a
    dict as Google returned it) under the key that served it, with ``extra`` fields in the record (relay's
    own notes, never shown to callers).  Returns the name recorded, or None."""
    if call.status is None or call.status >= 300 or not services.settings.managed or call.target is None:
        return None
    name = resource.get("name") if isinstance(resource, dict) else None
    if not isinstance(name, str) or not NAMES[kind].fullmatch(name):
        return None
    expires = resource.get("expireTime") or resource.get("expirationTime")
    expire_at = parse_timestamp(expires) or time.time() + default_ttl
    owner = {**(extra or {}), "upstream": call.target.upstream.name, "key_id": call.target.key_id,
             "client": call.client.name, "resource": small_copy(resource, drop)}
    try:
        services.store.put_resource(kind, name, owner, expire_at)
    except StoreError:
        # The resource exists upstream whatever happens here; failing the call would only orphan it.
        log.error("could not record the owner of %s; it cannot be used through relay", name)
        return None
    return name


def forget_resource(services, call, kind, name):
    """After a successful delete: drop the ownership record (it would expire on its own anyway)."""
    if call.status is not None and call.status < 300 and services.settings.managed:
        try:
            services.store.delete_resource(kind, name)
        except StoreError:
            log.warning("could not forget %s; its record expires with the resource", name)


def owned(services, call, kind):
    """The caller's own resources of ``kind`` (the copies recorded with them), by name.

    A client's resources may live under several upstream keys, and any one key lists only its own, so
    managed listings are built from what relay recorded when it relayed each create or update.
    """
    records = services.store.list_resources(kind, call.client.name, time.time())
    return [owner["resource"] for _, owner in records if isinstance(owner.get("resource"), dict)]


def parsed_object(body):
    """A JSON object answer, parsed; None for anything else."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def page(services, call, kind, collection, query):
    """One page of the caller's own resources of ``kind`` as Google lists them: ``{collection: [...],
    "nextPageToken": ...}``, paged by ``pageSize`` (default 10, at most 100) and ``pageToken``."""
    size, after = page_request(query)
    records = services.store.list_resources(kind, call.client.name, time.time())
    remaining = [(name, owner) for name, owner in records if after is None or name > after]
    shown = remaining[:size]
    listing = {collection: [owner["resource"] for _, owner in shown if isinstance(owner.get("resource"), dict)]}
    if len(remaining) > size:
        listing["nextPageToken"] = base64.urlsafe_b64encode(shown[-1][0].encode()).decode()
    return listing if listing[collection] or "nextPageToken" in listing else {}


def page_request(query):
    """(page size, the name a page starts after or None) from a listing's query; 400 for a bad token or size."""
    text = query.get("pageSize") or query.get("page_size") or ""
    try:
        size = int(text) if text else 0
    except ValueError:
        raise InvalidArgument(f"pageSize {text[:20]!r} is not a number.") from None
    size = PAGE_SIZE if size <= 0 else min(size, MAX_PAGE_SIZE)
    token = query.get("pageToken") or query.get("page_token")
    if not token:
        return size, None
    try:
        after = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidArgument("Invalid page token.") from None
    if not after.isprintable():
        raise InvalidArgument("Invalid page token.")
    return size, after


# -- context caches (the cachedContents routes) --------------------------------------------------------------

def record_owner(services, call, body):
    """``call.inspect`` of a cache create or update: remember who owns the cache in the response."""
    try:
        cache = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    remember(services, call, CACHES, cache, drop=("contents",))
    return None


def forget(services, call, body):
    """``call.inspect`` of a cache delete."""
    forget_resource(services, call, CACHES, call.scratch["cache_name"])
    return None


def listing(services, call):
    """``GET cachedContents`` in managed mode: the caller's own caches, from the ownership records."""
    caches = owned(services, call, CACHES)
    return render_json({"cachedContents": caches} if caches else {})
