"""This module provides the ownership tests' fake Google and apps (tests/test_ownership.py, test_ownership_files.py).

Managed mode with three upstream keys and two client keys; the fake answers cachedContents and generate calls
and remembers which upstream key made each one.  ``google``, ``app`` and ``client`` are fixtures: a test module
imports them by name.
"""

import json
import re
import time
from datetime import datetime, timezone

import pytest

from tests.support import MODEL, UPSTREAM_URL

UPSTREAM_KEYS = ("up-key-aaaa-1111", "up-key-bbbb-2222", "up-key-cccc-3333")
OWNER, STRANGER = "client-key-owner-7Qm2", "client-key-stranger-9Zx4"
CONTENTS = [{"role": "user", "parts": [{"text": "Summarise the transcript."}]}]
GENERATED = {
    "candidates": [{"content": {"parts": [{"text": "A summary."}], "role": "model"}, "finishReason": "STOP"}],
    "usageMetadata": {"promptTokenCount": 10, "cachedContentTokenCount": 8, "candidatesTokenCount": 2,
                      "totalTokenCount": 12},
    "modelVersion": MODEL,
}


def rfc3339(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


class FakeGoogle:
    """Just enough of Google's cachedContents and generate endpoints, remembering which key made each call."""

    def __init__(self, mock):
        self.calls = []  # (method, path, upstream key, body)
        self.caches = {}
        self.count = 0
        pattern = re.compile(re.escape(UPSTREAM_URL) + r"/v1beta/.*")
        for method in ("GET", "POST", "PATCH", "DELETE"):
            mock.add_callback(method, pattern, callback=lambda request: self.answer(request))

    def answer(self, request):
        path = request.path_url.split("?")[0]
        body = json.loads(request.body) if request.body else None
        key = request.headers.get("x-goog-api-key")
        self.calls.append((request.method, path, key, body))
        if path == "/v1beta/cachedContents" and request.method == "POST":
            self.count += 1
            name = f"cachedContents/cache{self.count}"
            ttl = float(body.get("ttl", "3600s").rstrip("s"))
            self.caches[name] = {"name": name, "model": body["model"], "createTime": rfc3339(time.time()),
                                 "expireTime": rfc3339(time.time() + ttl), "displayName": "",
                                 "usageMetadata": {"totalTokenCount": 323383}}
            return 200, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(self.caches[name], indent=2)
        if path == "/v1beta/cachedContents":
            return 200, {}, json.dumps({"cachedContents": list(self.caches.values())})
        if path.startswith("/v1beta/cachedContents/"):
            name = path.removeprefix("/v1beta/")
            if request.method == "DELETE":
                self.caches.pop(name, None)
                return 200, {}, "{}\n"
            if request.method == "PATCH":
                self.caches[name] = dict(self.caches[name], expireTime=rfc3339(time.time() + 7200))
            return 200, {}, json.dumps(self.caches[name], indent=2)
        if path.endswith(":streamGenerateContent"):
            event = json.dumps(GENERATED, separators=(",", ": "))
            return 200, {"Content-Type": "text/event-stream"}, f"data: {event}\r\n\r\n"
        if path.endswith(":countTokens"):
            return 200, {}, json.dumps({"totalTokens": 10})
        return 200, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(GENERATED, indent=2)

    def keys_for(self, path_fragment):
        return [key for _, path, key, _ in self.calls if path_fragment in path]


def make_app(app_factory, **environ):
    """The ownership app, refusing an open relay as start-up does; ``RELAY_...=None`` removes a setting."""
    return app_factory({"RELAY_UPSTREAM_KEYS": ",".join(UPSTREAM_KEYS), "RELAY_API_KEYS": f"{OWNER},{STRANGER}",
                        **environ}, check_open=True)


@pytest.fixture
def google(mock_upstream):
    return FakeGoogle(mock_upstream)


@pytest.fixture
def app(app_factory, google):
    return make_app(app_factory)


@pytest.fixture
def client(app):
    return app.test_client()


def as_client(key):
    return {"x-goog-api-key": key, "Content-Type": "application/json"}


def create_cache(client, key=OWNER, ttl="300s"):
    response = client.post("/v1beta/cachedContents", headers=as_client(key),
                           json={"model": f"models/{MODEL}", "contents": CONTENTS, "ttl": ttl})
    assert response.status_code == 200, response.data
    return response.get_json()["name"]
