"""Flask-level tests of the OpenAI door's errors, limits and failover: OpenAI's shape and statuses for relay's
own errors and Google's, Retry-After where a retry helps, and the same key pool and limits as native calls."""

import pytest

from tests.api.openai_support import (
    CLIENT_KEY, LIMITED_KEY, MODEL, SECOND_UPSTREAM_KEY, UPSTREAM_KEY, add_limited_key, bearer, chat, make_app,
    openai_error, sent, sse_chunks, usage_rows,
)


@pytest.fixture
def door(app_factory, mock_upstream):
    app, state = make_app(app_factory, mock_upstream)
    return app, app.test_client(), state


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1beta/openai/models"])
def test_a_bad_key_is_401_in_openai_shape(door, path):
    app, client, state = door
    response = client.open(path, method="GET" if path.endswith("models") else "POST",
                           json={"model": MODEL}, headers=bearer("not-a-relay-key"))
    openai_error(response, 401, code="invalid_api_key")
    assert state.requests == []


def test_validation_names_the_param(door):
    app, client, state = door
    error = openai_error(chat(client, temperature=5), 400, param="temperature")
    assert error["type"] == "invalid_request_error"
    openai_error(chat(client, stream=True, n=2), 400, param="n")
    openai_error(client.post("/v1/chat/completions", data=b"{not json", headers=bearer(),
                             content_type="application/json"), 400, param="body")
    assert state.requests == []


def test_unknown_paths_and_methods_answer_in_openai_shape(door):
    app, client, state = door
    openai_error(client.get("/v1/chat/completions", headers=bearer()), 405)
    openai_error(client.post("/v1/responses", json={}, headers=bearer()), 404, code="not_found")
    openai_error(client.get("/v1beta/openai/files", headers=bearer()), 404)


def test_the_allowlist_is_403_and_relay_limits_are_429_with_retry_after(door):
    app, client, state = door
    add_limited_key(app, models=["gemini-2.5-pro"], rpm=1)
    openai_error(chat(client, key=LIMITED_KEY, model="gemini-2.5-flash-thinking"), 403)
    assert chat(client, key=LIMITED_KEY, model="gemini-2.5-pro").status_code == 200
    limited = chat(client, key=LIMITED_KEY, model="gemini-2.5-pro")
    error = openai_error(limited, 429, code="rate_limit_exceeded")
    assert int(limited.headers["Retry-After"]) >= 1 and float(limited.headers["retry-after-ms"]) > 0
    assert "exceeded this relay key's quota" in error["message"]
    assert len(state.requests) == 1


def test_an_unknown_model_is_404_model_not_found(door):
    app, client, state = door
    openai_error(chat(client, model="missing-model"), 404, code="model_not_found")
    assert sent(state)[0] == "/v1beta/models/missing-model:generateContent"


def test_googles_429_becomes_rate_limit_exceeded_with_its_retry_delay(door):
    app, client, state = door
    state.add_rules({"path_contains": "generateContent", "status": 429, "retry_delay": "26s"})
    response = chat(client)
    openai_error(response, 429, code="rate_limit_exceeded")
    assert response.headers["Retry-After"] == "26" and response.headers["retry-after-ms"] == "26000"
    assert UPSTREAM_KEY not in response.get_data(as_text=True)


def test_googles_5xx_is_server_error(door):
    app, client, state = door
    state.add_rules({"path_contains": "generateContent", "status": 500})
    assert openai_error(chat(client), 500)["type"] == "server_error"
    state.add_rules({"path_contains": "batchEmbedContents", "html_502": True})
    assert openai_error(client.post("/v1/embeddings", json={"model": "gemini-embedding-001", "input": "x"},
                                    headers=bearer()), 502)["type"] == "server_error"


def test_an_invalid_passthrough_key_is_401(app_factory, mock_upstream):
    from tests.conftest import UPSTREAM_URL
    from tests.fakeupstream import inprocess

    app = app_factory({})
    state = inprocess.install(mock_upstream, UPSTREAM_URL)
    state.add_rules({"path_contains": "generateContent", "fixture": "errors/from_issues.json#400-api-key-invalid-unary"})
    response = chat(app.test_client(), key="AIzaCallersOwnKey-0000")
    openai_error(response, 401, code="invalid_api_key")
    assert sent(state)[2] == "AIzaCallersOwnKey-0000"


def test_a_rate_limited_key_fails_over_to_the_next(app_factory, mock_upstream):
    app, state = make_app(app_factory, mock_upstream, upstream_keys=(UPSTREAM_KEY, SECOND_UPSTREAM_KEY))
    client = app.test_client()
    state.add_rules({"path_contains": "streamGenerateContent", "status": 429, "times": 1})
    response = chat(client, stream=True)
    assert response.status_code == 200 and sse_chunks(response.data)[-1] == "[DONE]"
    assert {entry["key"] for entry in state.requests} == {UPSTREAM_KEY, SECOND_UPSTREAM_KEY}
    assert usage_rows(app)[0]["door"] == "openai"


def test_googles_in_band_stream_error_ends_the_stream_with_one_error_event(door):
    app, client, state = door
    text = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Partial"}]}}]}
    failure = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    state.add_rules({"path_contains": "streamGenerateContent", "events": [text, failure]})
    chunks = sse_chunks(chat(client, stream=True).data)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Partial"}
    assert chunks[1] == {"error": {"message": "The model is overloaded.", "type": "server_error", "param": None,
                                   "code": None}}
    assert chunks[2:] == ["[DONE]"]


def test_the_models_rule_decides_by_what_the_caller_sent(door):
    app, client, state = door
    for headers in ({"x-goog-api-key": CLIENT_KEY}, {**bearer(), "x-goog-api-client": "google-genai-sdk/3.4.0"}):
        assert "models" in client.get("/v1/models", headers=headers).get_json()
    assert "models" in client.get(f"/v1/models?key={CLIENT_KEY}").get_json()
    assert client.get("/v1/models", headers=bearer()).get_json()["object"] == "list"
    assert client.get("/v1beta/models", headers=bearer()).get_json()["models"]
    assert client.get(f"/v1/models/{MODEL}", headers=bearer()).get_json()["object"] == "model"
    assert client.get(f"/v1/models/{MODEL}", headers={"x-goog-api-key": CLIENT_KEY}).get_json()["name"] == \
        f"models/{MODEL}"
    openai_error(client.get("/v1/models/missing-model", headers=bearer()), 404, code="model_not_found")
    openai_error(client.get("/v1/models", headers=bearer("wrong-key")), 401)
