"""This module provides cachedContent ownership: who created each context cache, on which upstream key.

Relaying ``POST cachedContents`` records (upstream, upstream key id, client key name, expiry) in the shared
store; a later request that names the cache is pinned to that key, and in managed mode only the client
that created a cache may see, use, update or delete it.  Anything else gets Google's own answer to a
cache that is not yours: 403 ``PERMISSION_DENIED``.
"""

import logging
import re
import time
from datetime import datetime

import orjson

from relay.errors import PermissionDenied, Unavailable, render_json
from relay.store import StoreError

log = logging.getLogger("relay.caches")
DEFAULT_TTL = 3600.0
_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$")


def not_yours():
    return PermissionDenied("CachedContent not found (or permission denied)")


def parse_timestamp(text):
    """Unix seconds of an RFC 3339 timestamp with up to nine fractional digits (Google's form), or None."""
    match = _RFC3339.match(text) if isinstance(text, str) else None
    if not match:
        return None
    whole, fraction, zone = match.groups()
    moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def owner_of(services, call, name):
    """The ownership record for cache ``name`` that ``call``'s client may use; raises 403 otherwise."""
    try:
        owner = services.store.get_cache(name, time.time())
    except StoreError:
        # Not a 403: the cache may well be the caller's, relay just cannot tell right now.
        raise Unavailable("Cached content ownership could not be checked right now; try again.") from None
    if owner is None or owner.get("client") != call.client.name:
        raise not_yours()
    return owner


def pin_to_owner(services, call, name):
    """Route ``call`` to the upstream key that owns cache ``name`` (managed mode only)."""
    if services.settings.managed:
        call.pinned_key_id = owner_of(services, call, name)["key_id"]


def record_owner(services, call, body):
    """After a successful create or update: remember (or refresh) who owns the cache in the response."""
    if call.status is None or call.status >= 300 or not services.settings.managed or call.target is None:
        return None
    try:
        cache = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    name = cache.get("name") if isinstance(cache, dict) else None
    if not isinstance(name, str):
        return None
    expire_at = parse_timestamp(cache.get("expireTime")) or time.time() + DEFAULT_TTL
    owner = {"upstream": call.target.upstream.name, "key_id": call.target.key_id, "client": call.client.name,
             "cache": {key: value for key, value in cache.items() if key != "contents"}}
    try:
        services.store.put_cache(name, owner, expire_at)
    except StoreError:
        # The cache exists upstream whatever happens here; failing the call would only orphan it.
        log.error("could not record the owner of %s; it cannot be used through relay", name)
    return None


def forget(services, call, body):
    """After a successful delete: drop the ownership record (it would expire on its own anyway)."""
    if call.status is not None and call.status < 300 and services.settings.managed:
        try:
            services.store.delete_cache(call.scratch["cache_name"])
        except StoreError:
            log.warning("could not forget %s; its record expires with the cache", call.scratch["cache_name"])
    return None


def listing(services, call):
    """``GET cachedContents`` in managed mode: the caller's own caches, from the ownership records.

    A client's caches may live under several upstream keys, and any one key lists only its own, so the
    answer is built from what relay recorded when it relayed each create or update.
    """
    records = services.store.list_caches(call.client.name, time.time())
    caches = [owner["cache"] for _, owner in sorted(records) if isinstance(owner.get("cache"), dict)]
    return render_json({"cachedContents": caches} if caches else {})
