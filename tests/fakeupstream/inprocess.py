"""This module provides the fake upstream in-process: a ``responses`` callback answering as the fake would.

Unit tests that run relay's Flask app in this process (fuzzing, schemathesis) use it instead of the fake
upstream process: same recordings, same routes and errors, no sockets and no timing modifiers.  Pass a
``State`` to script rules and read the request log exactly as through the control API.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from . import fixtures, routes, transfer
from .server import State
from .wire import Request


def answer(state: State, prepared) -> tuple[int, dict, bytes]:
    """The fake's answer to a ``requests.PreparedRequest``: (status, headers, body)."""
    parts = urlsplit(prepared.url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    body = _body_bytes(prepared.body)
    request = Request(prepared.method, target, "HTTP/1.1", list(prepared.headers.items()), body)
    entry = state.record(request)
    if routes.streams_body(request):
        transfer.receive_bytes(state, request, body)
    plan = routes.plan_for(state, request, entry)
    entry["status"] = plan.status
    entry["outcome"] = "complete"
    headers = {name: value for name, value in plan.headers}
    if plan.body_file is not None:
        return plan.status, headers, transfer.read_file(plan)
    if plan.events is None:
        return plan.status, headers, plan.body or b""
    if plan.framing == "sse":
        return plan.status, headers, b"".join(event.sse_bytes() for event in plan.events)
    return plan.status, headers, b"".join(fixtures.array_chunks(plan.events))


def _body_bytes(body) -> bytes:
    """The request body as bytes, also when requests was given a generator or a file (streamed uploads)."""
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if hasattr(body, "read"):
        return body.read()
    return b"".join(piece.encode() if isinstance(piece, str) else piece for piece in body)


def install(mock, base_url: str, state: State | None = None) -> State:
    """Answer every request under ``base_url`` on a ``responses.RequestsMock``; returns the State used."""
    state = state or State(log_body_max=1024 * 1024)
    state.resources.base_url = base_url.rstrip("/")
    pattern = re.compile(re.escape(base_url.rstrip("/")) + r"/.*")
    for method in ("GET", "POST", "PATCH", "DELETE", "PUT"):
        mock.add_callback(method, pattern, callback=lambda prepared: answer(state, prepared))
    return state
