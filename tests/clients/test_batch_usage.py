"""Tests of batch usage (relay.clients.batch_usage): when a batch is finished, which output to read, how usages add
up, and a results file read line by line as it streams by, in chunks that split lines anywhere."""

import orjson
import pytest

from relay.clients.batch_usage import ResultsUsage, inline_usages, is_finished, output_of, sum_usage
from relay.clients.usage import token_counts

FIRST = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15,
         "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}]}
SECOND = {"promptTokenCount": 7, "candidatesTokenCount": 3, "thoughtsTokenCount": 4, "totalTokenCount": 14,
          "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 5}, {"modality": "IMAGE", "tokenCount": 2}]}


@pytest.mark.parametrize("operation, finished", [
    ({"name": "batches/a", "metadata": {"state": "BATCH_STATE_RUNNING"}}, False),
    ({"name": "batches/a", "metadata": {"state": "BATCH_STATE_SUCCEEDED"}}, True),
    ({"name": "batches/a", "metadata": {"state": "BATCH_STATE_CANCELLED"}}, True),
    ({"name": "batches/a", "metadata": {"state": "JOB_STATE_FAILED"}}, True),
    ({"name": "batches/a", "done": True}, True),
    ({"name": "batches/a", "done": "true"}, False),
    ({"name": "batches/a", "metadata": "odd"}, False),
])
def test_a_batch_is_finished_when_done_or_terminal(operation, finished):
    assert is_finished(operation) is finished


def test_the_output_is_read_once_though_google_repeats_it():
    output = {"inlinedResponses": {"inlinedResponses": [{"response": {"usageMetadata": FIRST}},
                                                        {"error": {"code": 3}}, {"response": {}}, "odd"]}}
    operation = {"metadata": {"output": output}, "response": dict(output, **{"@type": "x"})}
    assert inline_usages(output_of(operation)) == [FIRST]
    assert output_of({"metadata": {"output": output}}) == output
    assert output_of({"metadata": {}}) == {} and inline_usages({}) == []


def test_usages_add_up_counts_and_modalities():
    total = sum_usage([FIRST, SECOND, {"promptTokenCount": 6}])  # an embedding: no total, its prompt is it
    counts = token_counts(total)
    assert (counts["prompt_tokens"], counts["candidates_tokens"], counts["thoughts_tokens"],
            counts["total_tokens"]) == (23, 8, 4, 35)
    assert counts["modalities"]["prompt"] == {"TEXT": 15, "IMAGE": 2}
    assert token_counts(sum_usage([]))["total_tokens"] == 0
    assert sum_usage([{"totalTokenCount": True, "promptTokenCount": "9"}])["totalTokenCount"] == 0


def test_a_results_file_is_summed_line_by_line_whatever_the_chunks():
    lines = [orjson.dumps({"key": "a", "response": {"candidates": [], "usageMetadata": FIRST}}),
             orjson.dumps({"key": "b", "error": {"code": 13, "message": "failed"}}),
             orjson.dumps({"key": "c", "response": {"usageMetadata": SECOND}})]
    content = b"\n".join(lines) + b"\n"
    for size in (1, 7, 64, len(content)):
        reader = ResultsUsage()
        for start in range(0, len(content), size):
            reader.feed(content[start:start + size])
        assert reader.finish()["totalTokenCount"] == 29
    reader = ResultsUsage()
    reader.feed(content.rstrip(b"\n"))  # no newline at the end: the last line still counts
    assert reader.finish()["totalTokenCount"] == 29


def test_a_results_file_that_cannot_be_read_whole_accounts_nothing():
    reader = ResultsUsage()
    reader.feed(b'{"key": "a", "response": {"usageMetadata": {"totalTokenCount": 3}}}\n{"key": trunc')
    assert reader.finish() is None
