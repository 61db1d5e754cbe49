"""Tests for relay/gemini/parameters.py: which query parameters and header values relay passes on, widens,
strips or refuses (pure functions; the views' use of them is in tests/pipeline/test_request.py)."""

import pytest

from relay.errors import InvalidArgument
from relay.gemini.parameters import field_mask, forwarded_header_values, forwarded_query

ACCOUNTED = ("generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents")
SECRET = "sk-relay-secret-0123456789"


@pytest.mark.parametrize("name", ["key", "$key", "KEY", "Key", " key", "key ", "$$key", "access_token",
                                  "$access_token", "ACCESS_TOKEN", "oauth_token", "$oauth_token", "bearer_token",
                                  "$bearer_token"])
@pytest.mark.parametrize("managed", [True, False])
def test_every_credential_spelling_is_stripped(name, managed):
    pairs = [("pageSize", "5"), (name, SECRET), (name, SECRET + "2"), ("pageToken", "t")]

    assert forwarded_query(pairs, "models.list", managed) == [("pageSize", "5"), ("pageToken", "t")]


@pytest.mark.parametrize("pairs, method", [
    ([("alt", "proto")], "generateContent"),
    ([("alt", "media")], "models.get"),
    ([("$alt", "proto")], "streamGenerateContent"),
    ([("alt", "JSON")], "generateContent"),
    ([("alt", "")], "generateContent"),
    ([("alt", "sse")], "generateContent"),
    ([("alt", "sse")], "countTokens"),
    ([("alt", "sse")], "models.list"),
    ([("alt", "sse;enum-encoding=int")], "streamGenerateContent"),
    ([("alt", "json; enum-encoding=int")], "generateContent"),
    ([("alt", "sse"), ("alt", "json")], "streamGenerateContent"),
    ([("alt", "sse"), ("$alt", "json;enum-encoding=int")], "streamGenerateContent"),
    ([("$alt", "json"), ("alt", "proto")], "generateContent"),
    ([("ALT", "json")], "generateContent"),
    ([("Alt", "sse")], "streamGenerateContent"),
    ([(" alt", "sse")], "streamGenerateContent"),
    ([("$$alt", "sse")], "streamGenerateContent"),
    ([("callback", "cb")], "generateContent"),
    ([("$callback", "cb")], "models.list"),
    ([("$ct", "application/x-protobuf")], "generateContent"),
    ([("$httpMethod", "DELETE")], "cachedContents.get"),
    ([("$apiVersion", "v1alpha")], "generateContent"),
    ([("uploadType", "media")], "cachedContents.create"),
    ([("upload_protocol", "raw")], "generateContent"),
    ([("uploadType", "media")], "files.upload"),  # simple media uploads are not relayed
    ([("UploadType", "multipart")], "files.upload"),
    ([("upload_protocol", "resumable")], "files.get"),
    ([("alt", "media")], "files.get"),
    ([("alt", "media")], "generateContent"),
    ([("alt", "proto")], "files.download"),
    ([("$.xgafv", "1")], "generateContent"),
    ([("$apiFormat", "1")], "generateContent"),
    ([("Fields", "candidates")], "generateContent"),
    ([("FIELDS", "candidates")], "generateContent"),
    ([("PrettyPrint", "false")], "generateContent"),
], ids=repr)
def test_what_relay_cannot_read_is_refused(pairs, method):
    with pytest.raises(InvalidArgument) as raised:
        forwarded_query(pairs, method, managed=True)

    error = raised.value.to_dict()["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    [violation] = error["details"][0]["fieldViolations"]
    assert violation["field"] in {name for name, _ in pairs} | {"alt"}


@pytest.mark.parametrize("pairs, method", [
    ([("alt", "json")], "generateContent"),
    ([("$alt", "json;enum-encoding=int")], "generateContent"),
    ([("$alt", "json;enum-encoding=int")], "streamGenerateContent"),
    ([("alt", "sse")], "streamGenerateContent"),
    ([("alt", "sse"), ("alt", "sse")], "streamGenerateContent"),
    ([("alt", "sse"), ("$alt", "sse")], "streamGenerateContent"),
    ([("prettyPrint", "false")], "generateContent"),
    ([("$prettyPrint", "true")], "streamGenerateContent"),
    ([("$.xgafv", "2")], "generateContent"),
    ([("pageSize", "50"), ("pageToken", "abc"), ("$alt", "json;enum-encoding=int")], "models.list"),
    ([("updateMask", "ttl")], "cachedContents.patch"),
    ([("futureParameter", "x"), ("Key2", "y")], "generateContent"),
    ([("uploadType", "multipart")], "files.upload"),
    ([("uploadType", "resumable"), ("upload_protocol", "resumable")], "files.upload"),
    ([("upload_id", "abc"), ("upload_protocol", "resumable")], "files.uploadChunk"),
    ([("alt", "media")], "files.download"),
], ids=repr)
def test_what_relay_can_read_is_passed_on_as_sent(pairs, method):
    assert forwarded_query(pairs, method, managed=True) == pairs


@pytest.mark.parametrize("name", ["quotaUser", "$quotaUser", "userIp", "userProject", "$userProject"])
def test_quota_and_billing_attribution_is_relays_in_managed_mode_and_the_callers_in_passthrough(name):
    pairs = [(name, "someone-else"), ("alt", "json")]

    assert forwarded_query(pairs, "generateContent", managed=True) == [("alt", "json")]
    assert forwarded_query(pairs, "generateContent", managed=False) == pairs
    headers = {"X-Goog-User-Project": "someone-else", "User-Agent": "ua"}
    assert forwarded_header_values(dict(headers), "generateContent", managed=True) == {"User-Agent": "ua"}
    assert forwarded_header_values(dict(headers), "generateContent", managed=False) == headers


@pytest.mark.parametrize("mask, sent", [
    ("candidates", "candidates,usageMetadata"),
    ("candidates.content.parts.text", "candidates.content.parts.text,usageMetadata"),
    ("candidates(content(parts(text)))", "candidates(content(parts(text))),usageMetadata"),
    ("candidates/content", "candidates/content,usageMetadata"),
    ("usageMetadata.promptTokenCount", "usageMetadata.promptTokenCount,usageMetadata"),
    ("usageMetadata(promptTokenCount)", "usageMetadata(promptTokenCount),usageMetadata"),
    ("usageMetadata/totalTokenCount", "usageMetadata/totalTokenCount,usageMetadata"),
    ("candidates(usageMetadata)", "candidates(usageMetadata),usageMetadata"),
    ("candidates,USAGEMETADATA", "candidates,USAGEMETADATA,usageMetadata"),
    ("candidates, usageMetadata", "candidates, usageMetadata"),
    ("candidates,usage_metadata", "candidates,usage_metadata"),
    ("usageMetadata", "usageMetadata"),
    ("*", "*"),
    ("modelVersion,*", "modelVersion,*"),
    ("", ""),
    ("  ", "  "),
], ids=repr)
@pytest.mark.parametrize("method", ACCOUNTED)
def test_a_field_mask_always_keeps_usage_metadata(method, mask, sent):
    assert field_mask(mask, method, "fields") == sent
    assert forwarded_query([("fields", mask), ("$fields", mask)], method, True) == [("fields", sent), ("$fields", sent)]
    headers = forwarded_header_values({"X-Goog-FieldMask": mask}, method, managed=True)
    assert headers == {"X-Goog-FieldMask": sent}


@pytest.mark.parametrize("mask", ["candidates(content", "candidates)(usageMetadata", "candidates),(", "a((b)",
                                  "candidates;usageMetadata", 'candidates"', "candidates\\,usageMetadata",
                                  "candidates\n,usageMetadata", "candidates&alt=proto", "candidates%2CusageMetadata",
                                  "`usageMetadata`"], ids=repr)
def test_a_field_mask_relay_cannot_read_safely_is_refused(mask):
    # Appended to an unclosed group, usageMetadata would be a subfield, or hidden behind syntax relay does not parse.
    with pytest.raises(InvalidArgument):
        field_mask(mask, "generateContent", "fields")
    with pytest.raises(InvalidArgument):
        forwarded_header_values({"X-Goog-FieldMask": mask}, "streamGenerateContent", managed=False)


@pytest.mark.parametrize("method", ["countTokens", "models.list", "models.get", "cachedContents.get",
                                    "cachedContents.list", "cachedContents.delete"])
def test_a_field_mask_is_passed_on_where_relay_reads_nothing_of_the_answer(method):
    for mask in ("totalTokens", "name", "models(name)", "weird;mask"):
        assert field_mask(mask, method, "fields") == mask


@pytest.mark.parametrize("method", ["cachedContents.create", "cachedContents.patch"])
def test_no_field_mask_where_relay_records_the_whole_answer(method):
    for mask in ("name", "*", ""):
        with pytest.raises(InvalidArgument):
            field_mask(mask, method, "fields")
