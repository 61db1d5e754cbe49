"""Tests for relay.api.live through Flask's test client: minting tokens, passthrough minting, the Live path
without an upgrade, and the ``//ws/`` path middleware."""

import json
import time

from relay.live import tokens
from tests.conftest import UPSTREAM_URL

CLIENT_KEY = "client-key-live-routes-Aa11"
MANAGED = {"RELAY_UPSTREAM_KEYS": "up-key-live-routes", "RELAY_API_KEYS": CLIENT_KEY}
LIVE = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


def test_minting_stores_only_a_hash_bound_to_the_key(app_factory, mock_upstream):
    app = app_factory(MANAGED)
    response = app.test_client().post("/v1alpha/auth_tokens", json={"uses": 2}, headers={"x-goog-api-key": CLIENT_KEY})
    assert response.status_code == 200
    body = response.get_json()
    assert body["uses"] == 2 and body["name"].startswith("auth_tokens/") and body["expireTime"].endswith("Z")
    store = app.extensions["relay"].store
    grant = tokens.look_up(store, app.extensions["relay"].auth, body["name"], time.time())
    assert grant.client.kind == "static" and grant.spec.uses == 2
    assert len(mock_upstream.calls) == 0  # relay mints its own tokens: Google is not asked


def test_the_v1_prefix_and_an_empty_body_work_too(app_factory):
    app = app_factory(MANAGED)
    response = app.test_client().post("/v1/v1/auth_tokens", headers={"x-goog-api-key": CLIENT_KEY})
    assert response.status_code == 200 and response.get_json()["uses"] == 1


def test_passthrough_mode_asks_google_with_the_callers_key(app_factory, mock_upstream):
    mock_upstream.post(f"{UPSTREAM_URL}/v1alpha/auth_tokens", json={"name": "auth_tokens/from-google"})
    app = app_factory({"RELAY_UPSTREAM_KEYS": ""})
    response = app.test_client().post("/v1alpha/auth_tokens", json={"uses": 1}, headers={"x-goog-api-key": "AIza-own"})
    assert response.get_json() == {"name": "auth_tokens/from-google"}
    [call] = mock_upstream.calls
    assert call.request.headers["x-goog-api-key"] == "AIza-own" and json.loads(call.request.body) == {"uses": 1}


def test_the_live_path_without_an_upgrade_says_what_it_is(app_factory, google_error):
    client = app_factory(MANAGED).test_client()
    for path in (LIVE, "/v1" + LIVE, "/v1/" + LIVE):  # the last one is /v1//ws/...
        error = google_error(client.get(path), 400, "INVALID_ARGUMENT")
        assert "WebSocket" in error["message"], path
