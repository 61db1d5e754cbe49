"""This module provides encoders: how a relayed answer is written to the caller, one kind per front door.

Forwarding always reads Google's units (SSE events, JSON-array elements, unary bodies) and takes usage
from them; the call's encoder decides what the caller gets for each unit, how an error is rendered (before
the first byte and in-band after it) and how a stream ends.  :data:`GEMINI` writes Google's bytes exactly
as received; the OpenAI front door's encoders translate.
"""

import orjson

from relay.errors import JSON_CONTENT_TYPE
from relay.gemini import framing


class GeminiEncoder:
    """Google's own wire: units, bodies and Google-shaped errors pass as received."""

    door = "gemini"
    translates_units = False  # relay_stream yields the upstream's units untouched, at no cost per event

    def unit(self, call, payload):
        """The bytes the caller gets for one stream unit's JSON ``payload`` (only when translates_units); it also
        sets ``call.usage`` to the unit's top-level ``usageMetadata`` when it has one."""
        raise NotImplementedError

    def stream_error(self, call, error, splitter):
        """Bytes that end a started stream with ``error`` (a RelayError), in the stream's own framing."""
        error_json = orjson.dumps(error.to_dict())
        if call.stream == "sse":
            return framing.sse_event(error_json)
        return framing.json_array_error_tail(splitter, error_json)

    def stream_end(self, call):
        """Bytes after the last unit of a stream that ended cleanly."""
        return b""

    def unary(self, call, body):
        """The caller's body for a complete upstream answer ``body`` (2xx)."""
        return body

    def upstream_error(self, call, status, headers, body):
        """(status, headers, body) for a Google-shaped upstream error answer: relayed as it came."""
        return status, headers, body

    def render_error(self, call, error):
        """(status, content type, body) for a RelayError raised before anything was sent."""
        body = error.to_json()
        content_type = JSON_CONTENT_TYPE
        if call is not None and call.stream == "array":
            body = b"[" + body + b"]"
        elif call is not None and call.stream == "sse":
            content_type = "text/event-stream"  # Google keeps it on pre-stream errors; the body is plain JSON
        return error.code, content_type, body


GEMINI = GeminiEncoder()
