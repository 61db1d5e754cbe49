"""This module provides the thought-signature memory: tool_call id → Gemini ``thoughtSignature``, per client.

Gemini 3 rejects a multi-turn function call whose signature did not come back, and most OpenAI clients
drop ``extra_content`` when they rebuild the history.  So relay remembers each signature it returned, in
the shared store with a TTL, and puts it back when a call comes back without one.  Entries are bound to
the client key: the stored name is a hash of (client, tool_call id), so a client can never read — or
even address — another client's signature, whatever ids it sends.  A store that fails costs nothing but
the memory: lookups find nothing (Google's placeholder is used), and failed writes are logged.
"""

import hashlib
import logging
import time

from relay.clients.auth import hash_key
from relay.store import StoreError

log = logging.getLogger("relay.signatures")
TTL_SECONDS = 24 * 3600.0
# A request may ask for at most this many signatures; calls beyond get the placeholder (Gemini checks only
# the first call of each step of the current turn, so an honest client never comes near it).
MAX_LOOKUPS = 256
# Gemini's signatures are a few KB; anything far larger is not worth a store write.
MAX_SIGNATURE_CHARS = 256 * 1024


def owner_of(client):
    """Who the entries belong to: a relay key's name, or (passthrough) a hash of the caller's own Google key,
    since passthrough names keep only the key's last characters."""
    if client is None:
        return "anonymous"
    if client.passthrough_key:
        return f"passthrough:{hash_key(client.passthrough_key)}"
    return f"{client.kind}:{client.name}"


class SignatureMemory:
    """The signatures of one client, read in one round trip per request and written once per answer."""

    __slots__ = ("store", "owner", "clock")

    def __init__(self, store, client, clock=time.time):
        self.store = store
        self.owner = owner_of(client)
        self.clock = clock

    def _name(self, tool_call_id):
        digest = hashlib.sha256(f"{self.owner}\0{tool_call_id}".encode("utf-8", "surrogatepass")).hexdigest()
        return f"sig:{digest[:48]}"

    def recall(self, tool_call_ids):
        """``{tool_call_id: signature}`` for the ids this client was answered with (unknown ids are absent)."""
        wanted = list(dict.fromkeys(tool_call_ids))[:MAX_LOOKUPS]
        if not wanted:
            return {}
        names = {self._name(tool_call_id): tool_call_id for tool_call_id in wanted}
        try:
            found = self.store.get_values(list(names), self.clock())
        except StoreError:
            log.warning("thought signatures could not be read; the placeholder is used instead")
            return {}
        return {names[name]: signature for name, signature in found.items()}

    def remember(self, pairs):
        """Store ``(tool_call_id, signature)`` pairs for TTL_SECONDS; never fails the answer."""
        values = {self._name(tool_call_id): signature for tool_call_id, signature in pairs
                  if isinstance(signature, str) and len(signature) <= MAX_SIGNATURE_CHARS}
        if not values:
            return
        try:
            self.store.put_values(values, self.clock() + TTL_SECONDS)
        except StoreError:
            log.warning("%d thought signature(s) could not be stored; clients that drop them get the placeholder",
                        len(values))
