"""Tests of the Files API's list, get, delete and download routes (relay.api.files) in this process: the caller's
own files from the records, paged; each call on the key holding the file; downloads streamed."""

import base64
import time

import pytest

from relay.upstream.pool import key_id
from tests.api.conftest import CLIENT_A, CLIENT_B, UPSTREAM_KEYS, as_client, upstream_calls


def generated(google, app, size, owner_key=UPSTREAM_KEYS[1], client_key=CLIENT_A):
    """A downloadable file on the fake, owned by ``owner_key``, recorded as ``client_key``'s client's."""
    stored = google.resources.generated_file(owner_key, "v1beta", size, "video/mp4")
    services = app.extensions["relay"]
    owner = {"upstream": "google", "key_id": key_id("google", owner_key),
             "client": services.auth.authenticate(client_key).name, "resource": stored.resource()}
    services.store.put_resource("files", stored.name, owner, time.time() + 3600)
    return stored


@pytest.fixture
def app(relay_app):
    return relay_app()


def test_listing_is_the_callers_own_records_paged_like_googles(app, google, google_error):
    for size in (1, 2, 3):
        generated(google, app, size)
    generated(google, app, 4, client_key=CLIENT_B)
    client = app.test_client()

    first = client.get("/v1beta/files?pageSize=2", headers=as_client()).get_json()
    assert len(first["files"]) == 2 and first["nextPageToken"]
    rest = client.get(f"/v1beta/files?pageSize=2&pageToken={first['nextPageToken']}", headers=as_client()).get_json()
    assert len(rest["files"]) == 1 and "nextPageToken" not in rest
    assert {entry["name"] for entry in first["files"] + rest["files"]} == {
        stored.name for stored in google.resources.files.values() if stored.size < 4}
    assert len(client.get("/v1beta/files", headers=as_client(CLIENT_B)).get_json()["files"]) == 1
    assert upstream_calls(google, "/files") == []  # answered from the records
    google_error(client.get("/v1beta/files?pageToken=%%%", headers=as_client()), 400, "INVALID_ARGUMENT")
    google_error(client.get("/v1beta/files?pageSize=many", headers=as_client()), 400, "INVALID_ARGUMENT")
    huge = client.get("/v1beta/files?pageSize=100000", headers=as_client())
    assert huge.status_code == 200 and len(huge.get_json()["files"]) == 3


def test_get_goes_to_the_files_key_and_refreshes_the_record(app, google):
    stored = generated(google, app, 10)
    stored.state = "PROCESSING"
    client = app.test_client()
    answer = client.get(f"/v1/{stored.name}", headers=as_client())
    assert answer.status_code == 200 and answer.get_json()["state"] == "PROCESSING"
    assert upstream_calls(google, stored.name)[0]["key"] == UPSTREAM_KEYS[1]
    listed = client.get("/v1beta/files", headers=as_client()).get_json()["files"]
    assert listed[0]["state"] == "PROCESSING"


def test_another_clients_file_is_googles_403_and_never_sent(app, google, google_error):
    stored = generated(google, app, 10)
    client = app.test_client()
    for method, path in (("GET", f"/v1beta/{stored.name}"), ("DELETE", f"/v1beta/{stored.name}"),
                         ("GET", f"/v1beta/{stored.name}:download?alt=media"),
                         ("GET", f"/download/v1beta/{stored.name}:download?alt=media")):
        error = google_error(client.open(path, method=method, headers=as_client(CLIENT_B)), 403, "PERMISSION_DENIED")
        assert error["message"] == f"You do not have permission to access the File {stored.file_id} or it may not exist."
    assert upstream_calls(google) == []


@pytest.mark.parametrize("file_id", ["UPPER", "a" * 41, "..", "a.b", "x%00y"])
def test_file_ids_relay_cannot_route_are_refused(client, google, file_id):
    response = client.get(f"/v1beta/files/{file_id}", headers=as_client())
    assert response.status_code in (400, 404)
    assert upstream_calls(google) == []


def test_delete_forgets_the_record(app, google):
    stored = generated(google, app, 10)
    client = app.test_client()
    assert client.delete(f"/v1beta/{stored.name}", headers=as_client()).status_code == 200
    assert client.get("/v1beta/files", headers=as_client()).get_json() == {}
    assert client.get(f"/v1beta/{stored.name}", headers=as_client()).status_code == 403


@pytest.mark.parametrize("prefix", ["", "/download", "/v1"])
def test_downloads_stream_from_the_files_key(app, google, prefix):
    stored = generated(google, app, 3 * 1024 * 1024 + 7)
    response = app.test_client().get(f"{prefix}/v1beta/{stored.name}:download?alt=media", headers=as_client())
    assert response.status_code == 200 and response.is_streamed
    with open(stored.path, "rb") as handle:
        assert response.get_data() == handle.read()
    [sent] = upstream_calls(google, ":download")
    assert sent["path"] == f"{prefix if prefix == '/download' else ''}/v1beta/{stored.name}:download"
    assert sent["query"] == "alt=media" and sent["key"] == UPSTREAM_KEYS[1]


def test_download_takes_alt_media_and_nothing_else(app, google, google_error):
    stored = generated(google, app, 10)
    client = app.test_client()
    google_error(client.get(f"/v1beta/{stored.name}:download?alt=proto", headers=as_client()), 400, "INVALID_ARGUMENT")
    google_error(client.get(f"/v1beta/{stored.name}?alt=media", headers=as_client()), 400, "INVALID_ARGUMENT")
    google_error(client.get(f"/v1beta/{stored.name}:copy", headers=as_client()), 404, "NOT_FOUND")
    google_error(client.delete(f"/v1beta/{stored.name}:download", headers=as_client()), 405, "UNIMPLEMENTED")
    assert upstream_calls(google) == []


def test_page_tokens_are_opaque_names(app, google):
    generated(google, app, 1)
    generated(google, app, 2)
    token = base64.urlsafe_b64encode(b"files/").decode()
    page = app.test_client().get(f"/v1beta/files?pageToken={token}&pageSize=1", headers=as_client()).get_json()
    assert len(page["files"]) == 1 and "nextPageToken" in page
