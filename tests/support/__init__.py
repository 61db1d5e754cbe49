"""This package provides what test modules share: the paths they read, the constants they build apps and requests
from (here), Google's error bodies (``google``), ownership's fake upstream (``ownership``), real servers.

A module keeps a constant of its own only where its value differs on purpose (a key per suite, a model the
fake upstream has recordings for); the ones below are the same everywhere they are used.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "gemini"
ERRORS = FIXTURES / "errors"  # Google's recorded error bodies

# The upstream conftest's app_factory points apps at (RELAY_UPSTREAM_URL), and mock_upstream answers for.
UPSTREAM_URL = "http://upstream.test"

MODEL = "gemini-2.5-flash"
EMBED_MODEL = "gemini-embedding-001"
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent"

# Managed mode: relay's upstream key, a client key callers present, and (passthrough) a caller's own Google key.
UPSTREAM_KEY = "AIzaUpstreamKey-0123456789abcdefXYZ"
CLIENT_KEY = "relay-client-key-0123456789abcdef"
CALLER_KEY = "AIzaCallersOwnKey-fedcba9876543210"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
MANAGED = {"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY}
AUTH = {"x-goog-api-key": CLIENT_KEY}

# Request bodies and answers.
BODY = b'{"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}'
REQUEST = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
ANSWER = {"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}]}
EMPTY_ANSWER = b'{\n  "candidates": []\n}\n'  # Google's bytes: 2-space JSON, a trailing newline
GOOGLE_JSON = "application/json; charset=UTF-8"

START = 1_800_000_000.0  # a fixed "now" for FakeClock
