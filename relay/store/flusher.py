"""This module provides the background flusher: periodic batched writes off the request path.

Work that a queue can do (usage rows, per-key counters, last-used times) is handed to tasks that run
every ``interval`` seconds in one daemon thread (a greenlet under gunicorn's gevent worker) and once more
at shutdown, so nothing queued is lost on SIGTERM.  It starts lazily, after gunicorn has forked.
"""

import logging
import os
import threading

log = logging.getLogger("relay.background")


class Flusher:
    def __init__(self, interval=1.0):
        self.interval = interval
        self.tasks = []
        self._pid = None
        self._wake = threading.Event()
        self._stopped = False
        self._lock = threading.Lock()

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

    def flush(self):
        """Run every task now; a failing task is logged and retried on the next round."""
        for task in self.tasks:
            try:
                task()
            except Exception:  # noqa: BLE001 - a flush must never kill the flusher; the task keeps its data
                log.exception("background flush failed: %s", getattr(task, "__qualname__", task))

    def stop(self):
        """Final flush (idempotent): called from gunicorn's worker_exit hook and atexit."""
        self._stopped = True
        self._wake.set()
        self.flush()

    def _run(self):
        while not self._stopped:
            self._wake.wait(self.interval)
            if self._stopped:
                return
            self.flush()
