"""Flask-level tests of the OpenAI door's embeddings (batches of 100, in order, usage summed) and models
(pages followed, thinking variants listed, retrieve), asserting on what reached the upstream."""

import base64
import json
import struct

import pytest

from tests.api.openai_support import MODEL, UPSTREAM_KEY, bearer, make_app, openai_error, sent, usage_rows

EMBED_MODEL = "gemini-embedding-001"


@pytest.fixture
def door(app_factory, mock_upstream):
    app, state = make_app(app_factory, mock_upstream)
    return app, app.test_client(), state


def numbered_answers(state, count, width=3):
    """Script one batchEmbedContents answer per batch whose vectors say which input they embed."""
    for start in range(0, count, 100):
        size = min(100, count - start)
        state.add_rules({"path_contains": ":batchEmbedContents", "times": 1, "body": {
            "embeddings": [{"values": [float(start + offset)] * width} for offset in range(size)],
            "usageMetadata": {"promptTokenCount": size * 2, "totalTokenCount": size * 2}}})


def test_250_inputs_are_three_batches_joined_in_order_with_usage_summed(door):
    app, client, state = door
    numbered_answers(state, 250)
    texts = [f"text {number}" for number in range(250)]
    response = client.post("/v1/embeddings", headers=bearer(),
                           json={"model": EMBED_MODEL, "input": texts, "encoding_format": "float", "dimensions": 3})
    assert response.status_code == 200, response.data
    answer = response.get_json()
    response.close()
    assert [item["index"] for item in answer["data"]] == list(range(250))
    assert [item["embedding"][0] for item in answer["data"]] == [float(number) for number in range(250)]
    assert answer["usage"] == {"prompt_tokens": 500, "total_tokens": 500} and answer["model"] == EMBED_MODEL
    sent_texts = []
    for entry in state.requests:
        assert (entry["path"], entry["key"]) == (f"/v1beta/models/{EMBED_MODEL}:batchEmbedContents", UPSTREAM_KEY)
        requests = json.loads(entry["body_text"])["requests"]
        assert all(item["model"] == f"models/{EMBED_MODEL}" and item["outputDimensionality"] == 3 for item in requests)
        sent_texts += [item["content"]["parts"][0]["text"] for item in requests]
    assert [len(json.loads(entry["body_text"])["requests"]) for entry in state.requests] == [100, 100, 50]
    assert sent_texts == texts
    [row] = usage_rows(app)
    assert (row["door"], row["route"], row["prompt_tokens"], row["total_tokens"]) == ("openai", "batchEmbedContents",
                                                                                       500, 500)


def test_base64_is_little_endian_float32(door):
    app, client, state = door
    state.add_rules({"path_contains": ":batchEmbedContents", "body": {"embeddings": [{"values": [0.5, -1.25]}]}})
    response = client.post("/v1beta/openai/embeddings", headers=bearer(),
                           json={"model": EMBED_MODEL, "input": "x", "encoding_format": "base64"})
    encoded = response.get_json()["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (0.5, -1.25)


def test_a_failing_batch_fails_the_request_in_openai_shape(door):
    app, client, state = door
    numbered_answers(state, 100)
    state.add_rules({"path_contains": ":batchEmbedContents", "status": 400, "body": {"error": {
        "code": 400, "message": "at most 100 requests can be in one batch", "status": "INVALID_ARGUMENT"}}})
    response = client.post("/v1/embeddings", headers=bearer(), json={"model": EMBED_MODEL, "input": ["x"] * 150})
    assert openai_error(response, 400)["message"] == "at most 100 requests can be in one batch"
    assert len(state.requests) == 2
    openai_error(client.post("/v1/embeddings", headers=bearer(), json={"model": EMBED_MODEL, "input": [[1, 2]]}),
                 400, param="input[0]")


def test_models_follow_pages_and_list_thinking_variants(door):
    app, client, state = door
    page_one = {"models": [{"name": f"models/{MODEL}", "supportedGenerationMethods": ["generateContent"],
                            "thinking": True}], "nextPageToken": "page-2"}
    page_two = {"models": [{"name": f"models/{EMBED_MODEL}", "supportedGenerationMethods": ["embedContent"]},
                           {"name": "models/aqa", "supportedGenerationMethods": ["generateAnswer"]}]}
    state.add_rules([{"path_contains": "/models", "query_contains": "pageToken=page-2", "body": page_two},
                     {"path_contains": "/models", "body": page_one}])
    listing = client.get("/v1/models", headers=bearer()).get_json()
    assert listing["object"] == "list"
    ids = [model["id"] for model in listing["data"]]
    assert ids[0] == MODEL and f"{MODEL}-thinking" in ids and f"{MODEL}-nothinking" in ids
    assert ids[-1] == EMBED_MODEL and "aqa" not in ids
    assert all(model["object"] == "model" and model["owned_by"] == "google" for model in listing["data"])
    assert [(entry["path"], entry["query"]) for entry in state.requests] == [
        ("/v1beta/models", "pageSize=1000"), ("/v1beta/models", "pageSize=1000&pageToken=page-2")]


def test_thinking_variants_follow_the_setting(app_factory, mock_upstream):
    app, state = make_app(app_factory, mock_upstream, RELAY_THINKING_VARIANTS="false")
    ids = [model["id"] for model in app.test_client().get("/v1/models", headers=bearer()).get_json()["data"]]
    assert ids and not any(model_id.endswith("-thinking") for model_id in ids)


def test_retrieve_resolves_suffixes_and_names_the_model_asked_for(door):
    app, client, state = door
    model = client.get(f"/v1beta/openai/models/{MODEL}-thinking-low", headers=bearer()).get_json()
    assert model == {"id": f"{MODEL}-thinking-low", "object": "model", "created": 0, "owned_by": "google"}
    assert sent(state)[:3] == (f"/v1beta/models/{MODEL}", "", UPSTREAM_KEY)
    openai_error(client.get("/v1beta/openai/models/bad..id", headers=bearer()), 400, param="model")
