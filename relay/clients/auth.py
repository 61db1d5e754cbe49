"""This module provides client authentication: which key a caller presented, and whether relay accepts it.

Callers present a key as ``Authorization: Bearer``, ``x-goog-api-key`` or ``?key=`` — the forms Google's
SDKs and docs use.  Google also takes ``$key``, ``access_token`` and ``oauth_token`` query parameters;
relay does not authenticate with them (no SDK sends them for API keys, and ``access_token`` means an
OAuth or ephemeral token, not a relay key), but strips them like every credential form before forwarding
(relay.gemini.parameters).  Static keys (``RELAY_API_KEYS``) and keys created with the CLI (stored as
hashes) are checked in constant time; the raw key is never stored, logged or forwarded.

The admin token (``RELAY_ADMIN_TOKEN``) is checked here too, once for every admin surface.
"""

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from relay.errors import PermissionDenied, Unauthenticated
from relay.store import StoreError

KEY_HASH_DOMAIN = b"relay-client-key-v1"
LOOKUP_CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class Client:
    """Who is calling: a name for accounting (never the key) and the limits that apply."""

    name: str
    kind: str  # "static", "managed" (CLI-created) or "passthrough"
    rpm: int | None = None
    tpm: int | None = None
    daily_tokens: int | None = None
    models: tuple = ()
    live_sessions: int | None = None  # concurrent Live API sessions
    passthrough_key: str | None = field(default=None, repr=False)


def hash_key(key):
    """The stored form of a client key: HMAC-SHA256 under a fixed domain, hex (keys are high-entropy)."""
    return hmac.new(KEY_HASH_DOMAIN, key.encode(), hashlib.sha256).hexdigest()


def presented_key(headers, args):
    """The key in x-goog-api-key, an ``Authorization: Bearer`` header or ``?key=``, else None."""
    key = headers.get("x-goog-api-key", "").strip()
    if key:
        return key
    scheme, _, token = headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = args.get("key", "").strip()
    return key or None


def presents_admin_token(headers, admin_token):
    """True when ``headers`` carry ``Authorization: Bearer <admin_token>``; always False with no admin token.

    Whatever was presented is compared, so the time taken says nothing about the token.
    """
    scheme, _, presented = headers.get("Authorization", "").partition(" ")
    matches = hmac.compare_digest(presented.strip().encode(), (admin_token or "").encode())
    return bool(admin_token) and scheme.lower() == "bearer" and matches


def require_admin_token(headers, admin_token, surface):
    """Raise unless ``headers`` carry the admin token: 403 while admin surfaces are off (no token set), else 401."""
    if not admin_token:
        raise PermissionDenied(f"{surface} is off: set RELAY_ADMIN_TOKEN to enable it.")
    if not presents_admin_token(headers, admin_token):
        raise Unauthenticated(f"{surface} needs the admin token: 'Authorization: Bearer <RELAY_ADMIN_TOKEN>'.")


class Authenticator:
    """Accepts static keys and stored (hashed) keys in managed mode; forwards the caller's key in passthrough."""

    def __init__(self, settings, store, clock=time.time):
        self.managed = settings.managed
        self.store = store
        self.clock = clock
        # Named by a hash prefix too, so two keys that end alike never share an identity (caches, usage).
        self._static = [(hash_key(key), f"static:{hash_key(key)[:8]}…{key[-4:]}") for key in settings.client_keys]
        self._cache = {}

    def authenticate(self, key):
        if not key:
            raise Unauthenticated("Request is missing an API key. Pass it as x-goog-api-key, a Bearer token or ?key=.")
        if not self.managed:
            return Client(name=f"passthrough:…{key[-4:]}", kind="passthrough", passthrough_key=key)
        return self.by_hash(hash_key(key))

    def by_hash(self, digest):
        """The managed-mode client whose key hashes to ``digest`` (see :func:`hash_key`), checked as a presented
        key is: for calls that carry no key but a credential bound to one (an upload session)."""
        name = None
        for static_digest, static_name in self._static:  # no early exit: constant work whichever key matches
            if hmac.compare_digest(digest, static_digest):
                name = static_name
        if name is not None:
            return Client(name=name, kind="static")
        record = self._lookup(digest)
        if record is None or not hmac.compare_digest(record.get("key_hash", ""), digest):
            raise Unauthenticated("API key not valid. Please pass a valid relay API key.")
        if record.get("revoked"):
            raise Unauthenticated("API key has been revoked.")
        if expired(record.get("expires"), self.clock()):
            raise Unauthenticated("API key has expired.")
        return Client(
            name=record["name"], kind="managed", rpm=record.get("rpm"), tpm=record.get("tpm"),
            daily_tokens=record.get("daily_tokens"), models=tuple(record.get("models") or ()),
            live_sessions=record.get("live_sessions"),
        )

    def _lookup(self, digest):
        now = self.clock()
        cached = self._cache.get(digest)
        if cached and cached[0] > now:
            return cached[1]
        try:
            record = self.store.client_key_by_hash(digest)
        except StoreError:
            raise Unauthenticated("API key could not be checked right now; try again.") from None
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[digest] = (now + LOOKUP_CACHE_SECONDS, record)
        return record

    def client_names(self):
        """The names of the keys that may call now: static keys', and stored keys neither revoked nor expired.
        Raises StoreError when the store is down."""
        now = self.clock()
        stored = [record["name"] for record in self.store.list_client_keys()
                  if not record.get("revoked") and not expired(record.get("expires"), now)]
        return [name for _, name in self._static] + stored

    def has_any_keys(self):
        if self._static:
            return True
        try:
            return any(not record.get("revoked") for record in self.store.list_client_keys())
        except StoreError:
            return False


def expired(expires, now):
    """Whether a key whose ``expires`` is a YYYY-MM-DD date (it works through that day, UTC) or None has
    expired at ``now``; an unreadable date counts as expired."""
    if not expires:
        return False
    try:
        last_day = date.fromisoformat(str(expires))
    except ValueError:
        return True
    return datetime.fromtimestamp(now, timezone.utc).date() > last_day
