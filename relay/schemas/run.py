"""This module provides what one validation run carries: the app's memory of validated objects, and a pacer.

An application resends the same objects on every call — a conversation its whole history, every request
its system instruction and generation config — so objects that passed are remembered, per app (on its
services), and skipped the next time.  The memory is exact: an object is known by its JSON bytes when they
are short, else by a 128-bit BLAKE2b digest of them; a 64-bit ``hash()`` could let a colliding, unchecked
object through.  It is a least-recently-used map bounded by entries and bytes.

A large body takes long to validate, and under gevent every other stream of the worker waits while one
greenlet computes.  The :class:`Pacer` gives the loop a turn each time a run has held it for a slice of
a few milliseconds.  Pure: no Flask, no requests, no gevent (the pause is passed in).
"""

import contextlib
import contextvars
import time
from collections import OrderedDict
from hashlib import blake2b

import orjson

# A remembered key costs its bytes plus the map's own entry (about this much in CPython).
ENTRY_OVERHEAD = 100
# Short JSON is its own key (exact, and no hashing); longer JSON is known by a digest this long.
SMALL_JSON = 128
DIGEST_SIZE = 16
# How long a run may hold the event loop before it lets other greenlets run.
SLICE_SECONDS = 0.002

_RUN = contextvars.ContextVar("relay_validation_run", default=None)


class ValidationMemory:
    """Objects that passed validation, by kind and exact content; least recently used ones go first."""

    def __init__(self, max_entries=65_536, max_bytes=8 * 1024 * 1024):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._keys = OrderedDict()

    def __len__(self):
        return len(self._keys)

    def __contains__(self, key):
        try:
            self._keys.move_to_end(key)  # a hit is now the most recently used
        except KeyError:
            return False
        return True

    @staticmethod
    def key(kind, value):
        """The exact key of ``value`` validated as ``kind`` (bytes); None for what JSON cannot carry."""
        try:
            data = orjson.dumps(value)
        except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits: validated every time
            return None
        if len(data) <= SMALL_JSON:
            return kind + b"=" + data
        return kind + b"#" + blake2b(data, digest_size=DIGEST_SIZE).digest()

    def add(self, key):
        if key is None or key in self._keys:
            return
        self._keys[key] = None
        self.nbytes += len(key) + ENTRY_OVERHEAD
        while self._keys and (len(self._keys) > self.max_entries or self.nbytes > self.max_bytes):
            oldest, _ = self._keys.popitem(last=False)
            self.nbytes -= len(oldest) + ENTRY_OVERHEAD


class Pacer:
    """Calls ``pause`` (which lets other greenlets run) whenever :meth:`tick` finds a slice used up."""

    def __init__(self, pause=None, slice_seconds=SLICE_SECONDS):
        self.pause = pause
        self.slice_seconds = slice_seconds
        self.pauses = 0
        self._since = time.perf_counter()

    def tick(self):
        if self.pause is not None and time.perf_counter() - self._since >= self.slice_seconds:
            self.give_way()

    def give_way(self):
        """Pause now, whatever is left of the slice: before and after a step that cannot pause itself."""
        if self.pause is not None:
            self.pause()
            self.pauses += 1
            self._since = time.perf_counter()


class Run:
    """One validation: where objects are remembered (None: nowhere) and how the loop is shared."""

    __slots__ = ("memory", "pacer")

    def __init__(self, memory=None, pacer=None):
        self.memory = memory
        self.pacer = pacer or Pacer()


_NO_RUN = Run()


@contextlib.contextmanager
def validation_run(memory=None, pacer=None):
    """Make a :class:`Run` current for the schemas' fields (per greenlet: contextvars follow greenlets)."""
    token = _RUN.set(Run(memory, pacer))
    try:
        yield
    finally:
        _RUN.reset(token)


def current_run():
    return _RUN.get() or _NO_RUN
