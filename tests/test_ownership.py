"""Tests of cachedContent ownership and affinity through the app, with the upstream mocked by `responses`.

Managed mode with three upstream keys and two client keys: a cache lives under the upstream key that
created it, every request naming it goes to that key, and only the client that created it may see it.
The fake Google and the apps are tests/support/ownership.py's.
"""

import json
import time

import pytest

from relay.ownership import parse_timestamp
from relay.store import StoreError
from relay.upstream.pool import key_id
from tests.support import MODEL
from tests.support import ownership
from tests.support.ownership import CONTENTS, OWNER, STRANGER, UPSTREAM_KEYS, as_client, create_cache, make_app

google, app, client = ownership.google, ownership.app, ownership.client  # the shared fixtures

DENIED = "CachedContent not found (or permission denied)"


def generate(client, key=OWNER, cache=None, model=MODEL):
    body = {"contents": CONTENTS, **({"cachedContent": cache} if cache else {})}
    return client.post(f"/v1beta/models/{model}:generateContent", headers=as_client(key), json=body)


def assert_denied(response):
    assert response.status_code == 403, response.data
    # json.loads, not get_json: an alt=sse call's error keeps Google's text/event-stream content type.
    assert json.loads(response.data) == {"error": {"code": 403, "message": DENIED, "status": "PERMISSION_DENIED"}}


# -- affinity ----------------------------------------------------------------------------------------------

def test_every_request_naming_a_cache_goes_to_the_key_that_created_it(client, google):
    name = create_cache(client)
    [creator] = google.keys_for("/cachedContents")
    for _ in range(9):
        assert generate(client, cache=name).status_code == 200
    assert set(google.keys_for(":generateContent")) == {creator}

    stream = client.post(f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", headers=as_client(OWNER),
                         json={"contents": CONTENTS, "cached_content": name})
    assert stream.status_code == 200 and stream.data.startswith(b"data: ")
    legacy = {"generateContentRequest": {"model": f"models/{MODEL}", "contents": CONTENTS, "cachedContent": name}}
    assert client.post(f"/v1beta/models/{MODEL}:countTokens", headers=as_client(OWNER), json=legacy).status_code == 200
    cache_id = name.removeprefix("cachedContents/")
    assert client.get(f"/v1beta/cachedContents/{cache_id}", headers=as_client(OWNER)).status_code == 200
    assert client.patch(f"/v1beta/cachedContents/{cache_id}", headers=as_client(OWNER),
                        json={"ttl": "7200s"}).status_code == 200
    assert set(google.keys_for(":streamGenerateContent")) == {creator}
    assert set(google.keys_for(":countTokens")) == {creator}
    assert set(google.keys_for(f"/cachedContents/{cache_id}")) == {creator}


def test_traffic_without_a_cache_still_rotates(client, google):
    create_cache(client)
    for _ in range(9):
        assert generate(client).status_code == 200
    assert set(google.keys_for(":generateContent")) == set(UPSTREAM_KEYS)


def test_a_suffixed_model_can_use_a_cache(client, google):
    name = create_cache(client)
    [creator] = google.keys_for("/cachedContents")
    assert generate(client, cache=name, model=f"{MODEL}-thinking-1024").status_code == 200
    [(_, path, key, body)] = [call for call in google.calls if ":generateContent" in call[1]]
    assert (path, key) == (f"/v1beta/models/{MODEL}:generateContent", creator)
    assert body["cachedContent"] == name
    assert body["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 1024}


def test_owner_key_cooling_down_answers_429_instead_of_going_elsewhere(app, client, google):
    name = create_cache(client)
    [creator] = google.keys_for("/cachedContents")
    now = time.time()
    app.extensions["relay"].store.cool_down(key_id("google", creator), now + 30, "429", now)
    response = generate(client, cache=name)
    assert response.status_code == 429
    error = response.get_json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    [retry] = [detail for detail in error["details"] if detail["@type"].endswith("google.rpc.RetryInfo")]
    assert 25 <= float(retry["retryDelay"].rstrip("s")) <= 30
    assert google.keys_for(":generateContent") == []
    assert generate(client).status_code == 200  # other traffic uses the other keys meanwhile
    assert creator not in google.keys_for(":generateContent")


def test_upstream_429_on_the_owner_key_is_not_retried_on_another(client, google):
    name = create_cache(client)
    [creator] = google.keys_for("/cachedContents")
    original = google.answer

    def throttled(request):
        if ":generateContent" in request.path_url:
            google.calls.append((request.method, request.path_url, request.headers.get("x-goog-api-key"), None))
            error = {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                               "status": "RESOURCE_EXHAUSTED",
                               "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]}}
            return 429, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(error, indent=2)
        return original(request)

    google.answer = throttled
    response = generate(client, cache=name)
    assert response.status_code == 429
    assert google.keys_for(":generateContent") == [creator]


# -- ownership ---------------------------------------------------------------------------------------------

def test_another_client_key_can_neither_use_nor_see_the_cache(client, google):
    name = create_cache(client)
    cache_id = name.removeprefix("cachedContents/")
    before = len(google.calls)
    assert_denied(generate(client, key=STRANGER, cache=name))
    assert_denied(client.post(f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", headers=as_client(STRANGER),
                              json={"contents": CONTENTS, "cachedContent": name}))
    assert_denied(client.get(f"/v1beta/cachedContents/{cache_id}", headers=as_client(STRANGER)))
    assert_denied(client.patch(f"/v1beta/cachedContents/{cache_id}", headers=as_client(STRANGER), json={"ttl": "1s"}))
    assert_denied(client.delete(f"/v1beta/cachedContents/{cache_id}", headers=as_client(STRANGER)))
    assert len(google.calls) == before, "a denied request must not reach the upstream"
    assert client.get("/v1beta/cachedContents", headers=as_client(STRANGER)).get_json() == {}
    assert generate(client, cache=name).status_code == 200


def test_unknown_caches_answer_like_google(client, google):
    assert_denied(generate(client, cache="cachedContents/never-made"))
    assert_denied(client.get("/v1beta/cachedContents/never-made", headers=as_client(OWNER)))
    assert google.calls == []


def test_listing_shows_only_the_callers_caches(client, google):
    mine = {create_cache(client), create_cache(client)}
    theirs = create_cache(client, key=STRANGER)
    listed = client.get("/v1beta/cachedContents", headers=as_client(OWNER))
    assert listed.status_code == 200
    caches = listed.get_json()["cachedContents"]
    assert {cache["name"] for cache in caches} == mine
    assert all(cache["model"] == f"models/{MODEL}" and "expireTime" in cache for cache in caches)
    assert [cache["name"] for cache in
            client.get("/v1beta/cachedContents", headers=as_client(STRANGER)).get_json()["cachedContents"]] == [theirs]
    assert not [call for call in google.calls if call[0] == "GET"], "managed listing is answered from the records"


def test_delete_forgets_the_cache(client, google):
    name = create_cache(client)
    cache_id = name.removeprefix("cachedContents/")
    assert client.delete(f"/v1beta/cachedContents/{cache_id}", headers=as_client(OWNER)).status_code == 200
    assert client.get("/v1beta/cachedContents", headers=as_client(OWNER)).get_json() == {}
    assert_denied(generate(client, cache=name))


def test_patch_refreshes_the_expiry(app, client, google):
    name = create_cache(client, ttl="60s")
    store = app.extensions["relay"].store
    cache_id = name.removeprefix("cachedContents/")
    assert client.patch(f"/v1beta/cachedContents/{cache_id}", headers=as_client(OWNER),
                        json={"ttl": "7200s"}).status_code == 200
    assert store.get_cache(name, time.time() + 3600) is not None
    assert store.get_cache(name, time.time() + 3600)["client"] == app.extensions["relay"].auth.authenticate(OWNER).name


def test_expired_caches_are_forgotten(app, client, google):
    name = create_cache(client, ttl="60s")
    store = app.extensions["relay"].store
    assert store.get_cache(name, time.time() + 30) is not None
    assert store.get_cache(name, time.time() + 61) is None
    assert store.list_caches(None, time.time() + 61) == []
    assert_denied(generate(client, cache=name))


def test_a_failed_create_records_nothing(app, client, google):
    original = google.answer

    def refuse(request):
        if request.method == "POST" and request.path_url.startswith("/v1beta/cachedContents"):
            error = {"error": {"code": 400, "message": "Cached content is too small.", "status": "INVALID_ARGUMENT"}}
            return 400, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(error, indent=2)
        return original(request)

    google.answer = refuse
    response = client.post("/v1beta/cachedContents", headers=as_client(OWNER),
                           json={"model": f"models/{MODEL}", "contents": CONTENTS})
    assert response.status_code == 400
    assert app.extensions["relay"].store.list_caches(None, time.time()) == []


def test_store_outage_is_not_reported_as_permission_denied(app, client, google, monkeypatch):
    name = create_cache(client)

    def broken(*args):
        raise StoreError("database is locked")

    monkeypatch.setattr(app.extensions["relay"].store, "get_resource", broken)
    response = generate(client, cache=name)
    assert response.status_code == 503 and response.get_json()["error"]["status"] == "UNAVAILABLE"


def test_passthrough_mode_forwards_caches_with_the_callers_key(app_factory, google):
    app = make_app(app_factory, RELAY_UPSTREAM_KEYS=None, RELAY_API_KEYS=None)
    client = app.test_client()
    name = create_cache(client, key="callers-own-google-key")
    assert generate(client, key="callers-own-google-key", cache=name).status_code == 200
    assert client.get("/v1beta/cachedContents", headers=as_client("callers-own-google-key")).status_code == 200
    assert {key for _, _, key, _ in google.calls} == {"callers-own-google-key"}
    assert [path for method, path, _, _ in google.calls if method == "GET"] == ["/v1beta/cachedContents"]


# -- timestamps --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("2024-07-11T18:07:47.635193373Z", 1720721267.635193373),
    ("2024-07-11T18:07:47Z", 1720721267.0),
    ("2024-07-11T20:07:47.5+02:00", 1720721267.5),
    ("2024-07-11 18:07:47Z", None),
    ("", None),
    (None, None),
    (1720721267, None),
])
def test_parse_timestamp(text, expected):
    parsed = parse_timestamp(text)
    assert parsed == pytest.approx(expected) if expected is not None else parsed is None
