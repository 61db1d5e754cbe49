"""This module provides the bodies relay streams back: upstream streams event by event, large bodies chunk by chunk.

After the first byte nothing is retried: an upstream failure (reset, truncation, idle timeout, garbage)
ends an SSE stream with one ``data: {"error": …}`` event and a JSON-array stream with a last error
element, so SDKs raise instead of seeing a clean end.  A caller that hangs up cuts the upstream at once.
"""

import itertools
import time
from collections import deque


from relay.pipeline import clientwatch
from relay.gemini import framing
from relay.gemini.methods import accounts_usage
from relay.observability import metrics
from relay.errors import DeadlineExceeded, Unavailable
from relay.upstream.http import READ_ERRORS, abort, iter_body

USAGE_TAIL = 256 * 1024
# One SSE event or array element may be this large (image events are 1-3 MB); beyond it the stream ends
# with an in-band error instead of growing a worker without bound.
MAX_STREAM_UNIT = 64 * 1024 * 1024


class StreamBody:
    """The WSGI iterable of a relayed stream: the server iterates the generator itself, and closing it runs
    the completion callbacks (access log, usage).

    Werkzeug's own wrapping (a closing iterator around an encoding generator) would add two generator
    frames between the server and every chunk — several KB of saved stack per open stream, which at
    thousands of streams is most of a worker's memory.
    """

    __slots__ = ("generator", "callbacks")

    def __init__(self, generator):
        self.generator = generator
        self.callbacks = []

    def __iter__(self):
        return self.generator

    def call_on_close(self, callback):
        self.callbacks.append(callback)

    def close(self):
        try:
            self.generator.close()
        finally:
            callbacks, self.callbacks = self.callbacks, []
            for callback in callbacks:
                callback()


def relay_stream(call, upstream):
    """Forward an upstream stream unit by unit (SSE event or JSON-array element), ending in-band on failure."""
    splitter = (framing.SseSplitter(MAX_STREAM_UNIT) if call.stream == "sse"
                else framing.JsonArraySplitter(MAX_STREAM_UNIT))
    payload_of = framing.SseSplitter.data if call.stream == "sse" else framing.JsonArraySplitter.element
    encoder = call.encoder
    translate = encoder.unit if encoder.translates_units else None
    call.status = upstream.status_code
    failure = None
    metrics.OPEN_STREAMS.inc()

    stop_watching = clientwatch.watch(call.client_socket, lambda: _client_gone(call, upstream))
    with _EndAccounted(call):
        try:
            for chunk in iter_body(upstream):
                for unit in splitter.feed(chunk):
                    if call.first_byte_ms is None:
                        call.first_byte_ms = (time.perf_counter() - call.started) * 1000
                    if translate is None:
                        usage = _unit_usage(unit, payload_of)
                        if usage is not None:
                            call.usage = usage
                        yield unit
                    else:  # the encoder parses the unit anyway, and takes its usage from what it parsed
                        translated = translate(call, payload_of(unit))
                        if translated:
                            yield translated
            clean = splitter.finished if call.stream == "array" else (splitter.pending == 0 or splitter.pending_is_blank)
            if not clean and call.aborted != "client":
                failure = Unavailable("The upstream stream ended before the response was complete.")
        except framing.FramingError:
            failure = Unavailable("The upstream sent a malformed stream.")
        except READ_ERRORS as exc:
            failure = None if call.aborted == "client" else _read_failure(exc)
        finally:
            stop_watching()
            upstream.close()
            metrics.OPEN_STREAMS.dec()
        if failure is not None:
            call.aborted = "upstream"
            yield encoder.stream_error(call, failure, splitter)
        elif call.aborted is None:
            ending = encoder.stream_end(call)
            if ending:
                yield ending


def relay_unary_chunks(call, upstream, head=()):
    """Forward a large unary body chunk by chunk (after ``head``, chunks of it already read), keeping only its
    tail to read usageMetadata from."""
    call.status = upstream.status_code
    tail, tail_size = deque(), 0
    stop_watching = clientwatch.watch(call.client_socket, lambda: _client_gone(call, upstream))
    with _EndAccounted(call):
        try:
            for chunk in itertools.chain(head, iter_body(upstream)):
                if call.first_byte_ms is None:
                    call.first_byte_ms = (time.perf_counter() - call.started) * 1000
                tail.append(chunk)
                tail_size += len(chunk)
                while tail_size - len(tail[0]) >= USAGE_TAIL:
                    tail_size -= len(tail.popleft())
                yield chunk
            if call.aborted != "client" and accounts_usage(call.method):
                call.usage = framing.tail_usage(b"".join(tail)[-USAGE_TAIL:])
        except READ_ERRORS:
            # Headers and part of the body are out: all we can do is end the response early.
            call.aborted = call.aborted or "upstream"
        finally:
            stop_watching()
            upstream.close()


class _EndAccounted:
    """Notes in the call how a relayed body ended when it did not finish by itself."""

    __slots__ = ("call",)

    def __init__(self, call):
        self.call = call

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is GeneratorExit:
            self.call.aborted = self.call.aborted or "client"  # the server closed us: the caller is gone
        elif kind is not None and not issubclass(kind, Exception):
            self.call.aborted = self.call.aborted or "shutdown"  # GreenletExit: the worker is stopping
        return False


def _client_gone(call, upstream):
    """The caller hung up mid-body (called from the event loop): cut the upstream, send nothing more."""
    call.aborted = "client"
    abort(upstream)


def _unit_usage(unit, payload_of):
    if len(unit) <= 65536:
        payload = payload_of(unit)
        return framing.find_usage(payload) if payload else None
    return framing.tail_usage(unit[-USAGE_TAIL:])


def _read_failure(exc):
    name = type(exc).__name__.lower()
    if "timeout" in name:
        return DeadlineExceeded("The upstream stopped sending data (idle timeout).")
    return Unavailable("The upstream connection was interrupted before the response was complete.")
