"""This module provides the unit tests of the resource-affinity plugin: which caches and files a request names."""

import pytest

from relay.plugins import PluginContext
from relay.plugins.affinity import ResourceAffinity, file_reference, file_uris

GOOGLE = "https://generativelanguage.googleapis.com"


def part(uri, spelling="camel"):
    if spelling == "snake":
        return {"file_data": {"file_uri": uri, "mime_type": "application/pdf"}}
    return {"fileData": {"fileUri": uri, "mimeType": "application/pdf"}}


def pinned(body, method="generateContent"):
    return ResourceAffinity().pinned_resources(PluginContext(method=method), body)


@pytest.mark.parametrize("uri", [
    f"{GOOGLE}/v1beta/files/abc-123", f"{GOOGLE}/v1/files/abc-123", f"{GOOGLE}/v1alpha/files/abc-123",
    f"{GOOGLE}/v1main/files/abc-123", "files/abc-123", f"{GOOGLE}/v1beta/files/abc-123:download?alt=media",
    f"{GOOGLE}/v1beta/files/abc-123:download",
])
def test_gemini_file_uris_name_the_file(uri):
    assert file_reference(uri) == "files/abc-123"


@pytest.mark.parametrize("uri", [
    "https://www.youtube.com/watch?v=9hE5-98ZeCg", "gs://bucket/files/abc", "https://example.com/report.pdf",
    "https://example.com/files/abc", "http://example.com/v1beta/files/abc", "data:application/pdf;base64,AAAA",
    "", "youtube.com/files/abc",
])
def test_other_uris_are_left_alone(uri):
    assert file_reference(uri) is None
    assert pinned({"contents": [{"parts": [part(uri)]}]}) == []


HOSTILE = [
    "files/../x", "files/abc/../def", "files/abc\x00", "files/abc\n", "files/a\u202eb", "files/" + "a" * 41,
    "files/ABC", "Files/abc", " files/abc", "files/%2e%2e%2fx", "%66iles/abc", "files%2Fabc", "\uff46iles/abc",
    "files/abc?x=1", "files/abc#x", "files/", "files/abc:delete",
    f"{GOOGLE}.evil.com/v1beta/files/abc", f"{GOOGLE}@evil.com/v1beta/files/abc", f"{GOOGLE}\\@evil.com/v1beta/files/abc",
    f"{GOOGLE}/v1beta/files/abc/../def", f"{GOOGLE}/v1beta/files/abc%2F..%2Fdef", f"{GOOGLE}/v1beta/files/ABC",
    f"{GOOGLE}/v2/files/abc", f"{GOOGLE}/v1beta/files/abc?key=other", f"{GOOGLE}:443/v1beta/files/abc",
    "https://GENERATIVELANGUAGE.googleapis.com/v1beta/files/abc", "http://generativelanguage.googleapis.com/v1beta/files/abc",
    "https://generativelanguage%2Egoogleapis.com/v1beta/files/abc", "https://evil.com/?u=generativelanguage.googleapis.com",
    f"{GOOGLE}/v1beta/cachedContents/abc", f"{GOOGLE}/upload/v1beta/files/abc",
]


@pytest.mark.parametrize("uri", HOSTILE)
def test_uris_that_only_look_like_gemini_files_are_returned_as_written(uri):
    """relay refuses these (ownership's name check): never treated as another file, never passed on unpinned."""
    assert file_reference(uri) == uri
    assert pinned({"contents": [{"parts": [part(uri)]}]}) == [("files", uri)]


def test_file_uris_are_found_anywhere_in_the_body_in_order():
    body = {
        "systemInstruction": {"parts": [part("files/sys")]},
        "contents": [
            {"role": "user", "parts": [{"text": "compare"}, part("files/one"), part("files/two", "snake")]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {},
                                                            "parts": [part("files/nested")]}}]},
        ],
        "generationConfig": {"temperature": 0},
    }
    assert file_uris(body) == ["files/sys", "files/one", "files/two", "files/nested"]
    assert pinned(body) == [("files", f"files/{name}") for name in ("sys", "one", "two", "nested")]


def test_both_spellings_are_taken_when_a_body_has_both():
    both = {"fileData": {"fileUri": "https://www.youtube.com/watch?v=x", "file_uri": "files/hidden"},
            "file_data": {"fileUri": "files/other"}}
    assert pinned({"contents": [{"parts": [both]}]}) == [("files", "files/hidden"), ("files", "files/other")]
    caches = {"cachedContent": "cachedContents/a", "cached_content": "b"}
    assert pinned(caches) == [("cachedContents", "cachedContents/a"), ("cachedContents", "cachedContents/b")]


def test_caches_and_files_together_without_repeats():
    body = {"cachedContent": "cachedContents/c1",
            "contents": [{"parts": [part("files/f1"), part(f"{GOOGLE}/v1beta/files/f1"), part("files/f2")]}]}
    assert pinned(body) == [("cachedContents", "cachedContents/c1"), ("files", "files/f1"), ("files", "files/f2")]
    assert pinned(body, method="streamGenerateContent") == pinned(body)


def test_the_legacy_count_tokens_request_is_searched():
    legacy = {"generateContentRequest": {"model": "models/m", "cachedContent": "cachedContents/c",
                                         "contents": [{"parts": [part(f"{GOOGLE}/v1/files/f")]}]}}
    assert pinned(legacy, method="countTokens") == [("cachedContents", "cachedContents/c"), ("files", "files/f")]
    plain = {"contents": [{"parts": [part("files/f")]}], "cachedContent": "cachedContents/c"}
    assert pinned(plain, method="countTokens") == [("cachedContents", "cachedContents/c"), ("files", "files/f")]


def test_files_count_on_every_method_and_caches_only_where_they_can_be_named():
    embed = {"content": {"parts": [part("files/f")]}, "cachedContent": "cachedContents/c"}
    assert pinned(embed, method="embedContent") == [("files", "files/f")]
    cache_create = {"model": "models/m", "contents": [{"parts": [part("files/f")]}]}
    assert pinned(cache_create, method="cachedContents.create") == [("files", "files/f")]


def test_a_batch_input_file_is_a_reference():
    batch = {"batch": {"displayName": "b", "inputConfig": {"fileName": "files/input"}}}
    assert pinned(batch, method="batchGenerateContent") == [("files", "files/input")]
    snake = {"batch": {"input_config": {"file_name": "files/../x"}}}
    assert pinned(snake, method="batchGenerateContent") == [("files", "files/../x")]
    inline = {"batch": {"inputConfig": {"requests": {"requests": [
        {"request": {"contents": [{"parts": [part("files/in-a-request")]}]}}]}}}}
    assert pinned(inline, method="batchGenerateContent") == [("files", "files/in-a-request")]


def test_deep_bodies_do_not_recurse():
    body = {"contents": []}
    node = body["contents"]
    for _ in range(5000):
        child = []
        node.append(child)
        node = child
    node.append(part("files/deep"))
    assert pinned(body) == [("files", "files/deep")]
