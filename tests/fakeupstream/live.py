"""This module provides the fake Live upstream: Gemini's BidiGenerateContent WebSocket, spoken well enough to test
relay against (``python -m tests.fakeupstream.live --port 0 --port-file PATH``).

Protocol: ``setup`` → ``setupComplete``; ``clientContent`` with ``turnComplete`` → a model turn echoing the
text, then ``turnComplete`` with ``usageMetadata`` (the prompt count re-counts the context, as Google's
does); ``realtimeInput`` audio is collected until ``audioStreamEnd`` (or ``activityEnd``), then answered
with 24 kHz PCM ``inlineData`` and usage in AUDIO tokens.  A non-JSON binary message is echoed back.
Server messages go out as binary frames, as Google's seem to (a rule may ask for text frames).  Words in
a turn's text steer it: ``goaway`` sends ``goAway`` first, ``close:CODE:REASON`` closes the session after
the answer, ``usage:N`` reports N response tokens.

Control API (plain GETs on the same port; answers are JSON):

* ``/_fake/live/sessions`` – every session: ``id, path, query, headers, key, setup, messages`` (``kind``,
  ``text`` or ``size``, ``at``), ``started_at, closed_at, close_code, close_reason`` (the close relay sent;
  null code: the connection dropped without one), ``rule``.
* ``/_fake/live/script?rule=<JSON>`` – append a rule; the first match wins, ``times: N`` uses it N times.
  Match: ``key``, ``path_contains``.  Actions: ``handshake_status`` (+ ``body``: an HTTP answer instead of
  the upgrade), ``close_before_setup: [code, reason]``, ``drop_before_setup: true``, ``server_frames:
  "text"``, ``setup_delay_s``.
* ``/_fake/live/reset``, ``/_fake/live/health``.
"""
from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import threading
import time
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.sync.server import serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

LIVE_PATH_PREFIX = "/ws/google.ai.generativelanguage."
LIVE_PATH_SUFFIXES = (".GenerativeService.BidiGenerateContent", ".GenerativeService.BidiGenerateContentConstrained")
AUDIO_REPLY = b"\x00\x01" * 2400  # 100 ms of 24 kHz 16-bit PCM


class LiveState:
    def __init__(self):
        self.sessions: list[dict] = []
        self.rules: list[dict] = []
        self.ids = itertools.count(1)
        self.lock = threading.Lock()

    def take_rule(self, key, path):
        with self.lock:
            return self._take_rule(key, path)

    def _take_rule(self, key, path):
        for rule in self.rules:
            if rule.get("times", 1) <= 0:
                continue
            if "key" in rule and rule["key"] != key:
                continue
            if "path_contains" in rule and rule["path_contains"] not in path:
                continue
            if "times" in rule:
                rule["times"] -= 1
            return rule
        return None


STATE = LiveState()


def json_response(value, status=200):
    body = json.dumps(value).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                       ("Connection", "close")])  # websockets closes after any answer but a 101
    return Response(status, HTTPStatus(status).phrase, headers, body)


def process_request(connection, request):
    """Control API and scripted handshake answers; None lets the upgrade go ahead."""
    parts = urlsplit(request.path)
    if parts.path.startswith("/_fake/live/"):
        return control(parts.path.removeprefix("/_fake/live/"), parse_qs(parts.query))
    if not (parts.path.startswith(LIVE_PATH_PREFIX) and parts.path.endswith(LIVE_PATH_SUFFIXES)):
        return json_response({"error": {"code": 404, "message": "not a Live path", "status": "NOT_FOUND"}}, 404)
    key = request.headers.get("x-goog-api-key")
    if key is None and parts.path.endswith("Constrained"):
        key = request.headers.get("Authorization", "").removeprefix("Token ") or None
    session = {"id": next(STATE.ids), "path": parts.path, "query": parts.query, "headers": list(request.headers.raw_items()),
               "key": key, "setup": None, "messages": [], "started_at": time.time(), "closed_at": None,
               "close_code": None, "close_reason": None, "rule": None}
    STATE.sessions.append(session)
    rule = STATE.take_rule(key, parts.path) or {}
    session["rule"] = rule or None
    connection.fake_session, connection.fake_rule = session, rule
    if not key:
        return json_response({"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}, 400)
    if "handshake_status" in rule:
        session["closed_at"] = time.time()
        return json_response(rule.get("body") or {"error": {"code": rule["handshake_status"], "message": "scripted",
                                                            "status": "RESOURCE_EXHAUSTED"}}, rule["handshake_status"])
    return None


def control(action, query):
    if action == "sessions":
        return json_response(STATE.sessions)
    if action == "reset":
        STATE.sessions.clear()
        STATE.rules.clear()
        return json_response({"ok": True})
    if action == "script":
        STATE.rules.append(json.loads(query["rule"][0]))
        return json_response({"rules": len(STATE.rules)})
    if action == "health":
        return json_response({"ok": True})
    return json_response({"error": "unknown control action"}, 404)


def handler(connection):
    session, rule = connection.fake_session, connection.fake_rule
    binary = rule.get("server_frames") != "text"

    def reply(message):
        data = json.dumps(message)
        connection.send(data.encode() if binary else data)

    try:
        setup = connection.recv()
        record(session, setup)
        session["setup"] = _json(setup)
        if "close_before_setup" in rule:
            connection.close(*rule["close_before_setup"])
        elif rule.get("drop_before_setup"):
            connection.close_socket()
        else:
            time.sleep(rule.get("setup_delay_s", 0))
            reply({"setupComplete": {}})
            converse(connection, session, reply)
        connection.close()
    except ConnectionClosed:
        pass
    finally:
        session["closed_at"] = session["closed_at"] or time.time()
        received = connection.close_exc.rcvd if connection.close_exc else None
        if received is not None and session["close_code"] is None:
            session["close_code"], session["close_reason"] = received.code, received.reason


def converse(connection, session, reply):
    context_tokens, audio_bytes = 0, 0
    for message in connection:
        record(session, message)
        parsed = _json(message)
        if parsed is None:
            connection.send(message if isinstance(message, bytes) else message.encode())
            continue
        content = parsed.get("clientContent") or parsed.get("client_content")
        realtime = parsed.get("realtimeInput") or parsed.get("realtime_input")
        if content and (content.get("turnComplete") or content.get("turn_complete")):
            text = " ".join(part.get("text", "") for turn in content.get("turns") or () for part in turn.get("parts") or ())
            context_tokens += max(1, len(text.split()))
            if not text_turn(connection, reply, text, context_tokens):
                return
        elif realtime:
            audio = realtime.get("audio") or {}
            audio_bytes += len(base64.urlsafe_b64decode(audio["data"])) if audio.get("data") else 0
            if realtime.get("audioStreamEnd") or realtime.get("audio_stream_end") or "activityEnd" in realtime:
                context_tokens += audio_bytes // 1000
                audio_turn(reply, context_tokens, audio_bytes // 1000)
                audio_bytes = 0


def text_turn(connection, reply, text, context_tokens):
    """Answer a text turn; False when the turn asked to close the session."""
    if "goaway" in text:
        reply({"goAway": {"timeLeft": "5s"}})
    response_tokens = 5
    for word in text.split():
        if word.startswith("usage:"):
            response_tokens = int(word.split(":")[1])
    reply({"serverContent": {"modelTurn": {"role": "model", "parts": [{"text": f"echo: {text}"}]}}})
    reply({"serverContent": {"turnComplete": True}, "usageMetadata": usage(context_tokens, response_tokens, "TEXT")})
    for word in text.split():
        if word.startswith("close:"):
            _, code, reason = word.split(":", 2)
            connection.close(int(code), reason)
            return False
    return True


def audio_turn(reply, context_tokens, input_tokens):
    data = base64.b64encode(AUDIO_REPLY).decode()
    for _ in range(2):
        part = {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}
        reply({"serverContent": {"modelTurn": {"role": "model", "parts": [part]}}})
    reply({"serverContent": {"turnComplete": True}, "usageMetadata": usage(context_tokens, 50, "AUDIO")})


def usage(prompt, response, modality):
    return {"promptTokenCount": prompt, "responseTokenCount": response, "totalTokenCount": prompt + response,
            "promptTokensDetails": [{"modality": modality, "tokenCount": prompt}],
            "responseTokensDetails": [{"modality": modality, "tokenCount": response}]}


def record(session, message):
    entry = {"kind": "binary" if isinstance(message, bytes) else "text", "size": len(message), "at": time.time()}
    if isinstance(message, str):
        entry["text"] = message[:10000]
    session["messages"].append(entry)


def _json(message):
    try:
        parsed = json.loads(message)
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def main(host, port, port_file):
    # The threaded server: each answer is written whole before its socket closes (the asyncio server aborts
    # the connection after a non-101 answer, which can drop the answer).
    with serve(handler, host, port, process_request=process_request, ping_interval=None,
               max_size=16 * 1024 * 1024, compression=None) as server:
        bound = server.socket.getsockname()[1]
        if port_file:
            with open(port_file + ".tmp", "w") as handle:
                handle.write(str(bound))
            os.replace(port_file + ".tmp", port_file)
        server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.fakeupstream.live", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    arguments = parser.parse_args()
    try:
        main(arguments.host, arguments.port, arguments.port_file)
    except KeyboardInterrupt:
        pass
