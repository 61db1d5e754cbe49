"""This module provides the recorded Gemini bodies the fake upstream replays, and Google-shaped error bodies.

Everything here is pure (no sockets): it turns files under tests/fixtures/gemini into either one unary
body (bytes) or a list of stream `Event`s that can be framed as SSE or as Google's JSON array.
"""
from __future__ import annotations

import base64
import copy
import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path

FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "gemini"

DEFAULT_UNARY = "generate_text/js-genai__Chats_Tests_sendMessage_Google_AI_with_text.http.json"
DEFAULT_SSE = "stream_sse/js-genai__Chats_Tests_sendMessage_Google_AI_with_text_stream.http.0.sse.txt"
DEFAULT_ARRAY = "stream_json_array/llm-gemini__test_prompt.0.jsonarray.txt"
DEFAULT_COUNT_TOKENS = (
    "count_tokens/js-genai__Client_Tests_countTokens_ML_Dev_should_count_tokens_with_specified_parameters.http.json"
)
DEFAULT_BATCH_EMBED = "embeddings/llm-gemini__test_embedding_gemini-embedding-001.json"
DEFAULT_MODELS = "models_list/llm-gemini__test_model_list.json"
CACHING_CELLS = "cached_contents/cookbook__Caching_REST.curl_cells.json"
ERRORS_FROM_ISSUES = "errors/from_issues.json"

# google.rpc.Code names for the HTTP statuses Gemini uses (PROTOCOL.md §6).
STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED",
    503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
STATUS_MESSAGES = {
    400: "Request contains an invalid argument.",
    403: "The caller does not have permission",
    429: "Resource has been exhausted (e.g. check quota).",
    500: ("An internal error has occurred. Please retry or report in "
          "https://developers.generativeai.google/guide/troubleshooting"),
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}


def compact_json(obj) -> str:
    """Google's single-line SSE style: `": "` after keys, no space after commas."""
    return json.dumps(obj, separators=(",", ": "), ensure_ascii=False)


def pretty_json(obj) -> str:
    """Google's unary style: 2-space indent (callers add the trailing newline)."""
    return json.dumps(obj, indent=2, ensure_ascii=False)


@dataclass(frozen=True)
class Event:
    """One stream element, kept in both recorded framings so replays stay byte-exact."""

    sse_text: str
    array_text: str

    @classmethod
    def from_sse(cls, text: str) -> "Event":
        return cls(text, pretty_json(json.loads(text)))

    @classmethod
    def from_array(cls, text: str) -> "Event":
        return cls(compact_json(json.loads(text)), text)

    @classmethod
    def from_obj(cls, obj) -> "Event":
        if isinstance(obj, str):
            return cls.from_sse(obj)
        return cls(compact_json(obj), pretty_json(obj))

    def sse_bytes(self) -> bytes:
        return b"data: " + self.sse_text.encode() + b"\r\n\r\n"


def array_chunks(events: list[Event]) -> list[bytes]:
    """Google's JSON-array stream split per element: `[{..}`, `\\n,\\r\\n{..}`, ..., `\\n]`."""
    if not events:
        return [b"[]"]
    chunks = [b"[" + events[0].array_text.encode()]
    chunks += [b"\n,\r\n" + event.array_text.encode() for event in events[1:]]
    chunks.append(b"\n]")
    return chunks


@dataclass(frozen=True)
class Recorded:
    """A replayable response: either `body` (unary) or `events` (stream)."""

    status: int
    body: bytes | None = None
    events: tuple[Event, ...] | None = None


def parse_sse(raw: bytes) -> list[Event]:
    blocks = raw.replace(b"\r\n", b"\n").split(b"\n\n") if b"\r\n\r\n" not in raw else raw.split(b"\r\n\r\n")
    events = []
    for block in blocks:
        if not block.strip():
            continue
        text = block.decode()
        if not text.startswith("data: "):
            raise ValueError(f"unexpected SSE block {text[:40]!r}")
        events.append(Event.from_sse(text[len("data: "):]))
    return events


def parse_json_array(raw: bytes) -> list[Event]:
    text = raw.decode()
    if not (text.startswith("[") and text.endswith("\n]")):
        raise ValueError("not a Google JSON-array stream body")
    return [Event.from_array(element) for element in text[1:-2].split("\n,\r\n")]


@functools.lru_cache(maxsize=128)
def load(reference: str) -> Recorded:
    """Load `path[#selector]` relative to tests/fixtures/gemini.

    Selectors: an interaction index for normalized recordings (`…json#1`), an entry id for
    errors/from_issues.json (`errors/from_issues.json#429-quota-freetier-full`).
    """
    rel, _, selector = reference.partition("#")
    path = (FIXTURES_DIR / rel).resolve()
    if FIXTURES_DIR.resolve() not in path.parents:
        raise ValueError(f"fixture outside tests/fixtures/gemini: {reference}")
    raw = path.read_bytes()
    if rel.endswith(".sse.txt"):
        return Recorded(200, events=tuple(parse_sse(raw)))
    if rel.endswith(".jsonarray.txt"):
        return Recorded(200, events=tuple(parse_json_array(raw)))
    if rel.endswith(".chunks.txt"):
        lines = [line for line in raw.decode().splitlines() if line.strip()]
        return Recorded(200, events=tuple(Event.from_obj(json.loads(line)) for line in lines))
    document = json.loads(raw)
    if isinstance(document, dict) and "interactions" in document:
        response = document["interactions"][int(selector or 0)]["response"]
        if response.get("body_raw") is not None and response.get("stream_format") != "sse":
            if response.get("stream_format") == "json-array":
                return Recorded(response["status"], events=tuple(parse_json_array(response["body_raw"].encode())))
            return Recorded(response["status"], body=response["body_raw"].encode())
        if response.get("stream_format") == "sse" and response.get("body_raw"):
            return Recorded(response["status"], events=tuple(parse_sse(response["body_raw"].encode())))
        if response.get("stream_chunks"):
            return Recorded(response["status"], events=tuple(Event.from_obj(c) for c in response["stream_chunks"]))
        return Recorded(response["status"], body=(pretty_json(response["body_json"]) + "\n").encode())
    if isinstance(document, dict) and "entries" in document:
        entry = next(e for e in document["entries"] if e["id"] == selector)
        body = entry.get("body_raw") or pretty_json(entry["body"]) + "\n"
        return Recorded(entry["http_status"], body=body.encode())
    if isinstance(document, dict) and "error" in document:
        return Recorded(int(document["error"]["code"]), body=raw)
    return Recorded(200, body=raw)


def google_error(code: int, message: str | None = None, status: str | None = None, details=None) -> bytes:
    error = {
        "code": code,
        "message": message if message is not None else STATUS_MESSAGES.get(code, "Error"),
        "status": status or STATUS_NAMES.get(code, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return (pretty_json({"error": error}) + "\n").encode()


def model_not_found(model_id: str, api_version: str, method: str) -> bytes:
    """The recorded 404 (errors/js-genai…stream_with_error), re-targeted at `model_id`."""
    base_method = {"streamGenerateContent": "generateContent", "batchEmbedContents": "embedContent"}.get(method, method)
    message = (
        f"models/{model_id} is not found for API version {api_version}, or is not supported for {base_method}. "
        "Call ListModels to see the list of available models and their supported methods."
    )
    debug = f'[ORIGINAL ERROR] generic::not_found: {message} [google.rpc.error_details_ext] {{ message: "{message}" }}'
    details = [{"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": debug}]
    return google_error(404, message, "NOT_FOUND", details)


def api_key_invalid() -> bytes:
    return load(f"{ERRORS_FROM_ISSUES}#400-api-key-invalid-unary").body


def quota_exhausted(retry_delay: str = "15s") -> bytes:
    """Google's 429 with QuotaFailure + Help + RetryInfo (errors/from_issues.json#429-quota-freetier-full)."""
    body = json.loads(load(f"{ERRORS_FROM_ISSUES}#429-quota-freetier-full").body)
    for detail in body["error"]["details"]:
        if detail["@type"].endswith("google.rpc.RetryInfo"):
            detail["retryDelay"] = retry_delay
    return (pretty_json(body) + "\n").encode()


@functools.lru_cache(maxsize=1)
def models_list_body() -> bytes:
    return load(DEFAULT_MODELS).body


def model_get_body(model_id: str) -> bytes:
    models = json.loads(models_list_body())["models"]
    model = next((m for m in models if m["name"] == f"models/{model_id}"), None)
    if model is None:
        model = dict(models[0], name=f"models/{model_id}")
    return (pretty_json(model) + "\n").encode()


def batch_embed_body(request_count: int) -> bytes:
    recorded = load(DEFAULT_BATCH_EMBED).body
    if request_count <= 1:
        return recorded
    embedding = json.loads(recorded)["embeddings"][0]
    return (pretty_json({"embeddings": [embedding] * request_count}) + "\n").encode()


def embed_single_body() -> bytes:
    embedding = json.loads(load(DEFAULT_BATCH_EMBED).body)["embeddings"][0]
    return (pretty_json({"embedding": embedding}) + "\n").encode()


@functools.lru_cache(maxsize=1)
def cached_content_template() -> dict:
    cells = json.loads((FIXTURES_DIR / CACHING_CELLS).read_text())["cells"]
    created = cells[0]["output_text"]
    return json.loads(created[: created.index("\n}\n") + 3])


@functools.lru_cache(maxsize=8)
def _image_base64(size_mb: float) -> str:
    """Deterministic PNG-looking payload whose base64 is about `size_mb` MB."""
    raw_len = int(size_mb * 1024 * 1024 * 3 / 4)
    payload = b"\x89PNG\r\n\x1a\n" + random.Random(20240711).randbytes(max(raw_len - 8, 0))
    return base64.b64encode(payload).decode()


def image_response(size_mb: float) -> dict:
    template = json.loads(load(DEFAULT_UNARY).body)
    response = copy.deepcopy(template)
    response["candidates"][0]["content"]["parts"] = [
        {"text": "Here is the image you asked for."},
        {"inlineData": {"mimeType": "image/png", "data": _image_base64(size_mb)}},
    ]
    return response


def image_body(size_mb: float) -> bytes:
    return (pretty_json(image_response(size_mb)) + "\n").encode()


def image_events(size_mb: float) -> list[Event]:
    response = image_response(size_mb)
    text_part, image_part = response["candidates"][0]["content"]["parts"]
    first = copy.deepcopy(response)
    first["candidates"][0]["content"]["parts"] = [text_part]
    first["candidates"][0].pop("finishReason", None)
    second = copy.deepcopy(response)
    second["candidates"][0]["content"]["parts"] = [image_part]
    return [Event.from_obj(first), Event.from_obj(second)]


# Google's front end answers a 502 with this kind of HTML page, not with a google.rpc.Status body.
HTML_502 = b"""<!DOCTYPE html>
<html lang=en>
  <meta charset=utf-8>
  <meta name=viewport content="initial-scale=1, minimum-scale=1, width=device-width">
  <title>Error 502 (Server Error)!!1</title>
  <style>*{margin:0;padding:0}html,code{font:15px/22px arial,sans-serif}</style>
  <a href=//www.google.com/><span id=logo aria-label=Google></span></a>
  <p><b>502.</b> <ins>That\xe2\x80\x99s an error.</ins>
  <p>The server encountered a temporary error and could not complete your request.<p>Please try again in 30 seconds.  <ins>That\xe2\x80\x99s all we know.</ins>
"""


def garbage(size: int, seed: int = 502) -> bytes:
    """`size` deterministic bytes that are neither HTTP nor JSON nor SSE (no CR/LF, so no line ever ends)."""
    raw = random.Random(seed).randbytes(size)
    return raw.translate(bytes(range(256)).replace(b"\r", b"\x00").replace(b"\n", b"\x01"))


@functools.lru_cache(maxsize=2)
def big_line_events(size_mb: float) -> tuple[Event, ...]:
    """A short first event, then one event whose text part makes it a single line of about `size_mb` MB."""
    template = json.loads(load(DEFAULT_UNARY).body)
    first = copy.deepcopy(template)
    first["candidates"][0]["content"]["parts"] = [{"text": "A very long answer follows."}]
    first["candidates"][0].pop("finishReason", None)
    first.pop("usageMetadata", None)
    big = copy.deepcopy(template)
    unit = "0123456789abcdefghijklmnopqrstuvwxyz "
    big["candidates"][0]["content"]["parts"] = [{"text": unit * int(size_mb * 1024 * 1024 / len(unit))}]
    return Event.from_obj(first), Event.from_obj(big)
