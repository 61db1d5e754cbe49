"""This module provides the upstream pool: which upstream and key to try, in what order, and what to remember.

Per request, :meth:`Pool.plan` lists candidate targets: upstreams serving the model, lowest priority tier
first, weighted-shuffled within a tier, each upstream's keys in rotation, skipping keys that the shared
store says are cooling down or disabled.  :meth:`Pool.record` turns an attempt's outcome (judged by
:mod:`relay.upstream.verdict`) into shared state: a 429 cools its key down, for one model or whole, for
Google's ``RetryInfo`` clamped to at most :data:`MAX_RETRY_DELAY` (else exponential backoff up to
:data:`MAX_BACKOFF`); a key Google refused is disabled until the re-probe time.  Nothing else changes a
key's state: 5xx, connection errors and caller errors only count, so no run of failures a caller can
provoke takes a key out.  State changes are written on those events only; per-key request counters are
kept in memory and flushed in batches.  :meth:`Pool.sticky_target` picks the one key a client's uploads go
to (a hash of the client name, so every worker and instance agrees without writing anything).
"""

import fnmatch
import hashlib
import itertools
import logging
import math
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

from relay.config import Upstream
from relay.errors import NotFound, ResourceExhausted, Unavailable, retry_info
from relay.store import StoreError
from relay.store.base import BLOCKED_STATES

log = logging.getLogger("relay.pool")

MAX_BACKOFF = 300.0
# The longest rest a RetryInfo can give a key: far above the seconds Google asks for per-minute quotas, and a
# key that is still exhausted after it costs one attempt an hour.
MAX_RETRY_DELAY = 3600.0
KEYS_REFUSED = ("The upstream service refused this relay's own API keys for this model: a problem with the "
                "relay's configuration, not with your request or your key. Please try again later.")


@dataclass(frozen=True)
class Target:
    """One upstream and one key to try (``key`` is None in passthrough mode: the caller's key is used)."""

    upstream: Upstream
    key: str | None
    key_id: str

    @property
    def masked_key(self):
        return mask(self.key)


def mask(key):
    return f"…{key[-4:]}" if key else ""


def key_id(upstream_name, key):
    """A stable, non-reversible id for an upstream key, safe to store, log and show."""
    return f"{upstream_name}:{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def rendezvous_score(client_name, target):
    """A key's bid for a client (weighted rendezvous hashing: -w / ln(u), u uniform in (0, 1) from the hash)."""
    digest = hashlib.sha256(f"{client_name}\0{target.key_id}".encode()).digest()
    uniform = (int.from_bytes(digest[:8], "big") + 1) / (2 ** 64 + 2)
    weight = target.upstream.weight / max(1, len(target.upstream.keys))
    return -weight / math.log(uniform)


SCOPE_SEPARATOR = "|"


def scoped_id(key_id_, model):
    """The state id of one key for one model (per-model quotas cool a key down for that model only)."""
    return f"{key_id_}{SCOPE_SEPARATOR}{model}"


def model_matches(patterns, model):
    return any(fnmatch.fnmatchcase(model, pattern) for pattern in patterns)


class Pool:
    """Chooses targets and records outcomes; one instance per worker process, shared by its greenlets."""

    def __init__(self, settings, store, clock=time.time, rng=None):
        self.settings = settings
        self.store = store
        self.clock = clock
        self.rng = rng or random.Random()
        self._rotation = {upstream.name: itertools.count(self.rng.randrange(max(1, len(upstream.keys))))
                          for upstream in settings.upstreams}
        self._strikes = {}
        self._counts = defaultdict(Counter)
        self._lock = threading.Lock()
        self.targets_by_id = {
            key_id(upstream.name, key): Target(upstream, key, key_id(upstream.name, key))
            for upstream in settings.upstreams for key in upstream.keys
        }
        self._targets_by_upstream = {
            upstream.name: [self.targets_by_id[key_id(upstream.name, key)] for key in upstream.keys]
            for upstream in settings.upstreams
        }

    def serving(self, upstream_model):
        """Upstreams whose model patterns match; every upstream for calls about no model (None)."""
        if upstream_model is None:
            return list(self.settings.upstreams)
        return [upstream for upstream in self.settings.upstreams if model_matches(upstream.models, upstream_model)]

    def plan(self, upstream_model, pinned_key_id=None):
        """Targets to try in order; raises 429/503 in Google's shape when every candidate is unavailable."""
        now = self.clock()
        blocked = self._blocked(now)
        if pinned_key_id is not None:
            target = self.targets_by_id.get(pinned_key_id)
            if target is None:
                raise Unavailable("The upstream key that owns a resource this request uses is no longer configured.")
            block = self._block_of(blocked, target, upstream_model)
            if block is not None:
                self._raise_blocked([block], now)
            return [target]

        upstreams = self.serving(upstream_model)
        if not upstreams:
            raise NotFound(f"models/{upstream_model} is not served by any upstream of this relay.")
        tiers = defaultdict(list)
        for upstream in upstreams:
            tiers[upstream.priority].append(upstream)
        order, skipped = [], []
        for priority in sorted(tiers):
            rotations = []
            for upstream in self._weighted_shuffle(tiers[priority]):
                available = []
                for target in self._rotated_keys(upstream):
                    block = self._block_of(blocked, target, upstream_model)
                    if block is None:
                        available.append(target)
                    else:
                        skipped.append(block)
                rotations.append(available)
            for group in itertools.zip_longest(*rotations):
                order.extend(target for target in group if target is not None)
        if not order:
            self._raise_blocked(skipped, now)
        return order

    def sticky_target(self, client_name, model=None):
        """The key a client's uploads go to, so that its files can be used together: the same in every worker
        and instance without a store write, for as long as that key is usable (None in passthrough mode).

        Weighted rendezvous hashing over the keys serving ``model`` (every upstream for None) in the lowest
        priority tier with a usable key: each key scores by a hash of (client, key id) and its share of its
        upstream's weight; the highest wins.  A blocked key (whole, or for ``model``) is passed over until it
        recovers, then wins again; adding or removing a key moves only the clients that key wins or loses.
        Raises like :meth:`plan` when no key is usable.
        """
        if not self.targets_by_id:
            return None
        now = self.clock()
        usable, skipped = self._sticky_candidates(model, self._blocked(now))
        if not usable:
            self._raise_blocked(skipped, now)
        return max(usable, key=lambda target: rendezvous_score(client_name, target))

    def sticky_clients(self, client_names):
        """key id -> the sorted names of ``client_names`` whose uploads stick to that key now (admin view)."""
        usable = self._sticky_candidates(None, self._blocked(self.clock()))[0] if self.targets_by_id else []
        by_key = defaultdict(list)
        for client_name in sorted(client_names) if usable else ():
            by_key[max(usable, key=lambda target: rendezvous_score(client_name, target)).key_id].append(client_name)
        return dict(by_key)

    def record(self, target, outcome, retry_delay=None, model=None, reason=None):
        """Remember an attempt's outcome: ok, rate_limited, key_invalid, server_error, connection_error or
        caller_error.

        A 429 whose quota is per model (Google's usual ``…PerModel`` quotas) passes the call's ``model``: the
        key cools down for that model only and keeps serving the others.  ``reason`` (Google's ErrorInfo
        reason for a refused key) is kept with the disabled state for the admin view.
        """
        state_id = scoped_id(target.key_id, model) if model else target.key_id
        with self._lock:
            counts = self._counts[target.key_id]
            counts["requests"] += 1
            if outcome != "ok":
                counts["failures"] += 1
                counts[outcome] += 1
            strikes = self._strikes.pop(state_id, 0) if outcome == "ok" else self._strikes.get(state_id, 0)
            if outcome == "rate_limited":
                strikes += 1
                self._strikes[state_id] = strikes
        now = self.clock()
        try:
            if outcome == "rate_limited":
                delay = self._cooldown(strikes, retry_delay)
                self.store.cool_down(state_id, now + delay, f"429 for {model}" if model else "429", now)
            elif outcome == "key_invalid":
                self.store.disable(target.key_id, now + self.settings.reprobe_interval,
                                   f"key refused by upstream: {reason}" if reason else "key refused by upstream", now)
        except StoreError:
            log.warning("could not record %s for key %s in the store", outcome, target.key_id)

    def flush_counts(self):
        """Write the per-key counters gathered since the last flush (called from the background flusher)."""
        with self._lock:
            counts, self._counts = self._counts, defaultdict(Counter)
        if not counts:
            return
        try:
            self.store.add_key_counts({key: dict(values) for key, values in counts.items()}, self.clock())
        except StoreError:
            # Keep the counts for the next round (the flusher logs the error).
            with self._lock:
                for key, values in counts.items():
                    self._counts[key].update(values)
            raise

    def report(self, client_names=()):
        """Upstreams and their keys (masked) with state, and the ``client_names`` whose uploads stick to each
        key (see :meth:`sticky_target`), for the admin view."""
        now = self.clock()
        states = self.store.key_report()
        sticky = self.sticky_clients(client_names)
        upstreams = []
        for upstream in self.settings.upstreams:
            keys = []
            for key in upstream.keys:
                state = dict(states.get(key_id(upstream.name, key), {}))
                stored_state = state.pop("state", None) or "healthy"
                until = state.pop("until", None) or 0
                blocked = stored_state in BLOCKED_STATES and until > now
                prefix = key_id(upstream.name, key) + SCOPE_SEPARATOR
                model_cooldowns = [
                    {"model": scoped.removeprefix(prefix), "until": entry["until"]}
                    for scoped, entry in states.items()
                    if scoped.startswith(prefix) and entry.get("state") == "cooling" and (entry.get("until") or 0) > now
                ]
                keys.append({"key": mask(key), "id": key_id(upstream.name, key), "counters": {}, "last_used_at": None,
                             **state, "state": stored_state if blocked else "healthy",
                             "until": until if blocked else None, "reason": state.get("reason") if blocked else None,
                             "model_cooldowns": model_cooldowns,
                             "sticky_clients": sticky.get(key_id(upstream.name, key), [])})
            upstreams.append({"name": upstream.name, "kind": upstream.kind, "url": upstream.url, "models": list(upstream.models),
                              "priority": upstream.priority, "weight": upstream.weight, "keys": keys})
        return upstreams

    def key_health(self):
        """How many of relay's keys can serve, from the shared state now: ``total``; ``rejected`` (refused by
        the upstream, disabled until re-probed); ``cooling`` (resting for a 429 and back on their own, so
        still counted as ``usable``); ``usable`` = total - rejected.  Raises StoreError if the store is down."""
        blocked = self.store.blocked_keys(self.clock())
        states = [blocked[key_id_][1] for key_id_ in self.targets_by_id if key_id_ in blocked]
        total, rejected = len(self.targets_by_id), states.count("disabled")
        return {"total": total, "usable": total - rejected, "cooling": states.count("cooling"), "rejected": rejected}

    # -- helpers ---------------------------------------------------------------------------------

    def _cooldown(self, strikes, retry_delay):
        """Seconds a 429 rests a key: Google's RetryInfo within (0, MAX_RETRY_DELAY], else backoff."""
        if retry_delay is not None and retry_delay > 0:
            return min(retry_delay, MAX_RETRY_DELAY)
        return min(self.settings.cooldown_base * 2 ** (strikes - 1), MAX_BACKOFF)

    def _sticky_candidates(self, model, blocked):
        """The usable keys of the lowest priority tier serving ``model`` that has one, and the blocks passed over."""
        upstreams = self.serving(model)
        if not upstreams:
            raise NotFound(f"models/{model} is not served by any upstream of this relay.")
        skipped = []
        for priority in sorted({upstream.priority for upstream in upstreams}):
            usable = []
            for upstream in (upstream for upstream in upstreams if upstream.priority == priority):
                for target in self._targets_by_upstream[upstream.name]:
                    block = self._block_of(blocked, target, model)
                    if block is None:
                        usable.append(target)
                    else:
                        skipped.append(block)
            if usable:
                return usable, skipped
        return [], skipped

    @staticmethod
    def _block_of(blocked, target, upstream_model):
        """(until, state) if ``target`` may not serve ``upstream_model`` now (whole key or just that model)."""
        block = blocked.get(target.key_id)
        if block is None and upstream_model is not None:
            block = blocked.get(scoped_id(target.key_id, upstream_model))
        return block

    def _blocked(self, now):
        try:
            return self.store.blocked_keys(now)
        except StoreError:
            # Fail open: a store outage must not take every request down with it.
            log.warning("store unreachable while reading key state; trying all keys")
            return {}

    def _rotated_keys(self, upstream):
        targets = self._targets_by_upstream[upstream.name]
        if not targets:
            return []
        start = next(self._rotation[upstream.name]) % len(targets)
        return targets[start:] + targets[:start]

    def _weighted_shuffle(self, upstreams):
        # Efraimidis–Spirakis: sort by u^(1/w), so heavier upstreams tend to come first.
        return sorted(upstreams, key=lambda upstream: -(self.rng.random() ** (1.0 / upstream.weight)))

    def _raise_blocked(self, blocks, now):
        cooling = [until for until, state in blocks if state == "cooling"]
        if cooling:
            wait = max(0.0, min(cooling) - now)
            raise ResourceExhausted(
                f"All upstream keys for this model are rate limited. Please retry in {wait:.1f}s.",
                details=[retry_info(wait)], headers={"Retry-After": str(max(1, int(wait + 0.999)))},
            )
        # Only a refusal by the upstream disables a key (see record).
        raise Unavailable(KEYS_REFUSED)
