"""This module provides the fake upstream's HTTP/1.1 wire layer on raw asyncio streams.

It parses requests (Content-Length or chunked bodies, `Expect: 100-continue`) and writes responses
byte by byte under the caller's control: Content-Length bodies, one HTTP chunk per call, dripping,
and abrupt endings (FIN or RST).  A body the caller wants streamed (uploads) is left on the connection
and read piece by piece with :func:`body_pieces`, never held whole.
"""
from __future__ import annotations

import asyncio
import email.utils
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

PIECE_SIZE = 256 * 1024

REASONS = {
    100: "Continue", 200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large",
    429: "Too Many Requests", 499: "Client Closed Request", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


class BadRequest(Exception):
    """The bytes on the connection are not an HTTP/1.1 request we understand."""


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    path: str = field(init=False)
    query: str = field(init=False)
    streamed: bool = False  # the body is still on the connection (read it with body_pieces)
    sink: Any = None  # where a streamed body went (tests/fakeupstream/uploads.py)

    def __post_init__(self):
        raw_path, _, self.query = self.target.partition("?")
        self.path = unquote(raw_path)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)

    @property
    def keep_alive(self) -> bool:
        connection = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       stream_body: Callable[[Request], bool] | None = None) -> Request | None:
    """Read one request; None when the client closed the connection between requests.

    When ``stream_body(request)`` is true the body is not read: ``request.streamed`` is set and the
    caller must consume it with :func:`body_pieces` before the next request on the connection.
    """
    try:
        line = await reader.readline()
    except (ConnectionError, asyncio.LimitOverrunError, ValueError):
        return None
    if not line:
        return None
    while line in (b"\r\n", b"\n"):
        line = await reader.readline()
        if not line:
            return None
    try:
        method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ")
    except ValueError as exc:
        raise BadRequest(f"bad request line {line[:80]!r}") from exc
    headers: list[tuple[str, str]] = []
    while True:
        line = await reader.readline()
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise BadRequest(f"bad header line {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
    request = Request(method, target, version, headers)
    if (request.header("expect") or "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    if stream_body is not None and stream_body(request):
        request.streamed = True
    elif (request.header("transfer-encoding") or "").lower() == "chunked":
        request.body = await _read_chunked(reader)
    elif request.header("content-length"):
        request.body = await reader.readexactly(int(request.header("content-length")))
    return request


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size_line = await reader.readline()
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def body_pieces(reader: asyncio.StreamReader, request: Request,
                      piece_size: int = PIECE_SIZE) -> AsyncIterator[bytes]:
    """The streamed body of ``request`` in pieces of at most ``piece_size`` bytes.

    Raises ``asyncio.IncompleteReadError`` when the client stops sending before the body's end.
    """
    if (request.header("transfer-encoding") or "").lower() == "chunked":
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise asyncio.IncompleteReadError(b"", None)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return
            async for piece in _exactly(reader, size, piece_size):
                yield piece
            await reader.readexactly(2)
    else:
        async for piece in _exactly(reader, int(request.header("content-length") or 0), piece_size):
            yield piece


async def _exactly(reader: asyncio.StreamReader, remaining: int, piece_size: int) -> AsyncIterator[bytes]:
    while remaining > 0:
        piece = await reader.read(min(remaining, piece_size))
        if not piece:
            raise asyncio.IncompleteReadError(b"", remaining)
        remaining -= len(piece)
        yield piece


def http_date() -> str:
    return email.utils.formatdate(usegmt=True)


class ClientGone(Exception):
    """The client closed or reset the connection while we were answering."""


class ResponseWriter:
    """Writes one response; every write raises ClientGone once the peer has gone away."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, drip_bytes_per_s: float = 0):
        self.reader = reader
        self.writer = writer
        self.drip_bytes_per_s = drip_bytes_per_s
        self.bytes_sent = 0
        writer.transport.set_write_buffer_limits(high=64 * 1024)

    def client_gone(self) -> bool:
        return self.reader.at_eof() or self.reader.exception() is not None or self.writer.transport.is_closing()

    async def sleep(self, seconds: float) -> None:
        """Sleep, but raise ClientGone as soon as the peer disconnects."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            if self.client_gone():
                raise ClientGone()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, 0.02))

    async def write(self, data: bytes) -> None:
        if not self.drip_bytes_per_s:
            await self._write_now(data)
            return
        step = max(1, int(self.drip_bytes_per_s / 20))
        for start in range(0, len(data), step):
            await self._write_now(data[start:start + step])
            await self.sleep(len(data[start:start + step]) / self.drip_bytes_per_s)

    async def _write_now(self, data: bytes) -> None:
        if self.client_gone():
            raise ClientGone()
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise ClientGone() from exc
        self.bytes_sent += len(data)

    async def head(self, status: int, headers: list[tuple[str, str]]) -> None:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
        lines += [f"{name}: {value}" for name, value in headers]
        await self._write_now(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def chunk(self, data: bytes) -> None:
        """One HTTP chunk (dripped if configured: then the bytes of the chunk trickle out)."""
        if data:
            await self.write(b"%x\r\n" % len(data) + data + b"\r\n")

    async def end_chunks(self) -> None:
        await self._write_now(b"0\r\n\r\n")

    async def abort(self, mode: str = "rst") -> None:
        """End the connection abruptly after letting already-written bytes reach the peer."""
        transport = self.writer.transport
        try:
            await self.writer.drain()
        except ConnectionError:
            pass
        await asyncio.sleep(0.05)
        if mode == "rst":
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            transport.abort()
        else:
            transport.close()
