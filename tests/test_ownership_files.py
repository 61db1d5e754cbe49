"""This module provides the tests of routing by owned resources through the app.

Files are recorded directly in the store, as the Files routes will record them; caches are created through
relay.  Managed mode, three upstream keys, two client keys, the upstream mocked by `responses`.
"""

import json
import time

import pytest

from relay.store import StoreError
from relay.upstream.pool import key_id
from tests.plugins.test_affinity import HOSTILE
from tests.support import MODEL
from tests.support import ownership
from tests.support.ownership import OWNER, STRANGER, UPSTREAM_KEYS, as_client, create_cache, make_app

google, app, client = ownership.google, ownership.app, ownership.client  # the shared fixtures

GOOGLE = "https://generativelanguage.googleapis.com"


def own_file(app, file_id, upstream_key, client_key=OWNER, ttl=3600):
    """Record a file as the upload route will: created by ``client_key``'s client under ``upstream_key``."""
    services = app.extensions["relay"]
    owner = {"upstream": "google", "key_id": key_id("google", upstream_key),
             "client": services.auth.authenticate(client_key).name, "resource": {"name": f"files/{file_id}"}}
    services.store.put_resource("files", f"files/{file_id}", owner, time.time() + ttl)


def file_part(uri):
    return {"fileData": {"fileUri": uri, "mimeType": "application/pdf"}}


def with_files(*uris, **extra):
    return {"contents": [{"role": "user", "parts": [{"text": "Compare these."}, *map(file_part, uris)]}], **extra}


def generate(client, body, key=OWNER, method="generateContent", query=""):
    return client.post(f"/v1beta/models/{MODEL}:{method}{query}", headers=as_client(key), json=body)


def error_of(response, code, status):
    assert response.status_code == code, response.data
    error = json.loads(response.data)["error"]
    assert error["status"] == status
    return error


# -- routing -----------------------------------------------------------------------------------------------

def test_a_request_using_files_goes_to_the_key_that_holds_them(app, client, google):
    own_file(app, "doc-1", UPSTREAM_KEYS[1])
    own_file(app, "doc-2", UPSTREAM_KEYS[1])
    body = with_files(f"{GOOGLE}/v1beta/files/doc-1", f"{GOOGLE}/v1/files/doc-2",
                      systemInstruction={"parts": [file_part("files/doc-1")]})
    for _ in range(6):
        assert generate(client, body).status_code == 200
    assert set(google.keys_for(":generateContent")) == {UPSTREAM_KEYS[1]}
    assert all(sent == body for _, _, _, sent in google.calls), "the body reaches Google as the caller sent it"

    assert generate(client, body, method="streamGenerateContent", query="?alt=sse").status_code == 200
    legacy = {"generateContentRequest": {"model": f"models/{MODEL}", **with_files(f"{GOOGLE}/v1alpha/files/doc-2")}}
    assert generate(client, legacy, method="countTokens").status_code == 200
    assert {key for _, _, key, _ in google.calls} == {UPSTREAM_KEYS[1]}


def test_traffic_without_files_still_rotates_and_other_uris_pass_through(app, client, google):
    own_file(app, "doc-1", UPSTREAM_KEYS[1])
    body = with_files("https://www.youtube.com/watch?v=9hE5-98ZeCg", "gs://bucket/files/doc-1",
                      "https://example.com/files/doc-1")
    for _ in range(6):
        assert generate(client, body).status_code == 200
    assert set(google.keys_for(":generateContent")) == set(UPSTREAM_KEYS)
    assert all(sent == body for _, _, _, sent in google.calls)


def test_files_on_different_keys_are_refused_before_anything_is_sent(app, client, google):
    own_file(app, "left", UPSTREAM_KEYS[0])
    own_file(app, "right", UPSTREAM_KEYS[2])
    response = generate(client, with_files("files/left", f"{GOOGLE}/v1beta/files/right"))
    error = error_of(response, 400, "FAILED_PRECONDITION")
    assert "files/left under one upstream key" in error["message"] and "files/right under another" in error["message"]
    [detail] = error["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.PreconditionFailure"
    assert [violation["subject"] for violation in detail["violations"]] == ["files/left", "files/right"]
    assert not any(key in json.dumps(error) for key in UPSTREAM_KEYS) and "google:" not in json.dumps(error)
    assert google.calls == []


def test_a_cache_and_files_must_share_a_key(app, client, google):
    cache = create_cache(client)
    [creator] = google.keys_for("/cachedContents")
    other = next(key for key in UPSTREAM_KEYS if key != creator)
    own_file(app, "with-cache", creator)
    own_file(app, "elsewhere", other)
    assert generate(client, with_files("files/with-cache", cachedContent=cache)).status_code == 200
    assert google.keys_for(":generateContent") == [creator]
    error = error_of(generate(client, with_files("files/elsewhere", cachedContent=cache)), 400, "FAILED_PRECONDITION")
    assert cache in error["message"] and "files/elsewhere" in error["message"]
    assert len(google.keys_for(":generateContent")) == 1


def test_creating_a_cache_of_files_goes_to_their_key(app, client, google):
    own_file(app, "big-pdf", UPSTREAM_KEYS[2])
    body = {"model": f"models/{MODEL}", **with_files(f"{GOOGLE}/v1beta/files/big-pdf"), "ttl": "300s"}
    created = client.post("/v1beta/cachedContents", headers=as_client(OWNER), json=body)
    assert created.status_code == 200
    assert google.keys_for("/cachedContents") == [UPSTREAM_KEYS[2]]
    cache = created.get_json()["name"]
    assert generate(client, with_files("files/big-pdf", cachedContent=cache)).status_code == 200
    assert google.keys_for(":generateContent") == [UPSTREAM_KEYS[2]]


# -- tenants -----------------------------------------------------------------------------------------------

DENIED_FILE = "You do not have permission to access the File {} or it may not exist."


def test_another_clients_file_gets_googles_answer(app, client, google):
    own_file(app, "theirs", UPSTREAM_KEYS[0], client_key=STRANGER)
    own_file(app, "mine", UPSTREAM_KEYS[1])
    for body, file_id in ((with_files("files/theirs"), "theirs"),
                          (with_files("files/mine", f"{GOOGLE}/v1beta/files/theirs"), "theirs"),
                          (with_files("files/never-uploaded"), "never-uploaded")):
        assert error_of(generate(client, body), 403, "PERMISSION_DENIED")["message"] == DENIED_FILE.format(file_id)
    cache = create_cache(client, key=STRANGER)
    error_of(client.post("/v1beta/cachedContents", headers=as_client(OWNER),
                         json={"model": f"models/{MODEL}", **with_files("files/theirs")}), 403, "PERMISSION_DENIED")
    error_of(generate(client, with_files("files/mine", cachedContent=cache)), 403, "PERMISSION_DENIED")
    assert google.keys_for(":generateContent") == [] and len(google.calls) == 1  # only the stranger's cache


@pytest.mark.parametrize("uri", HOSTILE + ["files/" + "a" * 10_000])
def test_hostile_file_uris_never_reach_a_key(app, client, google, uri):
    own_file(app, "abc", UPSTREAM_KEYS[2], client_key=STRANGER)  # what the tricks aim at
    own_file(app, "def", UPSTREAM_KEYS[0])
    error = error_of(generate(client, with_files("files/def", uri)), 400, "INVALID_ARGUMENT")
    assert len(error["message"]) < 400 and "files/<id>" in error["message"]
    assert google.calls == []


def test_an_expired_file_is_not_yours_any_more(app, client, google):
    own_file(app, "short", UPSTREAM_KEYS[0], ttl=0.01)
    time.sleep(0.02)
    error_of(generate(client, with_files("files/short")), 403, "PERMISSION_DENIED")
    assert google.calls == []


def test_a_store_outage_is_503_not_403(app, client, google, monkeypatch):
    own_file(app, "doc", UPSTREAM_KEYS[0])

    def broken(*args):
        raise StoreError("database is locked")

    monkeypatch.setattr(app.extensions["relay"].store, "get_resource", broken)
    error_of(generate(client, with_files("files/doc")), 503, "UNAVAILABLE")
    assert google.calls == []


def test_passthrough_forwards_file_references_untouched(app_factory, google):
    app = make_app(app_factory, RELAY_UPSTREAM_KEYS=None, RELAY_API_KEYS=None)
    client = app.test_client()
    body = with_files("files/anything", "files/../x", f"{GOOGLE}.evil.com/v1beta/files/x")
    assert generate(client, body, key="callers-own-google-key").status_code == 200
    assert [(key, sent) for _, _, key, sent in google.calls] == [("callers-own-google-key", body)]


def test_references_are_bounded_before_the_store_is_asked(app, client, google, monkeypatch):
    def refuse(*args):
        raise AssertionError("no lookup for an over-long list")

    monkeypatch.setattr(app.extensions["relay"].store, "get_resource", refuse)
    body = with_files(*(f"files/f{number}" for number in range(3001)))
    assert "at most 3000" in error_of(generate(client, body), 400, "INVALID_ARGUMENT")["message"]
    assert google.calls == []


def test_a_file_named_through_json_escapes_is_still_checked(app, client, google):
    """relay skips walking bodies whose bytes cannot name a file; an escaped key is the same key to Google."""
    own_file(app, "theirs", UPSTREAM_KEYS[0], client_key=STRANGER)
    raw = (b'{"contents": [{"role": "user", "parts": [{"fil\\u0065Data": {"fil\\u0065Uri": "files/theirs", '
           b'"mimeType": "text/plain"}}]}]}')
    assert b"ileUri" not in raw and b"ile_uri" not in raw
    response = client.post(f"/v1beta/models/{MODEL}:generateContent", data=raw,
                           headers={**as_client(OWNER), "Content-Type": "application/json"})
    assert error_of(response, 403, "PERMISSION_DENIED")["message"] == DENIED_FILE.format("theirs")
    assert google.calls == []
