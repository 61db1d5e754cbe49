"""This module provides tests of the embeddings translation: batches of 100, float and base64 answers."""

import array
import base64
import struct

import pytest

from relay.errors import Internal
from relay.openai.embeddings import BATCH_SIZE, to_embeddings_response, translate_embeddings
from relay.schemas import validate_body
from tests.openai import recordings

BATCH = "embeddings/llm-gemini__test_embedding_batch.json"


def test_a_list_translates_to_the_recorded_batch_request():
    call = translate_embeddings({"model": "text-embedding-3-small", "input": ["First text", "Second text"],
                                 "dimensions": 768}, upstream_model="gemini-embedding-2")
    assert call.batches == [recordings.request(BATCH)]
    assert (call.model, call.encoding_format, call.count) == ("text-embedding-3-small", "float", 2)


def test_a_string_is_one_input_and_the_model_defaults_to_the_requests():
    call = translate_embeddings({"model": "models/gemini-embedding-001", "input": "hello", "user": "u1"})
    assert call.batches == [{"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello"}]}}]}]


@pytest.mark.parametrize("count, sizes", [(1, [1]), (100, [100]), (101, [100, 1]), (2048, [100] * 20 + [48])])
def test_inputs_split_at_100_per_batch_in_order(count, sizes):
    texts = [f"text {index}" for index in range(count)]
    call = translate_embeddings({"model": "gemini-embedding-001", "input": texts})
    assert [len(batch["requests"]) for batch in call.batches] == sizes
    assert [request["content"]["parts"][0]["text"] for batch in call.batches for request in batch["requests"]] == texts
    for batch in call.batches:
        validate_body("batchEmbedContents", batch)
    assert BATCH_SIZE == 100


def test_the_recorded_answer_as_floats():
    answer = recordings.response(BATCH)
    call = translate_embeddings({"model": "text-embedding-3-small", "input": ["First text", "Second text"]})
    assert to_embeddings_response(call, [answer]) == {
        "object": "list", "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": index, "embedding": embedding["values"]}
                 for index, embedding in enumerate(answer["embeddings"])],
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }


def test_base64_is_little_endian_float32_the_sdk_decodes():
    answer = recordings.response(BATCH)
    call = translate_embeddings({"model": "m", "input": ["First text", "Second text"], "encoding_format": "base64"})
    data = to_embeddings_response(call, [answer])["data"]
    raw = base64.b64decode(data[1]["embedding"])
    values = answer["embeddings"][1]["values"]
    assert list(struct.unpack(f"<{len(values)}f", raw)) == pytest.approx(values, rel=1e-6)
    decoded = array.array("f")  # what openai-python does without numpy (native order: little-endian here)
    decoded.frombytes(raw)
    assert decoded.tolist() == list(struct.unpack(f"<{len(values)}f", raw))


def test_indexes_run_across_batches_and_usage_sums():
    call = translate_embeddings({"model": "m", "input": [f"t{index}" for index in range(150)]})
    answers = [{"embeddings": [{"values": [float(index)]} for index in range(100)], "usageMetadata": {"promptTokenCount": 300}},
               {"embeddings": [{"values": [float(index)]} for index in range(100, 150)]}]
    response = to_embeddings_response(call, answers)
    assert [(item["index"], item["embedding"]) for item in response["data"]] == [(index, [float(index)]) for index in range(150)]
    assert response["usage"] == {"prompt_tokens": 300, "total_tokens": 300}


def test_a_short_answer_is_an_error_not_a_misnumbered_list():
    call = translate_embeddings({"model": "m", "input": ["a", "b"]})
    with pytest.raises(Internal):
        to_embeddings_response(call, [{"embeddings": [{"values": [0.5]}]}])
