"""Tests for relay.gemini.framing: splitting recorded Google streams at every byte boundary, and usage lookup."""

import base64
import random

import orjson
import pytest

from relay.gemini.framing import (
    SSE_TERMINATOR,
    FramingError,
    JsonArraySplitter,
    SseSplitter,
    find_usage,
    json_array_error_tail,
    sse_event,
    tail_usage,
)
from tests.support import FIXTURES

IMAGE_STREAM = (
    "image_output/js-genai__Client_Tests_generateContentStream_ML_Dev_"
    "should_stream_generate_content_with_image_output.http.0.sse.txt"
)
SMALL_SSE_BODIES = [
    "stream_sse/pydantic-ai__test_google_model_stream.0.sse.txt",
    "thinking/pydantic-ai__test_google_streaming_tool_call_thought_signature.0.sse.txt",
    "code_execution/pydantic-ai__test_code_execution_stream.0.sse.txt",
    "stream_sse/vercel-ai__google-usage-raw-live.chunks.txt",  # one verbatim event framed with "\n\n"
]
ALL_SSE_BODIES = sorted(str(path.relative_to(FIXTURES)) for path in FIXTURES.glob("*/*.sse.txt"))
SMALL_ARRAY_BODIES = [
    "stream_json_array/llm-gemini__test_parts_text.0.jsonarray.txt",
    "stream_json_array/llm-gemini__test_prompt_with_pydantic_schema.0.jsonarray.txt",
    "function_calling/llm-gemini__test_tools.1.jsonarray.txt",
]
ALL_ARRAY_BODIES = sorted(str(path.relative_to(FIXTURES)) for path in FIXTURES.glob("*/*.jsonarray.txt"))


def read_fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def feed_chunks(splitter, chunks) -> list[bytes]:
    outputs = []
    for chunk in chunks:
        outputs.extend(splitter.feed(chunk))
    return outputs


def random_chunks(body: bytes, seed: int, largest: int) -> list[bytes]:
    chooser = random.Random(seed)
    chunks, start = [], 0
    while start < len(body):
        size = chooser.randint(1, largest)
        chunks.append(body[start : start + size])
        start += size
    return chunks


def fixed_chunks(body: bytes, size: int) -> list[bytes]:
    return [body[start : start + size] for start in range(0, len(body), size)]


def naive_sse_events(body: bytes) -> tuple[list[bytes], bytes]:
    """Reference splitter, one byte at a time: an event ends where a line break directly follows another."""
    events, event_start, index, previous_break_end = [], 0, 0, None
    while index < len(body):
        byte = body[index : index + 1]
        if byte not in (b"\r", b"\n"):
            previous_break_end = None
            index += 1
            continue
        if byte == b"\r" and index + 1 == len(body):
            break  # a final CR may still become CRLF
        length = 2 if body[index : index + 2] == b"\r\n" else 1
        if previous_break_end == index:
            events.append(body[event_start : index + length])
            event_start = index + length
            previous_break_end = None
        else:
            previous_break_end = index + length
        index += length
    return events, body[event_start:]


def naive_array_segments(body: bytes) -> list[bytes]:
    """Reference splitter, one byte at a time, for a JSON array of objects."""
    segments, segment_start, depth, in_string, escaped = [], 0, 0, False, False
    for index, byte in enumerate(body):
        character = chr(byte)
        if in_string:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                in_string = False
        elif character == '"':
            in_string = True
        elif character == "{":
            depth += 1
        elif character == "}":
            depth -= 1
            if depth == 0:
                segments.append(body[segment_start : index + 1])
                segment_start = index + 1
    segments.append(body[segment_start:])
    return segments


def google_sse_events(body: bytes) -> list[bytes]:
    return [part + SSE_TERMINATOR for part in body.split(SSE_TERMINATOR)[:-1]]


# ---------------------------------------------------------------------------------------------- SSE


@pytest.mark.parametrize("name", SMALL_SSE_BODIES)
def test_sse_recorded_body_split_at_every_byte(name):
    body = read_fixture(name)
    expected, rest = naive_sse_events(body)
    assert rest == b"" and expected
    for split_at in range(len(body) + 1):
        splitter = SseSplitter()
        assert feed_chunks(splitter, [body[:split_at], body[split_at:]]) == expected, split_at
        assert splitter.pending == 0


@pytest.mark.parametrize("name", ALL_SSE_BODIES)
def test_sse_recorded_body_random_chunkings(name):
    body = read_fixture(name)
    expected = google_sse_events(body)
    assert b"".join(expected) == body
    largest = 65536 if len(body) > 100_000 else 64
    for seed in range(3 if len(body) > 100_000 else 20):
        splitter = SseSplitter()
        assert feed_chunks(splitter, random_chunks(body, seed, largest)) == expected
        assert splitter.pending == 0
    for event in expected:
        assert orjson.loads(SseSplitter.data(event))["usageMetadata"]


def test_sse_one_byte_chunks():
    body = read_fixture(SMALL_SSE_BODIES[0])
    splitter = SseSplitter()
    assert feed_chunks(splitter, [body[index : index + 1] for index in range(len(body))]) == google_sse_events(body)


@pytest.mark.parametrize(
    "body",
    [
        b"data: a\r\n\r\ndata: b\r\n\r\n",
        b"data: a\n\ndata: b\n\n",
        b"data: a\r\rdata: b\r\r",
        b"data: a\n\r\ndata: b\r\n\ndata: c\r\r\ndata: d\n\rdata: e\r\n\r\n",
        b": comment\r\ndata: a\r\ndata: b\r\n\r\n\r\n\r\ndata: c\n\n\n",
    ],
)
def test_sse_synthetic_line_breaks_split_in_every_pair_of_places(body):
    expected, rest = naive_sse_events(body)
    assert expected
    for first in range(len(body) + 1):
        for second in range(first, len(body) + 1):
            splitter = SseSplitter()
            events = feed_chunks(splitter, [body[:first], body[first:second], body[second:]])
            assert events == expected, (first, second)
            assert splitter.pending == len(rest)


def test_sse_crlf_terminator_is_not_cut_before_its_last_byte():
    splitter = SseSplitter()
    assert splitter.feed(b"data: a\r\n\r") == []
    assert splitter.pending == len(b"data: a\r\n\r")
    assert splitter.feed(b"\n") == [b"data: a\r\n\r\n"]
    assert splitter.feed(b"data: b\r\n\r\n") == [b"data: b\r\n\r\n"]


def test_sse_bare_cr_terminator_completes_on_the_next_byte():
    splitter = SseSplitter()
    assert splitter.feed(b"data: a\r\r") == []
    assert splitter.feed(b"data: b\r\r\n") == [b"data: a\r\r", b"data: b\r\r\n"]


def test_sse_pending_and_blank_leftovers():
    splitter = SseSplitter()
    assert splitter.feed(b"data: a\r\n\r\n\r\n") == [b"data: a\r\n\r\n"]
    assert splitter.pending == 2 and splitter.pending_is_blank
    assert splitter.feed(b'data: {"x"') == []
    assert splitter.pending == 12 and not splitter.pending_is_blank
    assert splitter.feed(b"}\r\n\r\n") == [b'\r\ndata: {"x"}\r\n\r\n']
    assert splitter.pending == 0 and splitter.pending_is_blank


def test_sse_max_event_bytes():
    splitter = SseSplitter(max_event_bytes=16)
    assert splitter.feed(b"data: 12345678\n\n") == [b"data: 12345678\n\n"]
    with pytest.raises(FramingError):
        splitter.feed(b"data: 1234567890a")
    with pytest.raises(FramingError):
        SseSplitter(max_event_bytes=16).feed(b"data: 1234567890abcdef\n\n")


@pytest.mark.parametrize(
    ("event", "data"),
    [
        (b'data: {"a": 1}\r\n\r\n', b'{"a": 1}'),
        (b"data:no-space\n\n", b"no-space"),
        (b"data:  two spaces\n\n", b" two spaces"),
        (b"data: first\r\ndata: second\r\n\r\n", b"first\nsecond"),
        (b": keep-alive\nevent: message\nid: 7\ndata: x\nretry: 5\n\n", b"x"),
        (b"data\ndata: y\r\r", b"\ny"),
        (b"dataset: no\n\n", b""),
        (b": only a comment\n\n", b""),
        (b"\r\n\r\n", b""),
    ],
)
def test_sse_data(event, data):
    assert SseSplitter.data(event) == data


def test_sse_event_encoder_round_trips():
    payload = b'{"candidates": []}'
    encoded = sse_event(payload)
    assert encoded == b"data: " + payload + b"\r\n\r\n" and encoded.endswith(SSE_TERMINATOR)
    assert [SseSplitter.data(event) for event in SseSplitter().feed(encoded * 2)] == [payload, payload]


def big_response(base64_bytes: int, usage: bytes = b'{"promptTokenCount": 3}', pretty: bool = False) -> bytes:
    image = base64.b64encode(random.Random(base64_bytes).randbytes(base64_bytes * 3 // 4))
    separator = b"\n  " if pretty else b""
    return (
        b'{' + separator + b'"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "'
        + image + b'"}}],"role": "model"},"index": 0}],' + separator + b'"usageMetadata": ' + usage
        + b',' + separator + b'"modelVersion": "gemini-big","responseId": "r1"' + (b"\n" if pretty else b"") + b"}"
    )


def test_sse_three_megabyte_event_in_16k_chunks():
    payload = big_response(3 << 20)
    body = sse_event(payload) + sse_event(b"{}")
    splitter = SseSplitter()
    events = feed_chunks(splitter, fixed_chunks(body, 16384))
    assert [SseSplitter.data(event) for event in events] == [payload, b"{}"]
    assert find_usage(SseSplitter.data(events[0])) == {"promptTokenCount": 3}


def test_sse_fifty_megabyte_event_in_64k_chunks_completes():
    body = b"data: " + b"A" * (50 << 20) + b"\r\n\r\n"
    events = feed_chunks(SseSplitter(), fixed_chunks(body, 65536))
    assert len(events) == 1 and len(events[0]) == len(body)


# ---------------------------------------------------------------------------------------------- JSON array


def check_array_segments(body: bytes, segments: list[bytes]) -> None:
    assert b"".join(segments) == body
    assert segments[0].startswith(b"[")
    assert JsonArraySplitter.element(segments[-1]) == b""
    elements = [orjson.loads(JsonArraySplitter.element(segment)) for segment in segments[:-1]]
    assert elements == orjson.loads(body)


@pytest.mark.parametrize("name", SMALL_ARRAY_BODIES)
def test_json_array_recorded_body_split_at_every_byte(name):
    body = read_fixture(name)
    expected = naive_array_segments(body)
    check_array_segments(body, expected)
    for split_at in range(len(body) + 1):
        splitter = JsonArraySplitter()
        assert feed_chunks(splitter, [body[:split_at], body[split_at:]]) == expected, split_at
        assert splitter.finished and splitter.pending == 0


@pytest.mark.parametrize("name", ALL_ARRAY_BODIES)
def test_json_array_recorded_body_random_chunkings(name):
    body = read_fixture(name)
    expected = naive_array_segments(body)
    for seed in range(20):
        splitter = JsonArraySplitter()
        assert feed_chunks(splitter, random_chunks(body, seed, 64)) == expected
        assert splitter.elements == len(expected) - 1
    check_array_segments(body, expected)
    assert expected[-1] == b"\n]"
    assert all(segment.startswith(b"\n,\r\n{") for segment in expected[1:-1])


def test_json_array_one_byte_chunks():
    body = read_fixture(SMALL_ARRAY_BODIES[0])
    splitter = JsonArraySplitter()
    segments = feed_chunks(splitter, [body[index : index + 1] for index in range(len(body))])
    assert segments == naive_array_segments(body)


TRICKY_TEXTS = [
    'braces { } [ ] and commas , , inside a string',
    'escaped "quotes" and a final backslash \\',
    "\\\\ two backslashes then a quote-looking \\\" pair",
    "line separators \u2028 and \u2029 raw, emoji \U0001F600, accents éü",
    "unicode escapes arrive raw from orjson: \u0000\u001f",
    "}\n,\r\n{ looks like a separator",
]


def tricky_body() -> bytes:
    elements = [orjson.dumps({"candidates": [{"content": {"parts": [{"text": text}]}}]}) for text in TRICKY_TEXTS]
    handwritten = b'{"t": "\\u0022\\\\", "u": "\\\\\\"}", "nested": [[{"a": "]"}], {}]}'
    return b"[" + b"\n,\r\n".join(elements + [handwritten]) + b"\n]"


def test_json_array_tricky_strings_split_at_every_byte():
    body = tricky_body()
    assert "\u2028".encode() in body and "\U0001F600".encode() in body
    expected = naive_array_segments(body)
    assert len(expected) == len(TRICKY_TEXTS) + 2
    check_array_segments(body, expected)
    for split_at in range(len(body) + 1):
        assert feed_chunks(JsonArraySplitter(), [body[:split_at], body[split_at:]]) == expected, split_at
    for seed in range(30):
        assert feed_chunks(JsonArraySplitter(), random_chunks(body, seed, 7)) == expected


def test_json_array_backslash_at_chunk_end():
    splitter = JsonArraySplitter()
    assert splitter.feed(b'[{"text": "a\\') == []
    assert splitter.feed(b'"') == []  # the escaped quote does not close the string
    assert splitter.feed(b'}') == []
    assert splitter.feed(b'"}') == [b'[{"text": "a\\"}"}']
    assert splitter.feed(b"]") == [b"]"]


def test_json_array_states_and_whitespace_after_the_end():
    splitter = JsonArraySplitter()
    assert not splitter.started and splitter.feed(b"  \n") == []
    assert splitter.feed(b"[") == [] and splitter.started and splitter.pending == 4
    assert splitter.feed(b'{"a": {"b": 1}}\n,\r\n{"c"') == [b'  \n[{"a": {"b": 1}}']
    assert splitter.elements == 1 and splitter.pending == len(b'\n,\r\n{"c"')
    assert splitter.feed(b": 2}\n]\n") == [b'\n,\r\n{"c": 2}', b"\n]\n"]
    assert splitter.finished and splitter.elements == 2 and splitter.pending == 0
    assert splitter.feed(b"\r\n") == [b"\r\n"]


def test_json_array_empty_array():
    splitter = JsonArraySplitter()
    assert splitter.feed(b"[ ]") == [b"[ ]"]
    assert splitter.finished and splitter.elements == 0


@pytest.mark.parametrize(
    "body",
    [b'{"error": {"code": 400}}', b"x", b"[1]", b'["a"]', b"[{}}", b"[{},,{}]", b"[,{}]", b"[{}{}]", b"[{}] x"],
)
def test_json_array_rejects_bad_framing(body):
    with pytest.raises(FramingError):
        JsonArraySplitter().feed(body)


def test_json_array_max_element_bytes():
    assert JsonArraySplitter(max_element_bytes=8).feed(b'[{"a": 1}') == [b'[{"a": 1}']
    with pytest.raises(FramingError):
        JsonArraySplitter(max_element_bytes=8).feed(b'[{"a": 12}')
    splitter = JsonArraySplitter(max_element_bytes=8)
    with pytest.raises(FramingError):
        splitter.feed(b'[{"a": 1')
        splitter.feed(b"23456789")


@pytest.mark.parametrize(
    ("segment", "element"),
    [(b'[{"a": 1}', b'{"a": 1}'), (b'\n,\r\n{"b": []}', b'{"b": []}'), (b"\n]", b""), (b"[]", b""), (b"\n]\n", b"")],
)
def test_json_array_element(segment, element):
    assert JsonArraySplitter.element(segment) == element


def test_json_array_three_megabyte_element_in_16k_chunks():
    element = big_response(3 << 20, pretty=True)
    body = b"[" + element + b"\n,\r\n" + element + b"\n]"
    splitter = JsonArraySplitter()
    segments = feed_chunks(splitter, fixed_chunks(body, 16384))
    assert [JsonArraySplitter.element(segment) for segment in segments] == [element, element, b""]
    assert find_usage(JsonArraySplitter.element(segments[1])) == {"promptTokenCount": 3}


def test_json_array_fifty_megabyte_element_in_64k_chunks_completes():
    body = b'[{"data": "' + b"A" * (50 << 20) + b'"}\n]'
    splitter = JsonArraySplitter()
    segments = feed_chunks(splitter, fixed_chunks(body, 65536))
    assert len(segments) == 2 and splitter.finished


@pytest.mark.parametrize(
    ("fed", "elements"),
    [
        (b"", 0),
        (b"[", 0),
        (b'[{"candidates": [{"text": "partial', 0),
        (b'[{"a": 1}', 1),
        (b'[{"a": 1}\n,\r\n{"a": 2}\n,\r\n{"a": ', 2),
    ],
)
def test_json_array_error_tail_makes_a_valid_array(fed, elements):
    error = b'{\n  "error": {\n    "code": 503,\n    "status": "UNAVAILABLE"\n  }\n}'
    splitter = JsonArraySplitter()
    emitted = b"".join(splitter.feed(fed))
    assert splitter.elements == elements
    document = orjson.loads(emitted + json_array_error_tail(splitter, error))
    assert document[-1] == orjson.loads(error) and len(document) == elements + 1


def test_json_array_error_tail_after_the_end_is_empty():
    splitter = JsonArraySplitter()
    splitter.feed(b'[{"a": 1}\n]')
    assert json_array_error_tail(splitter, b'{"error": {}}') == b""


# ---------------------------------------------------------------------------------------------- usage


def stream_payloads(name: str) -> list[bytes]:
    return [SseSplitter.data(event) for event in SseSplitter().feed(read_fixture(name))]


@pytest.mark.parametrize("name", ALL_SSE_BODIES)
def test_find_usage_on_every_recorded_event(name):
    for payload in stream_payloads(name):
        document = orjson.loads(payload)
        assert find_usage(payload) == document["usageMetadata"]
        assert tail_usage(payload) == document["usageMetadata"]  # the backwards scan, exercised on real data


def test_find_usage_prompt_count_changes_on_the_last_event():
    payloads = stream_payloads("stream_sse/pydantic-ai__test_google_model_stream.0.sse.txt")
    assert find_usage(payloads[0])["promptTokenCount"] == 15
    assert find_usage(payloads[-1])["promptTokenCount"] == 13
    assert find_usage(payloads[-1])["candidatesTokenCount"] == 8


def test_find_usage_on_a_usage_only_event():
    (payload,) = stream_payloads("stream_sse/vercel-ai__google-usage-raw-live.chunks.txt")
    assert b'"candidates"' not in payload
    assert find_usage(payload)["thoughtsTokenCount"] == 89


def test_find_usage_on_the_big_image_event():
    payload = max(stream_payloads(IMAGE_STREAM), key=len)
    assert len(payload) > 1_000_000
    assert find_usage(payload) == orjson.loads(payload)["usageMetadata"]


def test_find_usage_on_recorded_json_array_elements():
    body = read_fixture("stream_json_array/llm-gemini__test_prompt.0.jsonarray.txt")
    segments = JsonArraySplitter().feed(body)
    for segment, document in zip(segments, orjson.loads(body)):
        assert find_usage(JsonArraySplitter.element(segment)) == document["usageMetadata"]
        assert tail_usage(JsonArraySplitter.element(segment)) == document["usageMetadata"]
    assert tail_usage(body) == orjson.loads(body)[-1]["usageMetadata"]


def test_find_usage_is_not_fooled_by_escaped_text():
    fake = b'\\"usageMetadata\\": {\\"promptTokenCount\\": 999}'
    text = b'"' + b"x" * 70_000 + fake + b'"'
    without_usage = b'{"candidates": [{"content": {"parts": [{"text": ' + text + b"}]}}]}"
    assert find_usage(without_usage) is None
    with_usage = (
        b'{"candidates": [{"content": {"parts": [{"text": "hi"}]}}],"usageMetadata": {"promptTokenCount": 7},'
        b'"responseId": ' + text + b"}"
    )
    assert find_usage(with_usage) == {"promptTokenCount": 7}
    assert tail_usage(with_usage[-1000:]) is None  # the real key lies before the tail; the fake must not count


def test_find_usage_ignores_a_nested_usage_key_in_a_big_payload():
    arguments = b'{"usageMetadata": {"promptTokenCount": 999}, "pad": "' + b"p" * 70_000 + b'"}'
    nested_only = b'{"candidates": [{"content": {"parts": [{"functionCall": {"args": ' + arguments + b"}}]}}]}"
    assert find_usage(nested_only) is None
    real_first = b'{"usageMetadata": {"promptTokenCount": 1}, "candidates": [{"args": ' + arguments + b"}]}"
    assert find_usage(real_first) == {"promptTokenCount": 1}


def test_find_usage_on_invalid_or_missing_input():
    assert find_usage(b"") is None
    assert find_usage(b"not json") is None
    assert find_usage(b"[1, 2]") is None
    assert find_usage(b'{"usageMetadata": 3}') is None
    assert find_usage(b'{"candidates": []}') is None
    truncated = big_response(100_000)[:-200]
    assert find_usage(truncated) is None


def test_find_usage_and_model_version_on_a_big_payload():
    payload = big_response(3 << 20, usage=b'{"promptTokenCount": 3, "candidatesTokensDetails": [{"modality": "IMAGE"}]}')
    assert find_usage(payload) == {"promptTokenCount": 3, "candidatesTokensDetails": [{"modality": "IMAGE"}]}


def test_tail_usage_on_a_big_unary_body():
    body = big_response(3 << 20, pretty=True) + b"\n"
    assert tail_usage(body[-262144:]) == {"promptTokenCount": 3}


def test_tail_usage_returns_none_when_usage_is_cut_off():
    body = big_response(100_000, usage=b'{"promptTokenCount": 3, "details": [{"tokenCount": 3}]}')
    key_at = body.rindex(b'"usageMetadata"')
    assert tail_usage(body[key_at - 1 :]) == {"promptTokenCount": 3, "details": [{"tokenCount": 3}]}
    brace_at = body.index(b"{", key_at)
    for cut_at in (key_at + 1, brace_at, brace_at + 1, brace_at + 5, body.index(b"details", key_at)):
        assert tail_usage(body[cut_at:]) is None, cut_at
    # A tail starting exactly at the key's quote may have lost an escaping backslash: refuse it.
    assert tail_usage(body[key_at:]) is None
