"""This package provides relay's Live API support: Gemini's bidirectional WebSocket sessions (voice and video
agents) relayed with the key pool, per-key limits and usage, and ephemeral tokens for browser apps.

Modules: :mod:`~relay.live.protocol` (wire knowledge, pure), :mod:`~relay.live.constraints` (token requests
and locked setups, pure), :mod:`~relay.live.tokens`, :mod:`~relay.live.client_socket` (the caller's
WebSocket), :mod:`~relay.live.upstream` (Google's, with failover), :mod:`~relay.live.session` (one session),
:mod:`~relay.live.registry` (the worker's open sessions), :mod:`~relay.live.observe` (metrics, log, usage).
The routes are in :mod:`relay.api.live`.
"""
