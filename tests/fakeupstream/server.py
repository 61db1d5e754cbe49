"""This module provides the fake upstream server: connection loop, request log, scripts and playback.

Control API (JSON; these requests are not logged):

* ``GET  /_fake/requests[?since=ID]`` – request log, oldest first. Entry: ``id, method, path`` (decoded),
  ``query`` (raw), ``headers`` ([[name, value], ...] as received), ``key`` (x-goog-api-key or null),
  ``body_text`` (UTF-8 or null), ``body_b64``, ``body_len``, ``body_sha256``, ``body_truncated``,
  ``received_at`` (epoch s), ``rule`` (index of the script rule used or null), ``status``,
  ``response_started_at``, ``events_sent``, ``event_times``, ``finished_at``,
  ``outcome`` (in_progress | complete | cut | client_closed | timeout).
* ``POST /_fake/reset`` – clears log, scripts, closed list and stored cachedContents.
* ``POST /_fake/script`` – a rule or a list of rules, appended; first matching rule wins; ``times: N``
  uses a rule up N times. ``GET /_fake/script`` shows rules and what is left of them.
  Match: ``path_contains``, ``method``, ``key``, ``query_contains``, ``body_contains``.
  Content: ``status`` + ``body`` (string = raw bytes, JSON = pretty-printed like Google) or ``body_b64``,
  ``headers`` (dict or pairs; null removes a header), ``raw: true`` (do not wrap errors for stream calls),
  ``fixture`` (path under tests/fixtures/gemini, ``#N`` picks an interaction / from_issues entry id),
  ``events`` (JSON objects streamed with the framing the request asks for), ``image_mb``,
  ``{"status": 429, "retry_delay": "30s"}`` (Google's QuotaFailure + Help + RetryInfo body).
  Modifiers (also combine with the default answer): ``gap_ms``, ``delay_headers_ms``,
  ``drip_bytes_per_s``, ``cut_after_events`` + ``cut_mode`` ("rst" | "close"), ``cut_mid_event``
  (default cut_after_events 1), ``cut_after_bytes`` (unary), ``hang``, ``stream_forever``,
  ``forever_max_s``.
  Faults: ``reset_before_headers`` (read the request, then end the connection per ``cut_mode`` without a
  byte), ``garbage_bytes: N`` / ``raw_response_b64`` (bytes that are not HTTP instead of a response),
  ``body_garbage_bytes: N`` (a 200 head, then N bytes of noise as the chunked body), ``html_502`` (the
  front end's HTML error page, ``text/html``; ``status`` may change the code), ``line_mb: X`` (a stream
  whose second event is one single line of about X MB).
* ``GET /_fake/closed`` – ``[{request_id, path, closed_at, events_sent, started_at}]`` for responses whose
  client disconnected before the fake finished.
* ``GET /_fake/health``.
* ``GET /_fake/resources``, ``GET|POST /_fake/settings``, ``POST /_fake/progress``, ``POST /_fake/files`` –
  owned resources (files, uploads, batches, operations): see routes.py.

Without x-goog-api-key every API route answers Google's 400 API_KEY_INVALID, except upload chunks (the
upload id is their credential).  Files, uploads, Batch, Imagen/Veo and the ownership checks live in
routes.py and the modules it names; streamed transfers in transfer.py.
A Gemini 3 generate call whose current turn lacks a thought signature gets Google's 400 before any
rule is looked at (thought_signatures.py, called from routes.py).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import time
from urllib.parse import parse_qsl

from . import plans, routes, transfer
from .resources import Resources
from .wire import BadRequest, ClientGone, Request, ResponseWriter, http_date, read_request


class State:
    """Everything the control API exposes; reset between tests."""

    def __init__(self, log_body_max: int, data_dir: str | None = None):
        self.log_body_max = log_body_max
        self.resources = Resources(data_dir)
        self.requests: list[dict] = []
        self.rules: list[dict] = []
        self.closed: list[dict] = []
        self.caches: dict[str, dict] = {}
        self.ids = itertools.count(1)

    def reset(self) -> None:
        self.requests.clear()
        self.rules.clear()
        self.closed.clear()
        self.caches.clear()
        self.resources.reset()

    def record(self, request: Request) -> dict:
        body = request.body
        stored = body[: self.log_body_max]
        try:
            body_text = stored.decode() if len(body) <= self.log_body_max else None
        except UnicodeDecodeError:
            body_text = None
        entry = {
            "id": next(self.ids), "method": request.method, "path": request.path, "query": request.query,
            "headers": [list(pair) for pair in request.headers], "key": request.header("x-goog-api-key"),
            "body_text": body_text, "body_b64": base64.b64encode(stored).decode(), "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(), "body_truncated": len(body) > self.log_body_max,
            "received_at": time.time(), "rule": None, "status": None, "response_started_at": None,
            "events_sent": 0, "event_times": [], "finished_at": None, "outcome": "in_progress",
        }
        self.requests.append(entry)
        return entry

    def take_rule(self, request: Request, upstream_key: str | None) -> tuple[int, dict] | None:
        for index, slot in enumerate(self.rules):
            if slot["remaining"] == 0 or not plans.rule_matches(slot["rule"], request, upstream_key):
                continue
            if slot["remaining"] is not None:
                slot["remaining"] -= 1
            slot["hits"] += 1
            return index, slot["rule"]
        return None

    def add_rules(self, rules) -> None:
        for rule in rules if isinstance(rules, list) else [rules]:
            self.rules.append({"rule": rule, "remaining": rule.get("times"), "hits": 0})


class FakeUpstream:
    def __init__(self, state: State):
        self.state = state

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request = await read_request(reader, writer, stream_body=routes.streams_body)
                except BadRequest:
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                if request is None:
                    break
                if request.path.startswith("/_fake/"):
                    keep_open = await self.control(request, writer)
                else:
                    keep_open = await self.answer(request, reader, writer)
                if not keep_open or not request.keep_alive:
                    break
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def answer(self, request: Request, reader, writer) -> bool:
        entry = self.state.record(request)
        try:
            if request.streamed and not await transfer.receive(self.state, request, entry, reader):
                raise ClientGone()
            plan = routes.plan_for(self.state, request, entry)
            entry["status"] = plan.status
            out = ResponseWriter(reader, writer, plan.drip_bytes_per_s)
            keep_open = await self.play(plan, entry, out)
        except ClientGone:
            entry["outcome"] = "client_closed"
            self.state.closed.append({
                "request_id": entry["id"], "path": entry["path"], "closed_at": time.time(),
                "events_sent": entry["events_sent"], "started_at": entry["received_at"],
            })
            keep_open = False
        entry["finished_at"] = time.time()
        return keep_open

    async def play(self, plan: plans.Plan, entry: dict, out: ResponseWriter) -> bool:
        if plan.hang:
            await out.sleep(plan.forever_max_s)
            entry["outcome"] = "timeout"
            return False
        if plan.delay_headers_ms:
            await out.sleep(plan.delay_headers_ms / 1000)
        if plan.reset_before_headers or plan.raw_response is not None:
            if plan.raw_response:
                await out.write(plan.raw_response)
            await out.abort(plan.cut_mode)
            entry["outcome"] = "cut"
            return False
        if plan.chunks is not None:
            return await self.play_chunks(plan, entry, out)
        if plan.body_file is not None:
            return await transfer.play_file(plan, entry, out)
        headers = list(plan.headers)
        if not any(name.lower() == "date" for name, _ in headers):
            headers.append(("Date", http_date()))
        if plan.events is None:
            body = plan.body or b""
            await out.head(plan.status, headers + [("Content-Length", str(len(body)))])
            entry["response_started_at"] = time.time()
            if plan.cut_after_bytes is not None:
                await out.write(body[: plan.cut_after_bytes])
                await out.abort(plan.cut_mode)
                entry["outcome"] = "cut"
                return False
            await out.write(body)
            entry["outcome"] = "complete"
            return True
        await out.head(plan.status, headers + [("Transfer-Encoding", "chunked")])
        entry["response_started_at"] = time.time()
        return await self.play_events(plan, entry, out)

    @staticmethod
    async def play_chunks(plan: plans.Plan, entry: dict, out: ResponseWriter) -> bool:
        headers = list(plan.headers)
        if not any(name.lower() == "date" for name, _ in headers):
            headers.append(("Date", http_date()))
        await out.head(plan.status, headers + [("Transfer-Encoding", "chunked")])
        entry["response_started_at"] = time.time()
        for index, data in enumerate(plan.chunks):
            if index and plan.gap_ms:
                await out.sleep(plan.gap_ms / 1000)
            await out.chunk(data)
        await out.end_chunks()
        entry["outcome"] = "complete"
        return True

    async def play_events(self, plan: plans.Plan, entry: dict, out: ResponseWriter) -> bool:
        events = plan.events
        sequence = itertools.cycle(events) if plan.stream_forever and events else iter(events)
        deadline = time.monotonic() + plan.forever_max_s
        for index, event in enumerate(sequence):
            if index and plan.gap_ms:
                await out.sleep(plan.gap_ms / 1000)
            if plan.framing == "sse":
                data = event.sse_bytes()
            else:
                data = (b"[" if index == 0 else b"\n,\r\n") + event.array_text.encode()
            if plan.cut_after_events is not None and index == plan.cut_after_events:
                if plan.cut_mid_event:
                    await out.write(b"%x\r\n" % len(data) + data[: len(data) // 2])
                await out.abort(plan.cut_mode)
                entry["outcome"] = "cut"
                return False
            await out.chunk(data)
            entry["events_sent"] += 1
            entry["event_times"].append(time.time())
            if plan.stream_forever and time.monotonic() > deadline:
                break
        if not plan.stream_forever and plan.cut_after_events is not None and plan.cut_after_events >= len(events):
            await out.abort(plan.cut_mode)
            entry["outcome"] = "cut"
            return False
        if plan.framing == "array":
            await out.chunk(b"\n]" if events else b"[]")
        await out.end_chunks()
        entry["outcome"] = "complete"
        return True

    async def control(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        route = (request.method, request.path)
        if route == ("GET", "/_fake/requests"):
            since = int(dict(parse_qsl(request.query)).get("since", 0))
            payload = [entry for entry in self.state.requests if entry["id"] > since]
        elif route == ("POST", "/_fake/reset"):
            self.state.reset()
            payload = {"ok": True}
        elif route == ("POST", "/_fake/script"):
            try:
                self.state.add_rules(json.loads(request.body or b"[]"))
            except (ValueError, AttributeError) as exc:
                return await self._json(writer, 400, {"error": f"bad script: {exc}"})
            payload = {"ok": True, "rules": len(self.state.rules)}
        elif route == ("GET", "/_fake/script"):
            payload = self.state.rules
        elif route == ("GET", "/_fake/closed"):
            payload = self.state.closed
        elif route == ("GET", "/_fake/health"):
            payload = {"ok": True, "pid": os.getpid()}
        elif (handled := routes.control(self.state, request)) is not None:
            return await self._json(writer, *handled)
        else:
            return await self._json(writer, 404, {"error": f"no control route {request.method} {request.path}"})
        return await self._json(writer, 200, payload)

    @staticmethod
    async def _json(writer: asyncio.StreamWriter, status: int, payload) -> bool:
        body = json.dumps(payload).encode()
        head = f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: application/json\r\n"
        writer.write(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        try:
            await writer.drain()
        except ConnectionError:
            return False
        return True


async def serve(host: str, port: int, port_file: str | None, log_body_max: int, data_dir: str | None = None) -> None:
    fake = FakeUpstream(State(log_body_max, data_dir))
    server = await asyncio.start_server(fake.handle_connection, host, port, backlog=4096, limit=4 * 1024 * 1024)
    bound_port = server.sockets[0].getsockname()[1]
    fake.state.resources.base_url = f"http://{host}:{bound_port}"
    if port_file:
        temporary = f"{port_file}.tmp"
        with open(temporary, "w") as handle:
            handle.write(str(bound_port))
        os.replace(temporary, port_file)
    print(f"fake upstream listening on http://{host}:{bound_port}", flush=True)
    async with server:
        await server.serve_forever()
