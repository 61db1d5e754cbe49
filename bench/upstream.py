"""This module provides a fast fake Gemini upstream for benchmarks: raw asyncio, never the bottleneck.

It answers any path ending in `models/{model}:generateContent` or `:streamGenerateContent`
(so `/v1beta/...`, `/gemini/v1beta/...` all work) with bytes modelled on real recordings
(tests/fixtures/gemini/generate_text and stream_sse):

* unary: a static ~1 KB pretty-printed GenerateContentResponse (2-space indent, trailing newline);
* model names containing `image`: a ~20 MB response whose part is an `inlineData` PNG in base64;
* streams: `data: {...}\\r\\n\\r\\n` events, one HTTP chunk per event, N events with a gap between
  them. N and the gap come from the model name (`...-e20-g10` = 20 events, 10 ms apart) or from
  the command line defaults. Each event's text carries `@<CLOCK_MONOTONIC ns>` taken when it was
  written, so a client on the same machine can measure every event's one-way delay.

Request bodies of any size (Content-Length or chunked) are counted and discarded, never held.
Connections are kept alive. Usage: `python -m bench.upstream --port 0` prints `PORT <n>` when ready.
"""

import argparse
import asyncio
import base64
import json
import re
import resource
import sys
import time

MODEL_RE = re.compile(rb"models/([^/:?\s]+):(generateContent|streamGenerateContent)")
STREAM_PARAMS_RE = re.compile(r"-e(\d+)-g(\d+)$")
WRITE_SLICE = 1 << 20

COMMON_HEADERS = (
    b"Vary: Origin\r\nVary: X-Origin\r\nVary: Referer\r\n"
    b"Server: scaffolding on HTTPServer2\r\nX-XSS-Protection: 0\r\n"
    b"X-Frame-Options: SAMEORIGIN\r\nX-Content-Type-Options: nosniff\r\n"
)


def pretty(document):
    """Google's unary style: 2-space indent, `": "` separators, trailing newline."""
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


def unary_body(model_version="gemini-2.5-flash", target_size=1024):
    """A ~1 KB response shaped like generate_text/js-genai__...system_instruction.http.json."""
    document = {
        "candidates": [{
            "content": {"parts": [{"text": ""}], "role": "model"},
            "finishReason": "STOP",
            "avgLogprobs": -0.23679269058629870,
        }],
        "usageMetadata": {
            "promptTokenCount": 7, "candidatesTokenCount": 96, "totalTokenCount": 103,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 7}],
            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 96}],
        },
        "modelVersion": model_version,
        "responseId": "7ayBaPqVLNzzgLUPhZ_uoQU",
    }
    filler = "The lighthouse keeper watched the storm roll in over the grey water. "
    padding = target_size - len(pretty(document))
    document["candidates"][0]["content"]["parts"][0]["text"] = (filler * 40)[:max(padding, 0)]
    return pretty(document)


def image_body(size):
    """A ~`size`-byte response whose only large field is one base64 inlineData image."""
    raw_len = size * 3 // 4
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * (raw_len // 256 + 1)
    document = {
        "candidates": [{
            "content": {"parts": [
                {"text": "Here is the image you asked for."},
                {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png[:raw_len]).decode()}},
            ], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302},
        "modelVersion": "gemini-2.5-flash-image",
        "responseId": "F7KHaK6WCZaCsbQP-6yPQQ",
    }
    return pretty(document)


def sse_event(index, last, model_version):
    """One event in the exact recorded style: `": "` after keys, no space after commas."""
    finish = ',"finishReason": "STOP"' if last else ""
    text = f" word{index} @{time.monotonic_ns()}"
    return (
        'data: {"candidates": [{"content": {"parts": [{"text": "' + text + '"}],"role": "model"}'
        + finish + ',"index": 0}],"usageMetadata": {"promptTokenCount": 12,"candidatesTokenCount": '
        + str(index + 1) + ',"totalTokenCount": ' + str(index + 13)
        + ',"promptTokensDetails": [{"modality": "TEXT","tokenCount": 12}]},"modelVersion": "'
        + model_version + '","responseId": "F7KHaK6WCZaCsbQP-6yPQQ"}\r\n\r\n'
    ).encode()


def head(content_type, length=None):
    framing = b"Content-Length: %d\r\n" % length if length is not None else b"Transfer-Encoding: chunked\r\n"
    extra = b"Content-Disposition: attachment\r\n" if content_type == b"text/event-stream" else b""
    return b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n" + extra + COMMON_HEADERS + framing + b"\r\n"


def not_found():
    body = pretty({"error": {"code": 404, "message": "fake upstream: unknown path", "status": "NOT_FOUND"}})
    return (b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json; charset=UTF-8\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


class Responses:
    """Bodies prepared once at start-up, shared by every connection."""

    def __init__(self, args):
        self.unary = unary_body()
        self.unary_response = head(b"application/json; charset=UTF-8", len(self.unary)) + self.unary
        image = image_body(args.image_bytes)
        self.image_response = head(b"application/json; charset=UTF-8", len(image)) + image
        self.events = args.events
        self.gap_s = args.gap_ms / 1000.0


class UpstreamProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: parse head, count and drop the body, answer, repeat."""

    def __init__(self, responses, stats):
        self.responses = responses
        self.stats = stats
        self.buffer = bytearray()
        self.transport = None
        self.request = None
        self.body_left = 0
        self.chunked = None
        self.busy = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.task = None

    def connection_made(self, transport):
        self.transport = transport
        self.stats["connections"] += 1

    def connection_lost(self, exc):
        self.stats["connections"] -= 1
        self.writable.set()
        if self.task is not None:
            self.task.cancel()

    def pause_writing(self):
        self.writable.clear()

    def resume_writing(self):
        self.writable.set()

    def data_received(self, data):
        self.buffer += data
        self.advance()

    def advance(self):
        while not self.busy:
            if self.request is None and not self.read_head():
                return
            if not self.skip_body():
                return
            request, self.request = self.request, None
            self.respond(request)

    def read_head(self):
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        del self.buffer[:end + 4]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        self.request = lines[0]
        if headers.get(b"expect", b"").lower() == b"100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            self.chunked, self.body_left = "size", 0
        else:
            self.chunked, self.body_left = None, int(headers.get(b"content-length", b"0"))
        return True

    def skip_body(self):
        """Discard the body as it arrives; True once all of it is gone."""
        if self.chunked is None:
            taken = min(self.body_left, len(self.buffer))
            del self.buffer[:taken]
            self.body_left -= taken
            self.stats["body_bytes"] += taken
            return self.body_left == 0
        while True:
            if self.body_left:
                taken = min(self.body_left, len(self.buffer))
                del self.buffer[:taken]
                self.body_left -= taken
                self.stats["body_bytes"] += taken
                if self.body_left:
                    return False
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return False
            line = bytes(self.buffer[:end])
            del self.buffer[:end + 2]
            if self.chunked == "trailer":
                if not line:
                    self.chunked = None
                    return True
                continue
            if self.chunked == "data-end":
                self.chunked = "size"
                continue
            size = int(line.split(b";")[0], 16)
            if size == 0:
                self.chunked = "trailer"
            else:
                self.body_left, self.chunked = size, "data-end"

    def respond(self, request_line):
        self.stats["requests"] += 1
        match = MODEL_RE.search(request_line)
        if match is None:
            self.transport.write(not_found())
            return
        model = match.group(1).decode()
        if match.group(2) == b"streamGenerateContent":
            events, gap_s = self.responses.events, self.responses.gap_s
            params = STREAM_PARAMS_RE.search(model)
            if params:
                events, gap_s = int(params.group(1)), int(params.group(2)) / 1000.0
            self.start(self.stream(model, events, gap_s))
        elif "image" in model:
            self.start(self.write_large(self.responses.image_response))
        else:
            self.transport.write(self.responses.unary_response)

    def start(self, coroutine):
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(coroutine)
        self.task.add_done_callback(self.finished)

    def finished(self, task):
        self.task = None
        self.busy = False
        if not task.cancelled() and not self.transport.is_closing():
            self.advance()

    async def write_large(self, payload):
        view = memoryview(payload)
        for offset in range(0, len(view), WRITE_SLICE):
            await self.writable.wait()
            if self.transport.is_closing():
                return
            self.transport.write(view[offset:offset + WRITE_SLICE])

    async def stream(self, model, events, gap_s):
        self.stats["streams"] += 1
        self.transport.write(head(b"text/event-stream"))
        try:
            for index in range(events):
                if index:
                    await asyncio.sleep(gap_s)
                await self.writable.wait()
                if self.transport.is_closing():
                    return
                event = sse_event(index, index == events - 1, model)
                self.transport.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.transport.write(b"0\r\n\r\n")
        finally:
            self.stats["streams"] -= 1


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def serve(args):
    responses = Responses(args)
    stats = {"connections": 0, "requests": 0, "streams": 0, "body_bytes": 0}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(responses, stats), args.host, args.port, backlog=4096, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed as PORT <n>)")
    parser.add_argument("--events", type=int, default=20, help="default events per stream")
    parser.add_argument("--gap-ms", type=int, default=20, help="default gap between events")
    parser.add_argument("--image-bytes", type=int, default=20 * 1024 * 1024, help="size of the image response")
    args = parser.parse_args(argv)
    raise_fd_limit()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
