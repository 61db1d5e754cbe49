"""This module provides the background flusher: periodic batched writes off the request path.

Work that a queue can do (usage rows, per-key counters, last-used times) is handed to tasks that run
every ``interval`` seconds in one daemon thread (a greenlet under gunicorn's gevent worker) and once more
at shutdown, so nothing queued is lost on SIGTERM.  It starts lazily, after gunicorn has forked.
"""

import logging
import os
import threading

from relay.store.base import StoreError

log = logging.getLogger("relay.background")


class Flusher:
    def __init__(self, interval=1.0):
        self.interval = interval
        self.tasks = []
        self._pid = None
        self._wake = threading.Event()
        self._stopped = False
        self._lock = threading.Lock()
        self._store_down = False

    def add(self, task):
        """Register a callable that writes whatever has been gathered; it must be cheap when idle."""
        self.tasks.append(task)

    def ensure_started(self):
        if self._pid == os.getpid() or self._stopped:
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._wake = threading.Event()
            threading.Thread(target=self._run, name="relay-flusher", daemon=True).start()

    def flush(self, final=False):
        """Run every task now; a failing task keeps its data and is retried on the next round.

        A store that is down fails every task at once: that is one line when it first happens (and once at
        the final flush), not a traceback per task per second.  Anything else is a bug and gets its traceback.
        """
        down = []
        for task in self.tasks:
            try:
                task()
            except StoreError:
                down.append(getattr(task, "__qualname__", str(task)))
            except Exception:  # noqa: BLE001 - a flush must never kill the flusher; the task keeps its data
                log.exception("background flush failed: %s", getattr(task, "__qualname__", task))
        if down and (final or not self._store_down):
            log.error("the shared store is unreachable: %s%s", ", ".join(down),
                      "; their data is lost with this worker" if final else "; retrying every round",
                      extra={"tasks": down, "final": final})
        self._store_down = bool(down)

    def stop(self):
        """Final flush (idempotent): called from gunicorn's worker_exit hook and atexit."""
        self._stopped = True
        self._wake.set()
        self.flush(final=True)

    def _run(self):
        while not self._stopped:
            self._wake.wait(self.interval)
            if self._stopped:
                return
            self.flush()
