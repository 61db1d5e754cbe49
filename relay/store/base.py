"""This module provides the shared-state store interface, its errors and the math both backends share."""

import abc
import functools
import math

import orjson

BLOCKED_STATES = ("cooling", "disabled")
# The kinds of upstream resources whose owner relay records (relay.ownership); the names are Google's
# collection names, except "uploads": relay's own ids for resumable upload sessions.
CACHES = "cachedContents"
RESOURCE_KINDS = (CACHES, "files", "uploads", "batches", "operations")
# "kind" groups by what was used: "batch" (a batch job's usage, accounted once when relay first saw it
# finished) or "interactive" (every other call); "door" by the front door a call came through.
USAGE_GROUPS = ("model", "upstream_model", "key", "day", "status", "upstream", "door", "kind")
TOKEN_FIELDS = (
    "prompt_tokens", "candidates_tokens", "thoughts_tokens",
    "cached_tokens", "tool_use_tokens", "total_tokens",
)
# Usage row fields with the default a missing field takes.
USAGE_DEFAULTS = {
    "ts": 0.0, "request_id": None, "client": None, "requested_model": None,
    "upstream_model": None, "upstream": None, "key_id": None, "status": 0,
    "upstream_status": None, **{field: 0 for field in TOKEN_FIELDS},
    "modalities": None, "latency_ms": 0.0, "streamed": False, "aborted": False, "route": None, "batch": False,
    # The front door ("gemini" or "openai"); None on rows written before relay recorded it.
    "door": None,
}
# The longest usage window relay answers for (the admin view and `keys usage --days`).
MAX_USAGE_DAYS = 366
# Usage windows start on a whole UTC hour: the finest granule of the Redis store's totals.
USAGE_WINDOW_ALIGN_S = 3600
# A debited bucket may owe at most this many times its capacity.
DEBT_LIMIT_FACTOR = 10


class StoreError(Exception):
    """The backend failed (unreachable, locked, corrupt). Messages are for logs, not for HTTP clients."""


class KeyExists(Exception):
    """A client key with this name or key hash already exists."""


class Store(abc.ABC):
    """Shared state for all workers and instances: key health, resource owners, client keys, limits, usage.

    Timestamps are float unix seconds supplied by the caller as `now`; ids and hashes are opaque strings.
    Every public method of a backend raises StoreError, never a library error (see __init_subclass__).
    """

    # The library exceptions a backend turns into StoreError.
    backend_errors: tuple[type[Exception], ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for method_name in _INTERFACE:
            if method_name in cls.__dict__:
                setattr(cls, method_name, _translating_errors(cls.__dict__[method_name], cls))

    # Upstream key health

    @abc.abstractmethod
    def blocked_keys(self, now: float) -> dict[str, tuple[float, str]]:
        """Return key_id -> (until, state) for keys "cooling" or "disabled" with until > now (one cheap query)."""

    @abc.abstractmethod
    def cool_down(self, key_id: str, until: float, reason: str, now: float) -> None:
        """Cool the key until max(current until, until) and count a cooldown.

        A key that is disabled and still blocked at `now` stays disabled (with its reason).
        """

    @abc.abstractmethod
    def disable(self, key_id: str, until: float, reason: str, now: float) -> None:
        """Disable the key until `until` (its re-probe time) and count a disable."""

    @abc.abstractmethod
    def clear_key(self, key_id: str) -> None:
        """Mark the key healthy again; its counters and last failure are kept."""

    @abc.abstractmethod
    def add_key_counts(self, counts: dict[str, dict[str, int]], now: float) -> None:
        """Add batched counters per key ({"requests": 12, "failures": 1, ...}).

        Sets last_used_at = now, and last_failure_at = now when the batch has failures > 0.
        """

    @abc.abstractmethod
    def key_report(self) -> dict[str, dict]:
        """Return key_id -> {state, until, reason, last_failure_at, last_failure_reason, last_used_at, counters}.

        state and until are as stored: a "cooling" key whose until has passed is usable again.
        """

    # Owned upstream resources (relay.ownership): cachedContents, files, upload sessions, batches, operations

    @abc.abstractmethod
    def put_resource(self, kind: str, name: str, owner: dict, expire_at: float) -> None:
        """Record (or replace) who owns resource `name` of `kind` (one of RESOURCE_KINDS).

        owner: a small JSON-able dict; its "client" (the client key name) is indexed, so that one client's
        resources are listed without reading anyone else's. Redis also drops the entry at expire_at by the
        wall clock, to reclaim memory.
        """

    @abc.abstractmethod
    def get_resource(self, kind: str, name: str, now: float) -> dict | None:
        """Return the owner dict, or None when missing or expired (expire_at <= now)."""

    @abc.abstractmethod
    def list_resources(self, kind: str, client: str | None, now: float) -> list[tuple[str, dict]]:
        """Return (name, owner) of `client`'s unexpired resources of `kind`, sorted by name.

        client None means every client's (for operators; the per-client form is the one requests use).
        """

    @abc.abstractmethod
    def delete_resource(self, kind: str, name: str) -> None:
        """Forget a resource (and its claims); deleting a missing name is not an error."""

    @abc.abstractmethod
    def claim_resource(self, kind: str, name: str, claim: str, now: float) -> bool:
        """Mark `claim` (e.g. "accounted") on the unexpired resource `name`, atomically: True for the one
        caller, in any worker or instance, that set it; False when it was set before or the record is
        missing or expired. A put_resource of the same name keeps its claims; delete and expiry drop them.
        """

    # The same for context caches, by their older names.

    def put_cache(self, name: str, owner: dict, expire_at: float) -> None:
        self.put_resource(CACHES, name, owner, expire_at)

    def get_cache(self, name: str, now: float) -> dict | None:
        return self.get_resource(CACHES, name, now)

    def list_caches(self, client: str | None, now: float) -> list[tuple[str, dict]]:
        return self.list_resources(CACHES, client, now)

    def delete_cache(self, name: str) -> None:
        self.delete_resource(CACHES, name)

    # Client keys

    @abc.abstractmethod
    def add_client_key(self, record: dict) -> None:
        """Store a client key record (name, key_hash, created, and any other JSON-able fields).

        Raises KeyExists when the name or the key_hash is taken.
        """

    @abc.abstractmethod
    def client_key_by_hash(self, key_hash: str) -> dict | None:
        """Return the record with this key hash, plus "last_used" (float or None), or None."""

    @abc.abstractmethod
    def list_client_keys(self) -> list[dict]:
        """Return every record (with "last_used") sorted by name, revoked ones included."""

    @abc.abstractmethod
    def revoke_client_key(self, name: str) -> bool:
        """Set revoked to True; return False when no key has this name."""

    @abc.abstractmethod
    def touch_client_keys(self, last_used: dict[str, float]) -> None:
        """Batch-update last_used by name; a stored later time wins; unknown names are ignored."""

    # Limits

    @abc.abstractmethod
    def take(self, bucket: str, capacity: float, refill_per_s: float, cost: float, now: float) -> float:
        """Token bucket (starts full): take `cost` tokens and return 0.0, or change nothing and
        return the seconds until `cost` tokens will be there (math.inf when that never happens)."""

    @abc.abstractmethod
    def debit(self, bucket: str, capacity: float, refill_per_s: float, cost: float, now: float) -> float:
        """Subtract `cost` unconditionally (debt floored at -capacity*DEBT_LIMIT_FACTOR); return tokens left."""

    @abc.abstractmethod
    def peek(self, bucket: str, capacity: float, refill_per_s: float, now: float) -> float:
        """Return the bucket's tokens refilled to `now`, changing nothing."""

    @abc.abstractmethod
    def incr(self, counter: str, amount: int, ttl_s: int) -> int:
        """Add `amount` and return the new value; a new counter expires ttl_s wall-clock seconds later."""

    @abc.abstractmethod
    def get_counter(self, counter: str) -> int:
        """Return the counter, 0 when missing or expired."""

    # Live sessions: small expiring records (ephemeral tokens) and leases (concurrent sessions per key)

    def put_record(self, kind: str, name: str, record: dict, expire_at: float) -> None:
        """Store a small JSON-able record under (kind, name) until `expire_at`, replacing any there: one of
        the short-lived values (see put_values)."""
        self.put_values({_record_name(kind, name): orjson.dumps(record).decode()}, expire_at)

    def get_record(self, kind: str, name: str, now: float) -> dict | None:
        """Return the record, or None when missing or expired (expire_at <= now)."""
        value = self.get_values([_record_name(kind, name)], now).get(_record_name(kind, name))
        return orjson.loads(value) if value is not None else None

    @abc.abstractmethod
    def acquire_lease(self, group: str, holder: str, limit: int, until: float, now: float) -> bool:
        """Hold `holder`'s lease in `group` until `until`, atomically: a lease it holds already is renewed,
        a new one is taken only while fewer than `limit` unexpired (until > now) leases are held.

        Returns whether `holder` holds the lease now.
        """

    @abc.abstractmethod
    def release_lease(self, group: str, holder: str) -> None:
        """Give the lease back; releasing a lease not held is not an error."""

    # Usage records

    @abc.abstractmethod
    def write_usage(self, rows: list[dict]) -> None:
        """Append usage rows (fields and defaults: USAGE_DEFAULTS) in one transaction or pipeline."""

    @abc.abstractmethod
    def query_usage(self, since: float, group: str, client: str | None) -> list[dict]:
        """Aggregate rows with ts >= since by group (one of USAGE_GROUPS), sorted by group value.

        Each row: {group: value, "requests", "errors" (status >= 400), and one sum per TOKEN_FIELDS}.
        "model" groups by requested_model (the name the caller asked for, e.g. with a thinking suffix),
        "upstream_model" by the name the upstream saw, "key" by client, "day" by the UTC date of ts.

        Exact at any volume for a `since` on a whole UTC hour (usage_window_start gives one). Redis keeps
        totals per hour and day and counts the part of an hour after any other `since` from its raw
        rows, which it keeps only up to a cap (relay.store.redis_usage).
        """

    @abc.abstractmethod
    def usage_rows(self, since: float, client: str | None = None, limit: int = 1000) -> list[dict]:
        """Return raw rows with ts >= since, newest first, at most `limit`."""

    # Short-lived values: a TTL key-value map (e.g. the OpenAI door's thought signatures)

    @abc.abstractmethod
    def put_values(self, values: dict[str, str], expire_at: float) -> None:
        """Store every name -> value (strings) until expire_at, replacing what a name held (one round trip).

        Redis also drops the values at expire_at by the wall clock; SQLite drops expired ones as it writes.
        """

    @abc.abstractmethod
    def get_values(self, names: list[str], now: float) -> dict[str, str]:
        """Return name -> value for the names stored and unexpired (expire_at > now), in one round trip."""

    # Misc

    @abc.abstractmethod
    def ping(self) -> bool:
        """Return True when the backend answers (readiness); never raises."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release this process's connections; the store reopens lazily if used again."""


_INTERFACE = tuple(sorted(Store.__abstractmethods__))


def _record_name(kind, name):
    return f"record:{kind}:{name}"


def _translating_errors(method, store_class):
    @functools.wraps(method)
    def translated(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except store_class.backend_errors as err:
            raise StoreError(f"{store_class.__name__}.{method.__name__} failed: {err}") from err
    return translated


def refilled_tokens(tokens: float, updated: float, capacity: float, refill_per_s: float, now: float) -> float:
    """Return the bucket level at `now`; time running backwards (clock skew between hosts) refills nothing."""
    elapsed = max(0.0, now - updated)
    return min(capacity, tokens + elapsed * refill_per_s)


def seconds_until(level: float, cost: float, capacity: float, refill_per_s: float) -> float:
    """Return how long until a bucket at `level` holds `cost` tokens (math.inf if never)."""
    if level >= cost:
        return 0.0
    if cost > capacity or refill_per_s <= 0:
        return math.inf
    return (cost - level) / refill_per_s


def debt_floor(capacity: float) -> float:
    return -capacity * DEBT_LIMIT_FACTOR


def normalize_usage_row(row: dict) -> dict:
    """Return the row with every usage field present, typed, and nothing else."""
    normalized = {field: row.get(field, default) for field, default in USAGE_DEFAULTS.items()}
    for field in TOKEN_FIELDS:
        normalized[field] = int(normalized[field] or 0)
    normalized["ts"] = float(normalized["ts"])
    normalized["status"] = int(normalized["status"] or 0)
    if normalized["upstream_status"] is not None:
        normalized["upstream_status"] = int(normalized["upstream_status"])
    normalized["latency_ms"] = float(normalized["latency_ms"] or 0.0)
    normalized["streamed"] = bool(normalized["streamed"])
    normalized["aborted"] = bool(normalized["aborted"])
    normalized["batch"] = bool(normalized["batch"])
    normalized["modalities"] = dict(normalized["modalities"] or {})
    return normalized


def usage_window_start(now: float, days: int) -> float:
    """Return where the usage views' last `days` days begin: the start of the UTC hour `days` days before
    now, which query_usage answers exactly on either backend however many rows there are."""
    return (now - days * 86400) // USAGE_WINDOW_ALIGN_S * USAGE_WINDOW_ALIGN_S


def check_resource_kind(kind: str) -> None:
    if kind not in RESOURCE_KINDS:
        raise ValueError(f"resource kind must be one of {', '.join(RESOURCE_KINDS)}, not {kind!r}")


def migrated_cache_owner(owner: dict) -> dict:
    """A cache owner as stored before resources were generic ("cache": the resource) in today's shape."""
    if "cache" in owner and "resource" not in owner:
        owner = dict(owner)
        owner["resource"] = owner.pop("cache")
    return owner


def check_usage_group(group: str) -> None:
    if group not in USAGE_GROUPS:
        raise ValueError(f"usage group must be one of {', '.join(USAGE_GROUPS)}, not {group!r}")


def usage_sort_key(value):
    """Sort usage groups as SQLite's ORDER BY does: None first."""
    return (value is not None, value if value is not None else 0)
