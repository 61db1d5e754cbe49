"""This module provides the worker's register of open Live sessions: concurrent-session leases per client key,
and closing every session when the worker shuts down.

A client key with a Live-session cap (``--live-sessions``) holds one lease in the shared store per open
session, so the cap holds across workers and instances.  A lease runs for :data:`LEASE_SECONDS` and is
renewed while its session lives; one that a dead worker left behind frees its place when it runs out.
"""

import logging
import threading
import time

from relay.live.protocol import GOING_AWAY
from relay.store import StoreError

log = logging.getLogger("relay.live")

LEASE_SECONDS = 300.0
RENEW_EVERY = 60.0
SHUTDOWN_REASON = "relay is restarting: resume the session (sessionResumption handle) on a new connection"


def lease_group(client):
    return f"live:{client.name}"


class LiveSessions:
    """Open sessions of this worker (shared by its greenlets); kept in ``app.extensions["relay_live"]``."""

    def __init__(self, store, clock=time.time):
        self.store = store
        self.clock = clock
        self.sessions = set()
        self._leases = {}  # session id -> (group, limit)
        self._renewer = None
        self._lock = threading.Lock()

    def add(self, session):
        self.sessions.add(session)

    def discard(self, session):
        self.sessions.discard(session)
        self.release(session.id)

    def acquire(self, client, session_id):
        """Take a lease for a session of a capped key; True if the key may open it (uncapped keys always may).

        A store that cannot answer lets the session through, as relay's other limits do.
        """
        limit = client.live_sessions
        if not limit:
            return True
        now = self.clock()
        try:
            held = self.store.acquire_lease(lease_group(client), session_id, limit, now + LEASE_SECONDS, now)
        except StoreError:
            log.warning("store unreachable while counting %s's Live sessions; letting the session through", client.name)
            return True
        if held:
            self._leases[session_id] = (lease_group(client), limit)
            self._start_renewer()
        return held

    def release(self, session_id):
        lease = self._leases.pop(session_id, None)
        if lease is not None:
            try:
                self.store.release_lease(lease[0], session_id)
            except StoreError:
                log.warning("could not release a Live-session lease; it runs out in %.0f s", LEASE_SECONDS)

    def renew(self):
        now = self.clock()
        for session_id, (group, limit) in list(self._leases.items()):
            try:
                # Renewing a held lease always succeeds; a lease lost meanwhile (store flushed) is taken again.
                self.store.acquire_lease(group, session_id, limit, now + LEASE_SECONDS, now)
            except StoreError:
                log.warning("could not renew a Live-session lease")

    def close_all(self, code=GOING_AWAY, reason=SHUTDOWN_REASON, wait=2.0):
        """Close every open session (clients get ``code``, 1001 by default) and wait up to ``wait`` seconds for
        them to end, so their usage rows are queued before the worker exits.  Returns how many were open."""
        sessions = list(self.sessions)
        for session in sessions:
            session.stop(code, reason)
        deadline = time.monotonic() + wait
        for session in sessions:
            session.done.wait(max(0.0, deadline - time.monotonic()))
        return len(sessions)

    def release_all(self):
        """Give back every lease this worker holds (at shutdown: its sessions are over), which also ends the
        renewer."""
        for session_id in list(self._leases):
            self.release(session_id)

    def _start_renewer(self):
        with self._lock:
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(target=self._renew_forever, name="relay-live-leases", daemon=True)
                self._renewer.start()

    def _renew_forever(self):
        while self._leases:
            time.sleep(RENEW_EVERY)
            self.renew()
