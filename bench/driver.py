"""This module provides the benchmark's load driver: a small asyncio HTTP/1.1 client, and wrk when present.

It measures what bench/run.py reports: requests/s and latency percentiles for unary calls, SSE
time-to-first-event and every event's one-way delay (the fake upstream stamps each event with
CLOCK_MONOTONIC, which this process shares), events that arrived glued together in one read,
bulk throughput, and errors. Every loop is bounded by a deadline or a count.
"""

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

SENT_RE = re.compile(rb"@(\d{6,})")
READ_SIZE = 1 << 18


class HttpError(Exception):
    """The peer broke HTTP framing or closed early."""


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(fraction * (len(ordered) - 1)))))
    return ordered[index]


def ms(nanoseconds):
    return None if nanoseconds is None else round(nanoseconds / 1e6, 3)


class Connection:
    """One keep-alive connection; `request` sends a call and streams the body into `sink`."""

    def __init__(self, host, port, reader, writer):
        self.host, self.port = host, port
        self.reader, self.writer = reader, writer
        self.reusable = True

    @classmethod
    async def open(cls, host, port):
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(host, port, reader, writer)

    def close(self):
        self.reusable = False
        self.writer.close()

    async def request(self, method, path, headers, body=b"", sink=None):
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        view = memoryview(body)
        for offset in range(0, len(view), READ_SIZE * 4):
            self.writer.write(view[offset:offset + READ_SIZE * 4])
            await self.writer.drain()
        await self.writer.drain()
        status, response_headers = await self.read_head()
        received = await self.read_body(response_headers, sink or (lambda data: None))
        if response_headers.get("connection", "").lower() == "close":
            self.close()
        return status, response_headers, received

    async def read_head(self):
        while True:
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            if status != 100:
                break
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def read_body(self, headers, sink):
        received = 0
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await self.reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    return received
                received += await self.read_exactly(size, sink)
                if await self.reader.readexactly(2) != b"\r\n":
                    raise HttpError("bad chunk terminator")
        if "content-length" in headers:
            return await self.read_exactly(int(headers["content-length"]), sink)
        self.reusable = False
        while data := await self.reader.read(READ_SIZE):
            sink(data)
            received += len(data)
        return received

    async def read_exactly(self, size, sink):
        remaining = size
        while remaining:
            data = await self.reader.read(min(remaining, READ_SIZE))
            if not data:
                raise HttpError("connection closed mid-body")
            sink(data)
            remaining -= len(data)
        return size


class SseRecorder:
    """Splits SSE bytes into events and notes when each one was complete."""

    def __init__(self):
        self.buffer = bytearray()
        self.arrivals = []
        self.delays = []
        self.coalesced = 0

    def feed(self, data):
        now = time.monotonic_ns()
        self.buffer += data
        completed = 0
        while True:
            ends = [(self.buffer.find(sep), len(sep)) for sep in (b"\r\n\r\n", b"\n\n")]
            ends = [(at, size) for at, size in ends if at >= 0]
            if not ends:
                break
            at, size = min(ends)
            event = bytes(self.buffer[:at])
            del self.buffer[:at + size]
            if not event.strip():
                continue
            completed += 1
            self.arrivals.append(now)
            sent = SENT_RE.search(event)
            if sent:
                self.delays.append(now - int(sent.group(1)))
        self.coalesced += max(0, completed - 1)


def error_key(exc):
    return type(exc).__name__


def count(errors, key):
    errors[key] = errors.get(key, 0) + 1


async def unary_load(host, port, path, headers, body, concurrency, duration, timeout=30.0):
    """Closed-loop load: `concurrency` keep-alive connections for `duration` seconds."""
    latencies, errors = [], {}
    deadline = time.monotonic() + duration

    async def worker():
        connection = None
        while time.monotonic() < deadline:
            try:
                if connection is None or not connection.reusable:
                    connection = await asyncio.wait_for(Connection.open(host, port), timeout)
                started = time.perf_counter_ns()
                status, _, _ = await asyncio.wait_for(connection.request("POST", path, headers, body), timeout)
                latencies.append(time.perf_counter_ns() - started)
                if status != 200:
                    count(errors, f"http {status}")
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, HttpError, ValueError) as exc:
                count(errors, error_key(exc))
                if connection is not None:
                    connection.close()
                connection = None
                await asyncio.sleep(0.01)
        if connection is not None:
            connection.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return {
        "tool": "asyncio", "requests": len(latencies), "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": ms(percentile(latencies, 0.50)), "p99_ms": ms(percentile(latencies, 0.99)),
        "errors": sum(errors.values()), "error_kinds": errors,
    }


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = io.open(%(body_file)s, "rb"):read("*a")
%(headers)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, \\"p99_us\\": %%d, " ..
    "\\"connect\\": %%d, \\"read\\": %%d, \\"write\\": %%d, \\"status\\": %%d, \\"timeout\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_available():
    return shutil.which("wrk") is not None


def wrk_load(host, port, path, headers, body, concurrency, duration):
    """The same closed-loop measurement with wrk (one thread, so it takes at most one core)."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as folder:
        body_file = os.path.join(folder, "body.json")
        with open(body_file, "wb") as handle:
            handle.write(body)
        header_lines = "\n".join(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}"
                                 for name, value in headers.items())
        script = os.path.join(folder, "post.lua")
        with open(script, "w") as handle:
            handle.write(WRK_SCRIPT % {"body_file": json.dumps(body_file), "headers": header_lines})
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "30s",
                   "-s", script, f"http://{host}:{port}{path}"]
        finished = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((line for line in finished.stdout.splitlines() if line.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {finished.stderr.strip() or finished.stdout[-300:]}")
    result = json.loads(line[len("WRKJSON "):])
    errors = {kind: result[kind] for kind in ("connect", "read", "write", "status", "timeout") if result[kind]}
    return {
        "tool": "wrk", "requests": result["requests"],
        "rps": round(result["requests"] / (result["duration_us"] / 1e6), 1),
        "p50_ms": round(result["p50_us"] / 1000, 3), "p99_ms": round(result["p99_us"] / 1000, 3),
        "errors": sum(errors.values()), "error_kinds": errors,
    }


async def one_stream(connection, path, headers, body, timeout):
    recorder = SseRecorder()
    started = time.monotonic_ns()
    status, _, _ = await asyncio.wait_for(connection.request("POST", path, headers, body, recorder.feed), timeout)
    return status, started, recorder


async def sse_load(host, port, path, headers, body, concurrency, streams_each, expected_events, timeout=30.0,
                   stagger_s=0.0):
    """`concurrency` connections each running `streams_each` streams back to back, connection i starting
    ``i * stagger_s`` seconds after the first (so that stream starts are spread out, not simultaneous)."""
    ttfe, delays, gaps, errors = [], [], [], {}
    totals = {"streams": 0, "events": 0, "coalesced": 0}

    async def worker(index):
        await asyncio.sleep(index * stagger_s)
        connection = None
        for _ in range(streams_each):
            try:
                if connection is None or not connection.reusable:
                    connection = await asyncio.wait_for(Connection.open(host, port), timeout)
                status, started, recorder = await one_stream(connection, path, headers, body, timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, HttpError, ValueError) as exc:
                count(errors, error_key(exc))
                if connection is not None:
                    connection.close()
                connection = None
                continue
            if status != 200:
                count(errors, f"http {status}")
                continue
            if len(recorder.arrivals) != expected_events:
                count(errors, "wrong event count")
            totals["streams"] += 1
            totals["events"] += len(recorder.arrivals)
            totals["coalesced"] += recorder.coalesced
            if recorder.arrivals:
                ttfe.append(recorder.arrivals[0] - started)
                gaps.extend(b - a for a, b in zip(recorder.arrivals, recorder.arrivals[1:]))
            delays.extend(recorder.delays)
        if connection is not None:
            connection.close()

    await asyncio.gather(*(worker(index) for index in range(concurrency)))
    return {
        "tool": "asyncio", **totals,
        "ttfe_p50_ms": ms(percentile(ttfe, 0.50)), "ttfe_p99_ms": ms(percentile(ttfe, 0.99)),
        "event_delay_p50_ms": ms(percentile(delays, 0.50)), "event_delay_p99_ms": ms(percentile(delays, 0.99)),
        "event_delay_max_ms": ms(max(delays) if delays else None),
        "gap_p50_ms": ms(percentile(gaps, 0.50)), "gap_min_ms": ms(min(gaps) if gaps else None),
        "errors": sum(errors.values()), "error_kinds": errors,
        "samples": {"ttfe_ns": ttfe, "delay_ns": delays},
    }


async def hold_streams(host, port, path, headers, body, streams, expected_events, deadline_s,
                       progress, connect_parallel=200):
    """Opens `streams` concurrent SSE streams and keeps them all open; `progress` is updated live."""
    errors = {}
    progress.update(opened=0, holding=0, completed=0)
    gate = asyncio.Semaphore(connect_parallel)

    async def stream():
        recorder = SseRecorder()
        holding = False

        def sink(data):
            nonlocal holding
            recorder.feed(data)
            if recorder.arrivals and not holding:
                holding = True
                progress["holding"] += 1

        connection = None
        try:
            async with gate:
                connection = await Connection.open(host, port)
                progress["opened"] += 1
            status, _, _ = await connection.request("POST", path, headers, body, sink)
            if status != 200:
                count(errors, f"http {status}")
            elif len(recorder.arrivals) != expected_events:
                count(errors, "wrong event count")
            else:
                progress["completed"] += 1
        except (OSError, asyncio.IncompleteReadError, HttpError, ValueError) as exc:
            count(errors, error_key(exc))
        finally:
            if holding:
                progress["holding"] -= 1
            if connection is not None:
                connection.close()

    tasks = [asyncio.ensure_future(stream()) for _ in range(streams)]
    done, pending = await asyncio.wait(tasks, timeout=deadline_s)
    for task in pending:
        task.cancel()
    if pending:
        errors["timeout"] = len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
    return {"streams": streams, "completed": progress["completed"], "errors": sum(errors.values()),
            "error_kinds": errors}


async def transfer(host, port, path, headers, body, repeat, timeout=120.0):
    """Sequential large calls on one connection: bytes each way, seconds, MB/s."""
    seconds, errors, received = [], {}, 0
    connection = None
    for _ in range(repeat):
        try:
            if connection is None or not connection.reusable:
                connection = await Connection.open(host, port)
            started = time.perf_counter()
            status, _, received = await asyncio.wait_for(connection.request("POST", path, headers, body), timeout)
            seconds.append(time.perf_counter() - started)
            if status != 200:
                count(errors, f"http {status}")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, HttpError, ValueError) as exc:
            count(errors, error_key(exc))
            if connection is not None:
                connection.close()
            connection = None
            if isinstance(exc, asyncio.TimeoutError):
                break
    if connection is not None:
        connection.close()
    moved = max(received, len(body))
    best = min(seconds) if seconds else None
    median = percentile(seconds, 0.5)
    return {
        "calls": len(seconds), "bytes": moved,
        "seconds_p50": None if median is None else round(median, 4),
        "mb_per_s": None if not median else round(moved / median / 1e6, 1),
        "best_mb_per_s": None if not best else round(moved / best / 1e6, 1),
        "errors": sum(errors.values()), "error_kinds": errors,
    }
