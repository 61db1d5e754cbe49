"""This module provides byte-exact framing for Gemini streams: SSE and JSON-array splitting, usage lookup, encoders.

Pure code: bytes in, bytes out; no Flask, no requests. Splitters hand back the upstream bytes untouched, so a
relay can forward exactly what Google sent while still knowing where each GenerateContentResponse ends.
Scanning jumps between interesting bytes with `bytes.find` and compiled regexes and keeps its place across
chunks, so a 50 MB base64 image costs a few C-level passes, never a Python loop per byte nor a rescan.
"""

from __future__ import annotations

import re

import orjson

SSE_TERMINATOR = b"\r\n\r\n"

_CR = ord("\r")
_QUOTE = ord('"')
_BACKSLASH = ord("\\")
_OPEN_BRACE = ord("{")
_OPEN_BRACKET = ord("[")
_CLOSE_BRACKET = ord("]")
_COMMA = ord(",")
_OPENERS = b"{["

# Two line breaks in a row (CRLF, LF or CR each; a CR directly followed by LF is one CRLF) end an SSE event.
_BLANK_LINE = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
_LONGEST_EVENT_END = 4
_STRUCTURAL = re.compile(rb'[{}\[\]"]')
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_NON_WHITESPACE = re.compile(rb"[^ \t\r\n]")
_KEY_SEPARATOR = re.compile(rb"[ \t\r\n]*:[ \t\r\n]*")
_NOT_ROOT_TAIL = re.compile(rb"[^ \t\r\n\]]")
_SMALL_PAYLOAD_BYTES = 64 * 1024


def _bytes_between(buffer: bytearray, start: int, end: int) -> bytes:
    """Copy a slice of a bytearray once (slicing it directly would copy twice: bytearray, then bytes)."""
    with memoryview(buffer) as view:
        return view[start:end].tobytes()


class FramingError(ValueError):
    """Raised when a stream body is not framed the way its content type promises, or a frame is too large."""


class SseSplitter:
    """Splits a server-sent-events body into events, each returned as its exact upstream bytes.

    An event ends at a blank line, i.e. two line breaks in a row, each CRLF, LF or CR. A CR at the very end of
    the buffered bytes is held back, because the next chunk may begin with the LF that makes it a CRLF.
    Extra blank lines after a terminator are not dropped: they open the next event (or stay pending when the
    stream ends, see `pending_is_blank`), so an event may consist of blank lines only; its `data` is b"".
    A stream that ends on a bare-CR terminator leaves that last event pending.
    """

    def __init__(self, max_event_bytes: int | None = None):
        self.max_event_bytes = max_event_bytes
        self._buffer = bytearray()
        self._scan_from = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += chunk
        events = []
        event_start = 0
        position = self._scan_from
        next_cr = buffer.find(b"\r", position)
        next_lf = buffer.find(b"\n", position)
        while next_cr != -1 or next_lf != -1:
            if next_cr == -1 or (next_lf != -1 and next_lf < next_cr):
                line_break = next_lf
            else:
                line_break = next_cr
            blank_line = _BLANK_LINE.match(buffer, line_break)
            if blank_line is None:
                position = line_break + 1
            elif blank_line.end() == len(buffer) and buffer[-1] == _CR:
                break
            else:
                position = blank_line.end()
                self._check_size(position - event_start)
                events.append(_bytes_between(buffer, event_start, position))
                event_start = position
            if next_cr != -1 and next_cr < position:
                next_cr = buffer.find(b"\r", position)
            if next_lf != -1 and next_lf < position:
                next_lf = buffer.find(b"\n", position)
        del buffer[:event_start]
        # A terminator completed by the next chunk starts at most 3 bytes before the current end.
        self._scan_from = max(0, len(buffer) - (_LONGEST_EVENT_END - 1))
        self._check_size(len(buffer))
        return events

    @property
    def pending(self) -> int:
        return len(self._buffer)

    @property
    def pending_is_blank(self) -> bool:
        return _NON_WHITESPACE.search(self._buffer) is None

    @staticmethod
    def data(event: bytes) -> bytes:
        """Return the event's `data:` values joined with LF; comments and other fields are ignored."""
        values = []
        for line in event.splitlines():
            if not line.startswith(b"data"):
                continue
            field, _, value = line.partition(b":")
            if field != b"data":
                continue
            values.append(value[1:] if value.startswith(b" ") else value)
        return b"\n".join(values)

    def _check_size(self, event_bytes: int) -> None:
        if self.max_event_bytes is not None and event_bytes > self.max_event_bytes:
            raise FramingError(f"SSE event exceeds {self.max_event_bytes} bytes")


_EXPECT_ARRAY_START = "array start"
_EXPECT_ELEMENT_OR_END = "element or ]"
_EXPECT_ELEMENT = "element"
_EXPECT_COMMA_OR_END = ", or ]"
_EXPECT_NOTHING = "nothing after ]"


class JsonArraySplitter:
    """Splits Google's streamed JSON array (`[{…}\\n,\\r\\n{…}\\n]`) into forwardable segments.

    A segment runs from the end of the previous one through the closing brace of one element, so the first
    starts with `[` and later ones with the separator. The closing `]` with the whitespace around it is the
    final segment. The opening `[` is held back until the first element (or `]`) is complete. Elements must
    be objects; brackets inside them are counted, not matched (the consumer's JSON parser checks the rest).
    """

    def __init__(self, max_element_bytes: int | None = None):
        self.max_element_bytes = max_element_bytes
        self._buffer = bytearray()
        self._position = 0
        self._expect = _EXPECT_ARRAY_START
        self._depth = 0
        self._in_string = False
        self._element_start = 0
        self._elements = 0

    @property
    def started(self) -> bool:
        return self._expect != _EXPECT_ARRAY_START

    @property
    def elements(self) -> int:
        return self._elements

    @property
    def finished(self) -> bool:
        return self._expect == _EXPECT_NOTHING

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += chunk
        segments = []
        segment_start = 0
        while True:
            if self._depth:
                self._position, self._depth, self._in_string = _scan_container(
                    buffer, self._position, self._depth, self._in_string
                )
                if self._depth:
                    break
                self._check_size(self._position - self._element_start)
                segments.append(_bytes_between(buffer, segment_start, self._position))
                segment_start = self._position
                self._elements += 1
                self._expect = _EXPECT_COMMA_OR_END
                continue
            token = _NON_WHITESPACE.search(buffer, self._position)
            if token is None:
                self._position = len(buffer)
                break
            self._position = token.end()
            self._take_token(buffer[token.start()], token.start())
        if self.finished and segment_start < len(buffer):
            segments.append(_bytes_between(buffer, segment_start, len(buffer)))
            segment_start = len(buffer)
        del buffer[:segment_start]
        self._position -= segment_start
        self._element_start -= segment_start
        if self._depth:
            self._check_size(len(buffer) - self._element_start)
        return segments

    def _take_token(self, byte: int, index: int) -> None:
        expect = self._expect
        if expect == _EXPECT_ARRAY_START and byte == _OPEN_BRACKET:
            self._expect = _EXPECT_ELEMENT_OR_END
        elif byte == _OPEN_BRACE and expect in (_EXPECT_ELEMENT, _EXPECT_ELEMENT_OR_END):
            self._depth = 1
            self._element_start = index
        elif byte == _COMMA and expect == _EXPECT_COMMA_OR_END:
            self._expect = _EXPECT_ELEMENT
        elif byte == _CLOSE_BRACKET and expect in (_EXPECT_ELEMENT_OR_END, _EXPECT_COMMA_OR_END):
            self._expect = _EXPECT_NOTHING
        else:
            raise FramingError(f"JSON array stream: expected {expect}, got {chr(byte)!r}")

    def _check_size(self, element_bytes: int) -> None:
        if self.max_element_bytes is not None and element_bytes > self.max_element_bytes:
            raise FramingError(f"JSON array element exceeds {self.max_element_bytes} bytes")

    @staticmethod
    def element(segment: bytes) -> bytes:
        """Return the element's JSON text in a segment; b"" for the final `]` segment."""
        return segment.strip(b" \t\r\n[],")


def _skip_string(buffer: bytes | bytearray, position: int) -> tuple[int, bool]:
    """Scan string contents from position; return (index after the closing quote, True) or (resume index, False)."""
    quote = buffer.find(b'"', position)
    if buffer.find(b"\\", position, len(buffer) if quote == -1 else quote) == -1:
        return (len(buffer), False) if quote == -1 else (quote + 1, True)
    body_end = _STRING_BODY.match(buffer, position).end()
    if body_end < len(buffer) and buffer[body_end] == _QUOTE:
        return body_end + 1, True
    # Either the bytes ran out, or they end in a backslash whose escaped byte has not arrived yet.
    return body_end, False


def _scan_container(
    buffer: bytes | bytearray, position: int, depth: int, in_string: bool
) -> tuple[int, int, bool]:
    """Scan from position, depth containers deep, until depth reaches 0 or the bytes run out."""
    while True:
        if in_string:
            position, closed = _skip_string(buffer, position)
            if not closed:
                return position, depth, True
            in_string = False
        token = _STRUCTURAL.search(buffer, position)
        if token is None:
            return len(buffer), depth, False
        position = token.end()
        byte = buffer[token.start()]
        if byte == _QUOTE:
            in_string = True
        elif byte in _OPENERS:
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return position, 0, False


def _quote_is_escaped(payload: bytes, quote_at: int, cut_at_start: bool) -> bool:
    run_start = quote_at
    while run_start > 0 and payload[run_start - 1] == _BACKSLASH:
        run_start -= 1
    if cut_at_start and run_start == 0:
        return True  # a backslash may have been cut off: the quote cannot be trusted
    return (quote_at - run_start) % 2 == 1


def _closes_root(payload: bytes, position: int) -> bool:
    """Tell whether the object enclosing position is the outermost one (only `]` or whitespace after it)."""
    position, depth, _ = _scan_container(payload, position, 1, False)
    return depth == 0 and _NOT_ROOT_TAIL.search(payload, position) is None


def _last_top_level_object(payload: bytes, key: bytes, cut_at_start: bool) -> bytes | None:
    """Find the raw object value of the last top-level `key` by searching backwards, without parsing the whole."""
    quoted_key = b'"' + key + b'"'
    search_end = len(payload)
    while (key_at := payload.rfind(quoted_key, 0, search_end)) != -1:
        search_end = key_at + len(quoted_key) - 1
        if _quote_is_escaped(payload, key_at, cut_at_start):
            continue
        separator = _KEY_SEPARATOR.match(payload, key_at + len(quoted_key))
        if separator is None or separator.end() >= len(payload) or payload[separator.end()] != _OPEN_BRACE:
            continue
        value_at = separator.end()
        value_end, depth, _ = _scan_container(payload, value_at + 1, 1, False)
        if depth != 0:
            return None
        if _closes_root(payload, value_end):
            return payload[value_at:value_end]
    return None


def _top_level_object(payload: bytes, key: str, cut_at_start: bool) -> dict | None:
    if not cut_at_start and len(payload) < _SMALL_PAYLOAD_BYTES:
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        value = document.get(key) if isinstance(document, dict) else None
        return value if isinstance(value, dict) else None
    raw_value = _last_top_level_object(payload, key.encode(), cut_at_start)
    if raw_value is None:
        return None
    try:
        value = orjson.loads(raw_value)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def find_usage(payload: bytes) -> dict | None:
    """Return the top-level `usageMetadata` of one GenerateContentResponse JSON, or None."""
    return _top_level_object(payload, "usageMetadata", cut_at_start=False)


def tail_usage(tail: bytes) -> dict | None:
    """Return the top-level `usageMetadata` found in the last bytes of a body, or None if it is cut off."""
    return _top_level_object(tail, "usageMetadata", cut_at_start=True)


def sse_event(payload: bytes) -> bytes:
    return b"data: " + payload + SSE_TERMINATOR


def json_array_error_tail(splitter: JsonArraySplitter, error_json: bytes) -> bytes:
    """Return bytes that close what `splitter` emitted so far as a valid array whose last element is the error.

    Nothing has been emitted before the first element completes (the splitter holds the opening `[` back
    until then), so in that state the tail opens the array itself.
    """
    if splitter.finished:
        return b""
    if splitter.elements == 0:
        return b"[" + error_json + b"\n]"
    return b"\n,\r\n" + error_json + b"\n]"
