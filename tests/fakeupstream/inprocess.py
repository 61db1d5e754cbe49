"""This module provides the fake upstream in-process: a ``responses`` callback answering as the fake would.

Unit tests that run relay's Flask app in this process (fuzzing, schemathesis) use it instead of the fake
upstream process: same recordings, same routes and errors, no sockets and no timing modifiers.  Pass a
``State`` to script rules and read the request log exactly as through the control API.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from . import fixtures, plans, thought_signatures
from .server import State
from .wire import Request


def answer(state: State, prepared) -> tuple[int, dict, bytes]:
    """The fake's answer to a ``requests.PreparedRequest``: (status, headers, body)."""
    parts = urlsplit(prepared.url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode()
    request = Request(prepared.method, target, "HTTP/1.1", list(prepared.headers.items()), body)
    entry = state.record(request)
    upstream_key = request.header("x-goog-api-key")
    rejected = thought_signatures.rejection(request) if upstream_key else None
    if not upstream_key:
        plan = plans.error_plan(request, 400, fixtures.api_key_invalid())
    elif rejected is not None:
        plan = rejected
    else:
        plan = plans.default_plan(request, state.caches)
        found = state.take_rule(request, upstream_key)
        if found:
            entry["rule"] = found[0]
            plan = plans.apply_rule(request, found[1], plan)
    entry["status"] = plan.status
    entry["outcome"] = "complete"
    headers = {name: value for name, value in plan.headers}
    if plan.events is None:
        return plan.status, headers, plan.body or b""
    if plan.framing == "sse":
        return plan.status, headers, b"".join(event.sse_bytes() for event in plan.events)
    return plan.status, headers, b"".join(fixtures.array_chunks(plan.events))


def install(mock, base_url: str, state: State | None = None) -> State:
    """Answer every request under ``base_url`` on a ``responses.RequestsMock``; returns the State used."""
    state = state or State(log_body_max=1024 * 1024)
    pattern = re.compile(re.escape(base_url.rstrip("/")) + r"/.*")
    for method in ("GET", "POST", "PATCH", "DELETE", "PUT"):
        mock.add_callback(method, pattern, callback=lambda prepared: answer(state, prepared))
    return state
