"""This module provides the fake upstream's streamed transfers: upload bodies to disk, file bodies to the socket.

Neither direction holds more than one piece (256 KiB) of a body in memory, so a 1 GB upload or download
leaves the fake's RSS where it was.
"""
from __future__ import annotations

import asyncio
import time

from . import uploads
from .plans import Plan
from .wire import PIECE_SIZE, Request, ResponseWriter, body_pieces, http_date


async def receive(state, request: Request, entry: dict, reader: asyncio.StreamReader) -> bool:
    """Stream ``request``'s body into its sink (``request.sink``); False when the client stopped sending."""
    sink = uploads.open_sink(state.resources, request)
    request.sink = sink
    try:
        async for piece in body_pieces(reader, request):
            sink.write(piece)
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        sink.finish()
        uploads.log_body(entry, sink)
        return False
    uploads.log_body(entry, sink)
    return True


def receive_bytes(state, request: Request, body: bytes) -> None:
    """The in-process twin of :func:`receive`: the body is already in memory."""
    request.streamed = True
    request.sink = uploads.open_sink(state.resources, request)
    request.sink.write(body)


async def play_file(plan: Plan, entry: dict, out: ResponseWriter) -> bool:
    """Answer with ``plan.body_file`` read from disk piece by piece (``cut_after_bytes`` honoured)."""
    path, offset, size = plan.body_file
    headers = list(plan.headers)
    if not any(name.lower() == "date" for name, _ in headers):
        headers.append(("Date", http_date()))
    await out.head(plan.status, headers + [("Content-Length", str(size))])
    entry["response_started_at"] = time.time()
    limit = size if plan.cut_after_bytes is None else min(size, plan.cut_after_bytes)
    sent = 0
    with open(path, "rb") as handle:
        handle.seek(offset)
        while sent < limit:
            piece = handle.read(min(PIECE_SIZE, limit - sent))
            if not piece:
                break
            await out.write(piece)
            sent += len(piece)
    if sent < size:
        await out.abort(plan.cut_mode)
        entry["outcome"] = "cut"
        return False
    entry["outcome"] = "complete"
    return True


def read_file(plan: Plan) -> bytes:
    """The whole of ``plan.body_file`` (in-process answers only, where bodies are small)."""
    path, offset, size = plan.body_file
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)
