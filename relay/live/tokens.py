"""This module provides relay's ephemeral tokens for browser apps: minting, looking up and spending them.

A token (``auth_tokens/`` + 32 random bytes) is shown once, to the client key that minted it; the shared
store keeps only its hash (HMAC under its own domain, like client keys), with the minting key's hash, so a
token dies with its key.  Tokens open Live sessions on ``…BidiGenerateContentConstrained`` only.  Each new
session spends one use (the count is one atomic store increment); resuming a session spends none, as
Google's SDK documents.  A token that is unknown, expired, spent or past its new-session window, or whose
key was revoked, is refused with close code 1008 before anything is sent upstream.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from relay.clients.auth import Client
from relay.errors import Unauthenticated
from relay.gemini.timestamps import format_timestamp
from relay.live.constraints import TokenSpec, apply_constraints
from relay.live.protocol import INTERNAL, POLICY, LiveRefusal, resumes
from relay.store import StoreError

TOKEN_PREFIX = "auth_tokens/"
TOKEN_HASH_DOMAIN = b"relay-live-token-v1"
RECORD_KIND = "live_token"


@dataclass(frozen=True)
class Grant:
    """A token that was found: its hash, what it allows, and the client key it charges."""

    token_hash: str
    spec: TokenSpec
    client: Client


def hash_token(token):
    return hmac.new(TOKEN_HASH_DOMAIN, token.encode(), hashlib.sha256).hexdigest()


def presented_token(headers, args):
    """A relay token in ``Authorization: Token …``, ``?access_token=`` or ``x-goog-api-key``, else None."""
    scheme, _, value = headers.get("Authorization", "").strip().partition(" ")
    candidates = (value if scheme.lower() == "token" else "", args.get("access_token", ""),
                  headers.get("x-goog-api-key", ""))
    for candidate in candidates:
        candidate = candidate.strip()
        if candidate.startswith(TOKEN_PREFIX):
            return candidate
    return None


def mint(store, client_key_hash, spec, now):
    """Store a new token for the key whose hash is ``client_key_hash``; return Google's AuthToken body."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = {
        "client_hash": client_key_hash, "created": now, "uses": spec.uses, "expire_time": spec.expire_time,
        "new_session_expire_time": spec.new_session_expire_time, "setup": spec.setup,
        "field_mask": list(spec.field_mask) if spec.field_mask is not None else None,
    }
    store.put_record(RECORD_KIND, hash_token(token), record, spec.expire_time)
    return {"name": token, "expireTime": format_timestamp(spec.expire_time),
            "newSessionExpireTime": format_timestamp(spec.new_session_expire_time), "uses": spec.uses}


def look_up(store, authenticator, token, now):
    """The :class:`Grant` for a presented token, or a LiveRefusal (1008; 1011 when the store is down)."""
    token_hash = hash_token(token)
    try:
        record = store.get_record(RECORD_KIND, token_hash, now)
    except StoreError:
        raise LiveRefusal(INTERNAL, "UNAVAILABLE: the token could not be checked right now; try again.", 503) from None
    if record is None:
        raise LiveRefusal(POLICY, "UNAUTHENTICATED: the token is not valid or has expired.", 401)
    try:
        client = authenticator.by_hash(record["client_hash"])
    except Unauthenticated:
        raise LiveRefusal(POLICY, "UNAUTHENTICATED: the key that minted this token is no longer valid.", 401) from None
    mask = record.get("field_mask")
    spec = TokenSpec(record["uses"], record["expire_time"], record["new_session_expire_time"], record.get("setup"),
                     tuple(mask) if mask is not None else None)
    return Grant(token_hash, spec, client)


def spend(store, grant, setup, now):
    """The setup the session may run with, after spending a use of the token (none to resume a session)."""
    spec = grant.spec
    if not resumes(setup):
        if now >= spec.new_session_expire_time:
            raise LiveRefusal(POLICY, "UNAUTHENTICATED: the token can no longer start new sessions "
                                      "(its newSessionExpireTime has passed).", 401)
        if spec.uses:
            try:
                used = store.incr(f"live_token_uses:{grant.token_hash}", 1, int(spec.expire_time - now) + 60)
            except StoreError:
                raise LiveRefusal(INTERNAL, "UNAVAILABLE: the token could not be checked right now; try again.",
                                  503) from None
            if used > spec.uses:
                raise LiveRefusal(POLICY, f"UNAUTHENTICATED: the token has been used up (uses: {spec.uses}).", 401)
    return apply_constraints(setup, spec)
