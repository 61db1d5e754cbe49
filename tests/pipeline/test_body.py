"""Tests for reading and parsing a caller's body: every way a body can be wrong is a Google-shaped 4xx naming the
limit or field, decided before anything goes upstream; and large bodies are handled a slice at a time."""

import json

import orjson
import pytest
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, NoMoreData

from relay.errors import InvalidArgument
from relay.pipeline import body as body_module
from relay.pipeline.body import MAX_DEPTH, MAX_VALUES, parse_json, too_deep
from tests.support import BODY, GENERATE, MODEL, UPSTREAM_KEY
from tests.support import UPSTREAM_URL as UPSTREAM

CLIENT_KEY = "relay-client-key-body-0123456789"
MANAGED = {"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY, "RELAY_MAX_BODY_MB": "1"}
AUTH = {"x-goog-api-key": CLIENT_KEY}
LIMIT = 1024 * 1024


class Stream:
    """A server's ``wsgi.input``: hands out ``pieces`` (an exception is raised), counts what was read."""

    def __init__(self, pieces):
        self.pieces = list(pieces)
        self.read_bytes = 0
        self.failed = False  # gunicorn's Body has it: True closes the connection after the answer

    def read(self, size):
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if isinstance(piece, Exception):
            raise piece
        if len(piece) > size:
            piece, rest = piece[:size], piece[size:]
            self.pieces.insert(0, rest)
        self.read_bytes += len(piece)
        return piece


@pytest.fixture(scope="module")
def client(module_app_factory):
    return module_app_factory(MANAGED).test_client()


def chunked(client, stream, path=GENERATE):
    """POST ``stream`` as a chunked body (no Content-Length), the way gunicorn presents one."""
    return client.post(path, headers={**AUTH, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input": stream, "wsgi.input_terminated": True})


def with_length(client, stream, length, path=GENERATE):
    return client.post(path, headers={**AUTH, "Content-Type": "application/json"},
                       environ_overrides={"wsgi.input": stream, "wsgi.input_terminated": True,
                                          "CONTENT_LENGTH": str(length)})


def violations(response, google_error, code=400):
    error = google_error(response, code)
    return {violation["field"]: violation["description"] for violation in error["details"][0]["fieldViolations"]}


# -- reading: size, framing, truncation -------------------------------------------------------------------


def test_a_chunked_body_is_read_whole_and_relayed_as_sent(client, mock_upstream):
    mock_upstream.post(UPSTREAM + GENERATE, body=b"{}")
    stream = Stream([BODY[:10], BODY[10:30], BODY[30:]])
    response = chunked(client, stream)
    assert response.status_code == 200, response.data
    assert mock_upstream.calls[0].request.body == BODY


def test_an_over_limit_chunked_body_is_refused_as_soon_as_the_limit_is_passed(client, mock_upstream, google_error):
    stream = Stream([b" " * 64 * 1024] * 200)  # 12.5 MB offered, the limit is 1 MB
    response = chunked(client, stream)
    error = google_error(response, 413)
    assert str(LIMIT) in error["message"]
    assert LIMIT < stream.read_bytes <= LIMIT + 64 * 1024, "reading stopped at the limit"
    assert stream.failed, "the unread rest must not be parsed as the next request: the connection closes"
    assert len(mock_upstream.calls) == 0


def test_a_declared_length_over_the_limit_is_refused_unread(client, mock_upstream, google_error):
    stream = Stream([b" " * (LIMIT + 1)])
    response = with_length(client, stream, LIMIT + 1)
    google_error(response, 413)
    assert stream.read_bytes == 0 and stream.failed
    assert len(mock_upstream.calls) == 0


@pytest.mark.parametrize("error", [InvalidChunkSize(b"zz"), ChunkMissingTerminator(b"xx"), NoMoreData(b""),
                                   ConnectionResetError(104, "reset")],
                         ids=["bad-size", "no-terminator", "ended-early", "reset"])
def test_broken_chunked_framing_is_a_400_not_a_500(client, mock_upstream, google_error, error):
    stream = Stream([BODY[:20], error])
    response = chunked(client, stream)
    description = violations(response, google_error)["body"]
    assert "chunk" in description
    assert stream.failed
    assert len(mock_upstream.calls) == 0


def test_a_body_shorter_than_its_content_length_is_never_relayed(client, mock_upstream, google_error):
    stream = Stream([BODY])  # then the caller half-closes: the server's stream ends
    response = with_length(client, stream, len(BODY) + 100)
    description = violations(response, google_error)["body"]
    assert f"{len(BODY)} of the {len(BODY) + 100} bytes" in description
    assert len(mock_upstream.calls) == 0


def test_a_stream_error_keeps_the_stream_shape(client, mock_upstream, google_error):
    response = chunked(client, Stream([InvalidChunkSize(b"zz")]), path=f"/v1beta/models/{MODEL}:streamGenerateContent")
    google_error(response, 400, wrapped=True)


# -- parsing: how many values, how deep -----------------------------------------------------------------


def nested(depth, inner=b"1"):
    """A body whose deepest array is at level ``depth`` (the body object is level 1)."""
    return b'{"contents": [{"parts": [{"functionCall": {"name": "f", "args": {"deep": ' + b"[" * (depth - 7) + inner \
        + b"]" * (depth - 7) + b"}}}]}]}"


def test_nesting_relay_can_serialise_again_is_accepted():
    body = parse_json(nested(MAX_DEPTH), pause=None)
    assert orjson.loads(orjson.dumps(body)) == body


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 1023, 1500])
def test_deeper_nesting_is_a_400_naming_the_field_and_the_limit(depth):
    with pytest.raises(InvalidArgument) as raised:
        parse_json(nested(depth), pause=None)
    [violation] = raised.value.details[0]["fieldViolations"]
    assert str(MAX_DEPTH) in violation["description"]
    if depth <= 1024:  # deeper still, the parser itself stops: no path to name
        assert violation["field"].startswith("contents[0].parts[0].functionCall.args.deep[0][0]")


DEEP_CACHE = b'{"model": "models/gemini-2.5-flash", "ttl": "60s", "displayName": ' + b"[" * 400 + b"]" * 400 + b"}"


@pytest.mark.parametrize("method, path, raw", [
    ("post", GENERATE, nested(400)), ("post", f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", nested(400)),
    ("post", "/v1beta/cachedContents", DEEP_CACHE), ("patch", "/v1beta/cachedContents/abc", DEEP_CACHE),
])
def test_deep_nesting_is_refused_before_anything_is_sent(module_app_factory, mock_upstream, google_error, method, path,
                                                         raw):
    # Passthrough (the caller's own Google key): a cache PATCH is not pinned to an owner first.
    client = module_app_factory({}).test_client()
    response = getattr(client, method)(path, data=raw, headers={"x-goog-api-key": "AIzaCallersOwnKey-fedcba9876543210"},
                                       content_type="application/json")
    assert any(str(MAX_DEPTH) in description for description in violations(response, google_error).values())
    assert len(mock_upstream.calls) == 0


def test_a_deep_body_relay_changes_is_serialised_again(client, mock_upstream):
    """A body model is dropped (the body changes): 254 levels still re-serialise; this was a 500 at 256+."""
    mock_upstream.post(UPSTREAM + GENERATE, body=b"{}")
    raw = nested(MAX_DEPTH)[:-1] + b', "model": "models/gemini-2.5-flash"}'
    response = client.post(GENERATE, data=raw, headers=AUTH, content_type="application/json")
    assert response.status_code == 200, response.data
    sent = json.loads(mock_upstream.calls[0].request.body)
    assert "model" not in sent and sent["contents"] == json.loads(raw)["contents"]


def test_too_deep_names_the_first_path_past_the_limit():
    assert too_deep({"a": [[1]], "b": {"c": [[[2]]]}}, 4) == "b.c[0][0]"
    assert too_deep({"a": [[1]], "b": {"c": [[[2]]]}}, 5) is None
    assert too_deep({"a": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}, 3) == "a[0][0]"


def turns(count, text="x"):
    return {"contents": [{"role": "user", "parts": [{"text": text}]} for _ in range(count)]}


def test_a_body_with_too_many_values_is_a_400_naming_the_limit():
    # 5 values a turn, plus the body object and its contents array.
    accepted = orjson.dumps(turns((MAX_VALUES - 2) // 5))
    assert parse_json(accepted, pause=None)
    with pytest.raises(InvalidArgument) as raised:
        parse_json(orjson.dumps(turns((MAX_VALUES - 2) // 5 + 1)), pause=None)
    [violation] = raised.value.details[0]["fieldViolations"]
    assert violation["field"] == "body" and f"{MAX_VALUES:,}" in violation["description"]


def test_punctuation_inside_strings_is_not_counted_as_values():
    text = "{[,]}" * (MAX_VALUES // 2)
    assert parse_json(orjson.dumps(turns(1, text)), pause=None)["contents"][0]["parts"][0]["text"] == text


@pytest.mark.parametrize("raw", [b'{"a": "' + b'\\"' * 50_000, b'"' * 100_000, b'{"a": "x\\',
                                 b'{"a": ' + b'"\\' * 40_000])
def test_counting_values_is_linear_even_in_broken_json(raw):
    assert body_module._count_values(raw, MAX_VALUES, body_module.Pacer(None)) <= 2


def test_parsing_a_large_body_pauses_for_other_greenlets():
    raw = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "{[,]}" * 20}]}] * 60_000})
    pauses = []
    parse_json(raw, pause=lambda: pauses.append(1))
    assert len(pauses) >= 3
