"""This module provides the fake upstream's decisions: what a request gets answered (a `Plan`).

Default answers replay real recordings; a scripted rule (see server.py) may replace the content and/or
add timing and failure modifiers. Pure code: no sockets.
"""
from __future__ import annotations

import base64
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from . import fixtures
from .fixtures import Event

VERSION = r"(?P<version>v1|v1beta|v1alpha)"
METHOD_ROUTE = re.compile(
    rf"^/{VERSION}/(?P<collection>models|tunedModels)/(?P<model>[^/:]+)"
    r":(?P<method>generateContent|streamGenerateContent|countTokens|embedContent|batchEmbedContents)$"
)
MODELS_ROUTE = re.compile(rf"^/{VERSION}/models(?:/(?P<model>[^/:]+))?$")
CACHE_ROUTE = re.compile(rf"^/{VERSION}/cachedContents(?:/(?P<cache_id>[^/:]+))?$")

SSE_HEADERS = [("Content-Type", "text/event-stream"), ("Content-Disposition", "attachment")]
JSON_HEADERS = [("Content-Type", "application/json; charset=UTF-8")]
GOOGLE_HEADERS = [
    ("Vary", "Origin"), ("Vary", "X-Origin"), ("Vary", "Referer"),
    ("Server", "scaffolding on HTTPServer2"), ("X-XSS-Protection", "0"), ("X-Frame-Options", "SAMEORIGIN"),
    ("X-Content-Type-Options", "nosniff"), ("Server-Timing", "gfet4t7; dur=42"),
]


@dataclass
class Plan:
    """How to answer one request. `events` set ⇒ streamed with `framing` ("sse" | "array")."""

    status: int = 200
    body: bytes | None = None
    events: list[Event] | None = None
    framing: str = "unary"
    headers: list = field(default_factory=list)
    gap_ms: float = 0
    delay_headers_ms: float = 0
    drip_bytes_per_s: float = 0
    cut_after_events: int | None = None
    cut_mid_event: bool = False
    cut_after_bytes: int | None = None
    cut_mode: str = "rst"
    hang: bool = False
    stream_forever: bool = False
    forever_max_s: float = 300
    reset_before_headers: bool = False
    raw_response: bytes | None = None  # written instead of an HTTP response, then the connection ends
    chunks: list[bytes] | None = None  # chunked body written as is (after a 200 head), e.g. garbage
    body_file: tuple[str, int, int] | None = None  # (path, offset, size): a body streamed from disk (downloads)


def is_sse(query: str) -> bool:
    return any(name in ("alt", "$alt") and value == "sse" for name, value in parse_qsl(query, keep_blank_values=True))


def stream_framing(request) -> str:
    return "sse" if is_sse(request.query) else "array"


def google_headers(content_headers: list) -> list:
    return list(content_headers) + GOOGLE_HEADERS


def error_plan(request, status: int, body: bytes) -> Plan:
    """Errors before the first byte: plain body; `[...]`-wrapped on non-SSE stream calls (PROTOCOL §5c)."""
    match = METHOD_ROUTE.match(request.path)
    if match and match["method"] == "streamGenerateContent":
        if is_sse(request.query):
            return Plan(status, body=body, headers=google_headers(SSE_HEADERS))
        return Plan(status, body=b"[" + body + b"]", headers=google_headers(JSON_HEADERS))
    return Plan(status, body=body, headers=google_headers(JSON_HEADERS))


def unary(body: bytes, status: int = 200) -> Plan:
    return Plan(status, body=body, headers=google_headers(JSON_HEADERS))


def streamed(request, events: list[Event]) -> Plan:
    framing = stream_framing(request)
    content_headers = SSE_HEADERS if framing == "sse" else JSON_HEADERS
    return Plan(200, events=list(events), framing=framing, headers=google_headers(content_headers))


def from_recorded(request, recorded: fixtures.Recorded) -> Plan:
    if recorded.events is not None:
        return streamed(request, list(recorded.events))
    if recorded.status >= 400:
        return error_plan(request, recorded.status, recorded.body)
    return unary(recorded.body, recorded.status)


def is_missing_model(model_id: str) -> bool:
    return model_id == "nope" or model_id.startswith("missing-")


def default_plan(request, caches: dict) -> Plan:
    """The fake's built-in answer for a route (real recordings), or a Google-style 404."""
    match = METHOD_ROUTE.match(request.path)
    if match and request.method == "POST":
        if is_missing_model(match["model"]):
            return error_plan(request, 404, fixtures.model_not_found(match["model"], match["version"], match["method"]))
        method = match["method"]
        if method == "generateContent":
            return from_recorded(request, fixtures.load(fixtures.DEFAULT_UNARY))
        if method == "streamGenerateContent":
            source = fixtures.DEFAULT_SSE if is_sse(request.query) else fixtures.DEFAULT_ARRAY
            return streamed(request, list(fixtures.load(source).events))
        if method == "countTokens":
            return from_recorded(request, fixtures.load(fixtures.DEFAULT_COUNT_TOKENS))
        if method == "embedContent":
            return unary(fixtures.embed_single_body())
        return unary(fixtures.batch_embed_body(_batch_size(request.body)))
    match = MODELS_ROUTE.match(request.path)
    if match and request.method == "GET":
        if match["model"] is None:
            return unary(fixtures.models_list_body())
        if is_missing_model(match["model"]):
            return error_plan(request, 404, fixtures.google_error(
                404, f"models/{match['model']} is not found for API version {match['version']}", "NOT_FOUND"))
        return unary(fixtures.model_get_body(match["model"]))
    match = CACHE_ROUTE.match(request.path)
    if match:
        return _cache_plan(request, match["cache_id"], caches)
    return error_plan(request, 404, fixtures.google_error(404, "Method not found.", "NOT_FOUND"))


def _batch_size(body: bytes) -> int:
    try:
        return len(json.loads(body or b"{}").get("requests", [])) or 1
    except (ValueError, AttributeError):
        return 1


def _rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e9):09d}Z"


def _ttl_seconds(payload: dict) -> float | None:
    """Seconds in the payload's ``ttl`` (default an hour); None when Google would reject it."""
    ttl = payload.get("ttl") or "3600s"
    if not isinstance(ttl, str) or not ttl.endswith("s"):
        return None
    try:
        seconds = float(ttl[:-1])
    except ValueError:
        return None
    return seconds if 0 <= seconds < 10**10 else None


def _cache_plan(request, cache_id: str | None, caches: dict) -> Plan:
    """cachedContents CRUD with the recorded shapes (cached_contents/cookbook__Caching_REST)."""
    if cache_id and cache_id.startswith("missing-"):
        return error_plan(request, 403, fixtures.google_error(
            403, "CachedContent not found (or permission denied)", "PERMISSION_DENIED"))
    try:
        payload = json.loads(request.body or b"{}")
    except ValueError:
        return error_plan(request, 400, fixtures.google_error(400, "Invalid JSON payload received."))
    if not isinstance(payload, dict):
        return error_plan(request, 400, fixtures.google_error(400, "Invalid JSON payload received."))
    ttl = _ttl_seconds(payload)
    if ttl is None and request.method in ("POST", "PATCH"):
        return error_plan(request, 400, fixtures.google_error(
            400, "Invalid value at 'cached_content.ttl' (type.googleapis.com/google.protobuf.Duration), "
                 f"Field 'ttl', Illegal duration format; duration must end with 's': {str(payload.get('ttl'))[:40]}"))
    now = time.time()
    if cache_id is None and request.method == "POST":
        cache_id = secrets.token_hex(6)
        entry = dict(fixtures.cached_content_template(), name=f"cachedContents/{cache_id}")
        entry.update(model=payload.get("model", entry["model"]), createTime=_rfc3339(now), updateTime=_rfc3339(now),
                     expireTime=_rfc3339(now + ttl), displayName=payload.get("displayName", ""))
        caches[cache_id] = entry
        return unary((fixtures.pretty_json(entry) + "\n").encode())
    if cache_id is None:
        listing = {"cachedContents": list(caches.values())} if caches else {}
        return unary((fixtures.pretty_json(listing) + "\n").encode())
    entry = caches.get(cache_id) or dict(fixtures.cached_content_template(), name=f"cachedContents/{cache_id}")
    if request.method == "DELETE":
        caches.pop(cache_id, None)
        return unary(b"{}\n")
    if request.method == "PATCH":
        entry = dict(entry, updateTime=_rfc3339(now), expireTime=_rfc3339(now + ttl))
        caches[cache_id] = entry
    return unary((fixtures.pretty_json(entry) + "\n").encode())


CONTENT_KEYS = ("status", "body", "body_b64", "fixture", "events", "image_mb", "retry_delay", "html_502",
                "garbage_bytes", "raw_response_b64", "body_garbage_bytes", "line_mb")
MODIFIER_KEYS = ("gap_ms", "delay_headers_ms", "drip_bytes_per_s", "cut_after_events", "cut_mid_event",
                 "cut_after_bytes", "cut_mode", "hang", "stream_forever", "forever_max_s", "reset_before_headers")
HTML_HEADERS = [("Content-Type", "text/html; charset=UTF-8"), ("Referrer-Policy", "no-referrer")]


def apply_rule(request, rule: dict, plan: Plan) -> Plan:
    """Replace the plan's content if the rule names any, then apply its modifiers."""
    if any(key in rule for key in CONTENT_KEYS):
        plan = _rule_content(request, rule)
    for key in MODIFIER_KEYS:
        if key in rule:
            setattr(plan, key, rule[key])
    if plan.cut_mid_event and plan.cut_after_events is None:
        plan.cut_after_events = 1
    if plan.stream_forever and plan.events is None:
        plan = _merge_stream(request, plan, list(fixtures.load(fixtures.DEFAULT_SSE).events))
    plan.headers = _override_headers(plan.headers, rule.get("headers"))
    return plan


def _merge_stream(request, plan: Plan, events: list[Event]) -> Plan:
    stream = streamed(request, events)
    for key in MODIFIER_KEYS:
        setattr(stream, key, getattr(plan, key))
    return stream


def _rule_content(request, rule: dict) -> Plan:
    faulty = _fault_content(request, rule)
    if faulty is not None:
        return faulty
    status = int(rule.get("status", 200))
    if "fixture" in rule:
        plan = from_recorded(request, fixtures.load(rule["fixture"]))
        if "status" in rule:
            plan.status = status
        return plan
    if "events" in rule:
        return streamed(request, [Event.from_obj(event) for event in rule["events"]])
    if "image_mb" in rule:
        if METHOD_ROUTE.match(request.path) and "streamGenerateContent" in request.path:
            return streamed(request, fixtures.image_events(float(rule["image_mb"])))
        return unary(fixtures.image_body(float(rule["image_mb"])))
    if "body_b64" in rule:
        body = base64.b64decode(rule["body_b64"])
    elif "body" in rule:
        raw = rule["body"]
        body = raw.encode() if isinstance(raw, str) else (fixtures.pretty_json(raw) + "\n").encode()
    elif status == 429:
        body = fixtures.quota_exhausted(rule.get("retry_delay", "15s"))
    else:
        body = fixtures.google_error(status) if status >= 400 else b"{}\n"
    if status >= 400 and not rule.get("raw"):
        return error_plan(request, status, body)
    return unary(body, status)


def _fault_content(request, rule: dict) -> Plan | None:
    """Answers no real Google sends on purpose, but its front ends and broken networks do."""
    if rule.get("html_502"):
        return Plan(int(rule.get("status", 502)), body=fixtures.HTML_502, headers=list(HTML_HEADERS))
    if "garbage_bytes" in rule:
        return Plan(raw_response=fixtures.garbage(int(rule["garbage_bytes"])))
    if "raw_response_b64" in rule:
        return Plan(raw_response=base64.b64decode(rule["raw_response_b64"]))
    if "body_garbage_bytes" in rule:
        framing = stream_framing(request) if "streamGenerateContent" in request.path else "unary"
        content_headers = SSE_HEADERS if framing == "sse" else JSON_HEADERS
        return Plan(int(rule.get("status", 200)), chunks=[fixtures.garbage(int(rule["body_garbage_bytes"]))],
                    framing=framing, headers=google_headers(content_headers))
    if "line_mb" in rule:
        return streamed(request, list(fixtures.big_line_events(float(rule["line_mb"]))))
    return None


def _override_headers(headers: list, overrides) -> list:
    if not overrides:
        return headers
    pairs = list(overrides.items()) if isinstance(overrides, dict) else [tuple(pair) for pair in overrides]
    names = {name.lower() for name, _ in pairs}
    kept = [(name, value) for name, value in headers if name.lower() not in names]
    return kept + [(name, str(value)) for name, value in pairs if value is not None]


def rule_matches(rule: dict, request, upstream_key: str | None) -> bool:
    if "path_contains" in rule and rule["path_contains"] not in request.path:
        return False
    if "method" in rule and rule["method"].upper() != request.method:
        return False
    if "key" in rule and rule["key"] != upstream_key:
        return False
    if "query_contains" in rule and rule["query_contains"] not in request.query:
        return False
    if "body_contains" in rule and rule["body_contains"].encode() not in request.body:
        return False
    return True
