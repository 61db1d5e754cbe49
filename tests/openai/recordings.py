"""This module provides the recorded Gemini traffic the OpenAI translation tests replay (tests/fixtures/gemini).

``response(name)`` is a unary answer, ``request(name)`` the body that was sent, ``events(name)`` a stream's
parsed events: from a normalized recording's ``stream_chunks``, or from a ``.sse.txt`` / ``.chunks.txt``
file (SSE ``data:`` lines or one JSON document per line).
"""

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gemini"


def load(name):
    return json.loads((FIXTURES / name).read_text())


def response(name, interaction=0):
    """The parsed answer of a unary recording; a bare vercel-ai body is its own answer."""
    recording = load(name)
    if "interactions" not in recording:
        return recording
    return recording["interactions"][interaction]["response"]["body_json"]


def request(name, interaction=0):
    return load(name)["interactions"][interaction]["request"]["body_json"]


def events(name, interaction=0):
    """The parsed events of a recorded stream."""
    path = FIXTURES / name
    if path.suffix == ".json":
        return load(name)["interactions"][interaction]["response"]["stream_chunks"]
    parsed = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("data:"):
            line = line[len("data:"):].strip()
        if line:
            parsed.append(json.loads(line))
    return parsed
