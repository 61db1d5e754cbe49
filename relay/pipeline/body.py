"""This module provides reading and parsing a caller's request body: framing, size, JSON, and what it costs.

relay reads ``wsgi.input`` itself, so that every way a body can be wrong is the caller's 4xx, decided
before anything goes upstream: a body over the size limit is a 413 the moment the count passes it (what
is beyond is never read, what was read is dropped), broken chunked framing and a body shorter than its
Content-Length are 400s.  After such an early answer the connection must carry no further request: the
unread rest of the body would be parsed as one.

Parsing is a single C call that no other greenlet can interrupt, so its cost is bounded before it starts:
a body may hold at most :data:`MAX_VALUES` JSON values.  What relay could not serialise again
(objects and arrays nested deeper than :data:`MAX_DEPTH`) is refused up front too.  Reading, counting and
the depth walk give the event loop a turn every few milliseconds (see :func:`pause_for_others`).
"""

import gc
import re

import orjson
from flask import request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import RequestEntityTooLarge

from relay.errors import bad_request
from relay.schemas import Pacer
from relay.services import current

try:
    import gevent
    from gevent import monkey
except ImportError:  # pragma: no cover - gevent is a runtime dependency; this keeps pure imports working
    gevent = None

READ_STEP = 256 * 1024
SCAN_STEP = 1024 * 1024
# JSON values (objects, arrays, strings, numbers, literals) in one body.  Parsing builds them all in one
# call no other greenlet can interrupt, and the collector's first passes over them hold the loop too:
# about 0.3 s for a million.  Google's input limit of about a million tokens is the guide (hardly any
# value of a request costs less than a token); relay takes half of that, so a maximal body holds the loop
# for about 0.15 s at a time.  A 100,000-turn conversation fits.
MAX_VALUES = 500_000
# orjson serialises at most 254 levels of objects and arrays; relay must be able to re-serialise a body
# it changes (a model name, a plugin's setting), so it accepts no deeper one.
MAX_DEPTH = 254
# A JSON string (escapes included; one left open runs to the end), an empty object or array, or what
# adds values: each comma adds one, and so does each object or array that is not empty (its first).
_VALUE_TOKEN = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)|\[\s*\]|\{\s*\}|[,\[{]', re.DOTALL)


def pause_for_others():
    """Let the worker's other greenlets run (under gunicorn's gevent worker; elsewhere there are none).

    ``gevent.idle()``, not ``sleep(0)``: the loop polls sockets and runs timers before this greenlet goes
    on.  ``sleep(0)`` only queues it behind other ready greenlets, and gevent polls again only every 50
    such callbacks: streams waited 0.1 s and more.
    """
    if gevent is not None and monkey.is_module_patched("socket"):
        gevent.idle()


def read_body():
    """The caller's whole body as bytes; a 413 past ``max_body_bytes``, a 400 for broken or short framing."""
    mimetype = request.mimetype
    if request.content_type and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise bad_request([("Content-Type", f"Expected application/json, got {mimetype!r}.")])
    limit = current().settings.max_body_bytes
    declared = request.content_length
    stream = request.environ["wsgi.input"]
    if declared is not None and declared > limit:
        _close_after_response(stream)
        raise RequestEntityTooLarge()  # rendered by lifecycle.HTTP_ERRORS, like werkzeug's own 413
    if declared is None and not request.environ.get("wsgi.input_terminated"):
        return b""  # no length and no server-terminated stream: a WSGI server gives no body (as werkzeug does)
    body = _read(stream, limit + 1 if declared is None else declared, Pacer(pause_for_others))
    if len(body) > limit:
        _close_after_response(stream)
        raise RequestEntityTooLarge()
    if declared is not None and len(body) < declared:
        raise bad_request([("body", f"The request body ended after {len(body)} of the {declared} bytes its "
                                    "Content-Length declared; an incomplete body is never relayed.")])
    return bytes(body)  # the one copy of the whole: what is forwarded must be bytes


def _read(stream, most, pacer):
    """Up to ``most`` bytes of ``stream``, read a step at a time into one buffer (no copies of the whole)."""
    body = bytearray()
    while len(body) < most:
        try:
            piece = stream.read(min(READ_STEP, most - len(body)))
        except (ParseException, OSError) as error:  # gunicorn's chunked-framing errors; NoMoreData is an OSError
            _close_after_response(stream)
            raise bad_request([("body", _framing_problem(error))]) from None
        if not piece:
            break
        body += piece
        pacer.tick()
    return body


def _framing_problem(error):
    if isinstance(error, ParseException):
        return ("The request body's chunked framing is malformed: a chunk size, chunk extension, chunk terminator "
                "or trailer is invalid.")
    return ("The request body ended before it was complete (before its last chunk): the connection closed or "
            "failed while it was read.")


def _close_after_response(stream):
    """The rest of this body stays unread: the connection must close after the answer, never be read on.

    gunicorn closes a connection whose body failed to read (``Body.failed``) instead of draining it for
    the next request; the same flag says so here.  Other servers ignore it.
    """
    if hasattr(stream, "failed"):
        stream.failed = True


def parse_json(raw, pause=pause_for_others):
    """The body as a JSON object; a 400 naming the limit when it has too many values or nests too deep."""
    pacer = Pacer(pause)
    brackets, values = _scan(raw, pacer)
    if values > MAX_VALUES and _count_values(raw, MAX_VALUES, pacer) > MAX_VALUES:
        raise bad_request([("body", f"The request holds more than {MAX_VALUES:,} JSON values (objects, arrays, "
                                    f"strings, numbers); relay accepts at most {MAX_VALUES:,}. "
                                    "Send fewer turns or parts.")])
    pacer.give_way()
    try:
        body = _loads(raw)
        pacer.give_way()
    except orjson.JSONDecodeError as exc:
        if exc.msg.startswith("depth limit exceeded"):
            raise bad_request([("body", _too_deep_description())]) from None
        raise bad_request([("body", f"Invalid JSON payload received. {exc.msg}.")]) from None
    if not isinstance(body, dict):
        raise bad_request([("body", "Invalid JSON payload received. Expected a JSON object.")])
    if brackets > MAX_DEPTH:  # fewer objects and arrays than that cannot nest that deep
        path = too_deep(body, MAX_DEPTH, pacer)
        if path is not None:
            raise bad_request([(path, _too_deep_description())])
    return body


def _loads(raw):
    """``orjson.loads`` with the cyclic collector off: its passes over the objects piling up during the call
    made a body of a million values take three times as long, all of it holding the loop.  Nothing else
    runs meanwhile (one C call), and the objects are still collected later, in the usual way."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return orjson.loads(raw)
    finally:
        if collecting:
            gc.enable()


def _too_deep_description():
    return (f"Objects and arrays are nested more than {MAX_DEPTH} levels deep here; "
            f"relay accepts at most {MAX_DEPTH}.")


def _scan(raw, pacer):
    """At C speed: the ``{`` and ``[`` bytes in ``raw`` (at least its objects and arrays), and a bound on its
    values: the first, one more for each comma, one for each object or array (which holds a first value)."""
    brackets, commas = 0, 0
    for start in range(0, len(raw), SCAN_STEP):
        end = start + SCAN_STEP
        brackets += raw.count(b"[", start, end) + raw.count(b"{", start, end)
        commas += raw.count(b",", start, end)
        pacer.tick()
    return brackets, 1 + brackets + commas


def _count_values(raw, most, pacer):
    """The values in ``raw`` (strings skipped, empty objects and arrays hold none), counted up to ``most + 1``;
    exact for valid JSON."""
    count = 1
    for index, match in enumerate(_VALUE_TOKEN.finditer(raw)):
        if match.end() - match.start() == 1 and raw[match.start()] != 0x22:  # not a string, not {} or []
            count += 1
            if count > most:
                break
        if index & 255 == 0:
            pacer.tick()
    return count


def too_deep(body, limit, pacer=None):
    """Where ``body`` (itself level 1) nests an object or array deeper than ``limit`` levels: its path, as
    ``contents[0].parts[1].functionCall.args.a[0]…``; None if nowhere."""
    tick = (pacer or Pacer()).tick
    stack, path, steps = [_children(body)], [], 0
    while stack:
        for key, child in stack[-1]:
            steps += 1
            if steps & 255 == 0:
                tick()
            if isinstance(child, (dict, list)):
                path.append(key)
                if len(stack) + 1 > limit:
                    return _path_text(path)
                stack.append(_children(child))
                break
        else:
            stack.pop()
            if path:
                path.pop()
    return None


def _children(container):
    return iter(container.items()) if isinstance(container, dict) else enumerate(container)


def _path_text(path, shown=12):
    text = "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in path[:shown]).lstrip(".")
    return text + "…" if len(path) > shown else text

