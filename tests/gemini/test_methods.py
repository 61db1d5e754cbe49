"""Tests for relay.gemini.methods: the one table of Gemini methods and the lookups built on it."""

import pytest

from relay.gemini.methods import METHODS, MODEL_METHODS, accounts_usage, generate_request, method_named


def test_model_methods_are_the_routes_relay_serves():
    assert MODEL_METHODS == ("generateContent", "streamGenerateContent", "countTokens", "embedContent",
                             "batchEmbedContents", "predict", "predictLongRunning", "batchGenerateContent",
                             "asyncBatchEmbedContent")


def test_resource_methods_name_their_kind_and_media():
    assert {name: method.resource_kind for name, method in METHODS.items() if method.resource_kind} == {
        "predictLongRunning": "operations", "batchGenerateContent": "batches", "asyncBatchEmbedContent": "batches",
        "files.upload": "files", "files.uploadChunk": "uploads", "files.download": "files", "files.list": "files",
        "files.get": "files", "files.delete": "files", "batches.list": "batches", "batches.get": "batches",
        "batches.cancel": "batches", "batches.delete": "batches", "operations.get": "operations"}
    assert {name: method.media for name, method in METHODS.items() if method.media} == {
        "files.upload": "upload", "files.uploadChunk": "upload", "files.download": "download"}
    # Batches are charged when relay first sees them finished; media answers carry no usageMetadata.
    assert not any(accounts_usage(name) for name in ("batchGenerateContent", "asyncBatchEmbedContent", "predict",
                                                     "predictLongRunning", "files.download", "operations.get"))


def test_only_stream_generate_content_streams():
    assert [name for name, method in METHODS.items() if method.streams] == ["streamGenerateContent"]


@pytest.mark.parametrize("name, where", [
    ("generateContent", "top"), ("streamGenerateContent", "top"), ("embedContent", "top"),
    ("countTokens", "top"), ("batchEmbedContents", "items"), ("models.list", None),
])
def test_where_a_body_names_its_model(name, where):
    assert method_named(name).body_model == where


def test_generate_request_finds_the_body_or_the_legacy_inner_request():
    body = {"contents": []}
    assert generate_request("generateContent", body) is body
    inner = {"contents": [], "model": "models/x"}
    assert generate_request("countTokens", {"generateContentRequest": inner}) is inner
    assert generate_request("countTokens", {"generate_content_request": inner}) is inner
    assert generate_request("countTokens", {"contents": []}) is None
    assert generate_request("countTokens", {"generateContentRequest": "not a dict"}) is None
    assert generate_request("embedContent", {"content": {}}) is None
    assert generate_request("noSuchMethod", body) is None


def test_token_counts_and_listings_are_not_charged_but_unknown_resources_are_read():
    assert accounts_usage("generateContent") and accounts_usage("batchEmbedContents")
    assert not accounts_usage("countTokens") and not accounts_usage("models.list")
    assert accounts_usage("cachedContents.create")  # a cache's creation reports its tokens


def test_reading_or_changing_a_cache_charges_nothing():
    for action in ("list", "get", "patch", "delete"):
        assert not accounts_usage(f"cachedContents.{action}")
