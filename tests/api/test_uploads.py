"""Tests of the upload route (relay.api.uploads) in this process: relay's own upload ids, who may use them, the
limits checked before a byte is sent, and what reaches the upstream (the in-process fake keeps sessions per key)."""

import io
import json
import time

import pytest

from relay.clients.auth import hash_key
from tests.api.conftest import CLIENT_A, CLIENT_B, PUBLIC_URL, UPSTREAM_KEYS, as_client, upstream_calls

START = {"X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"}


def start(client, size=10, key=CLIENT_A, path="/upload/v1beta/files", **headers):
    headers = {**START, "X-Goog-Upload-Header-Content-Length": str(size), **headers}
    return client.post(path, json={"file": {"display_name": "doc"}}, headers=as_client(key, **headers))


def relay_path(response):
    url = response.headers["X-Goog-Upload-URL"]
    assert url.startswith(PUBLIC_URL + "/upload/v1beta/files?upload_id=")
    return url.removeprefix(PUBLIC_URL)


def send_chunk(client, path, data, offset=0, command="upload, finalize", **headers):
    return client.post(path, data=data, headers={"X-Goog-Upload-Command": command,
                                                 "X-Goog-Upload-Offset": str(offset), **headers})


def test_the_upload_url_is_relays_own_and_reveals_nothing_upstream(client, google):
    started = start(client, size=11)

    assert started.status_code == 200, started.data
    path = relay_path(started)
    session = next(iter(google.resources.uploads.values()))
    shown = json.dumps(dict(started.headers)) + started.get_data(as_text=True)
    assert session.upload_id not in shown and "upstream.test" not in shown
    assert not any(key in shown for key in UPSTREAM_KEYS) and "X-GUploader-UploadID" not in started.headers
    [sent] = upstream_calls(google, "/upload/v1beta/files")
    assert sent["key"] == session.owner and json.loads(sent["body_text"]) == {"file": {"display_name": "doc"}}
    assert dict(sent["headers"])["X-Goog-Upload-Header-Content-Length"] == "11"

    done = send_chunk(client, path, b"hello world")  # keyless, as the Python SDK sends chunks
    assert done.status_code == 200 and done.headers["x-goog-upload-status"] == "final"
    uploaded = done.get_json()["file"]
    assert google.resources.files[uploaded["name"].removeprefix("files/")].owner == session.owner
    assert upstream_calls(google, "upload_id=")[0]["key"] == session.owner
    listed = client.get("/v1beta/files", headers=as_client()).get_json()
    assert [entry["name"] for entry in listed["files"]] == [uploaded["name"]]


def test_chunks_of_one_session_stay_on_its_key_and_resume_by_query(client, google):
    path = relay_path(start(client, size=6))
    assert send_chunk(client, path, b"abc", command="upload").headers["x-goog-upload-status"] == "active"
    status = send_chunk(client, path, b"", command="query")
    assert status.headers["x-goog-upload-size-received"] == "3"
    assert send_chunk(client, path, b"def", offset=3, **as_client()).status_code == 200  # a key may come too
    assert len({entry["key"] for entry in upstream_calls(google, "upload_id=")}) == 1


def test_another_clients_key_on_a_chunk_is_refused_before_anything_is_sent(client, google, google_error):
    path = relay_path(start(client))
    sent = len(google.requests)
    google_error(send_chunk(client, path, b"0123456789", **as_client(CLIENT_B)), 403, "PERMISSION_DENIED")
    google_error(send_chunk(client, path, b"0123456789", **as_client("not-a-relay-key")), 401, "UNAUTHENTICATED")
    assert len(google.requests) == sent


@pytest.mark.parametrize("upload_id", [
    "", "x", "../../v1beta/files", "a" * 42, "a" * 44, "a" * 42 + "\x00", "a" * 42 + "/", "a" * 42 + ".",
])
def test_malformed_or_unknown_upload_ids_are_404s(client, google, google_error, upload_id):
    start(client)
    response = client.post("/upload/v1beta/files", query_string={"upload_id": upload_id},
                           headers={"X-Goog-Upload-Command": "query"})
    google_error(response, 404, "NOT_FOUND")
    assert upstream_calls(google, "upload_id=") == []


def test_a_repeated_upload_id_is_refused(client, google, google_error):
    path = relay_path(start(client))
    google_error(client.post(path + "&upload_id=" + "b" * 43, headers={"X-Goog-Upload-Command": "query"}),
                 404, "NOT_FOUND")


def test_an_expired_session_is_a_404(relay_app, google, google_error):
    app = relay_app()
    client = app.test_client()
    path = relay_path(start(client))
    store = app.extensions["relay"].store
    name = "uploads/" + path.split("upload_id=")[1].split("&")[0]
    record = store.get_resource("uploads", name, time.time())
    store.put_resource("uploads", name, record, time.time() - 1)
    google_error(send_chunk(client, path, b"0123456789"), 404, "NOT_FOUND")


def test_a_revoked_client_key_ends_its_uploads(relay_app, google, google_error):
    app = relay_app()
    services = app.extensions["relay"]
    services.store.add_client_key({"name": "carol", "key_hash": hash_key("carol-key-3333"), "created": 0})
    client = app.test_client()
    path = relay_path(start(client, key="carol-key-3333"))
    services.store.revoke_client_key("carol")
    services.auth._cache.clear()
    google_error(send_chunk(client, path, b"0123456789"), 401, "UNAUTHENTICATED")


def test_sizes_are_checked_before_anything_is_sent(relay_app, google, google_error):
    client = relay_app(RELAY_MAX_UPLOAD_MB="0.001").test_client()  # 1048 bytes
    google_error(start(client, size=5000), 413, "INVALID_ARGUMENT")
    path = relay_path(start(client, size=1000))
    google_error(send_chunk(client, path, b"x" * 1049), 413, "INVALID_ARGUMENT")
    google_error(send_chunk(client, path, b"x" * 300, offset=701), 400, "INVALID_ARGUMENT")  # past its declared size
    response = client.post(path, input_stream=io.BytesIO(b"x" * 10),
                           headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0",
                                    "Transfer-Encoding": "chunked"})
    google_error(response, 411, "INVALID_ARGUMENT")  # no Content-Length: nothing to check, so nothing relayed
    google_error(send_chunk(client, path, b"x", offset="-1"), 400, "INVALID_ARGUMENT")
    google_error(send_chunk(client, path, b"x", command="upload, start"), 400, "INVALID_ARGUMENT")
    google_error(send_chunk(client, path, b"x", command="delete"), 400, "INVALID_ARGUMENT")
    assert upstream_calls(google, "upload_id=") == []


def test_a_body_shorter_than_its_length_is_a_hang_up_and_is_not_answered_as_done(client, google):
    path = relay_path(start(client, size=100))
    response = client.post(path, data=b"x" * 40, environ_overrides={"CONTENT_LENGTH": "100"},
                           headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"})
    assert response.status_code == 499
    assert next(iter(google.resources.uploads.values())).received == 0


def test_an_upstream_failure_mid_upload_says_to_query_and_resume(client, google, google_error):
    path = relay_path(start(client))
    google.add_rules([{"query_contains": "upload_id", "times": 1, "status": 503,
                       "body": json.dumps({"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}})}])
    relayed = send_chunk(client, path, b"0123456789")
    google_error(relayed, 503, "UNAVAILABLE")  # Google's own answer, relayed: the SDK retries the chunk
    assert send_chunk(client, path, b"0123456789").headers["x-goog-upload-status"] == "final"


def test_the_sticky_key_takes_every_upload_of_a_client(client, google):
    for _ in range(4):
        path = relay_path(start(client, size=1))
        send_chunk(client, path, b"x")
    assert len({session.owner for session in google.resources.uploads.values()}) == 1


def test_without_a_public_url_relay_names_no_host_it_was_told(relay_app, google, google_error):
    client = relay_app(RELAY_PUBLIC_URL=None).test_client()
    response = start(client, Host="evil.example")
    error = google_error(response, 503, "UNAVAILABLE")
    assert "RELAY_PUBLIC_URL" in error["message"]
    assert upstream_calls(google) == []  # refused before a session was opened upstream


def test_the_v1_prefix_and_every_version_serve_uploads(client, google):
    for path in ("/v1/upload/v1beta/files", "/upload/v1/files", "/upload/v1alpha/files"):
        assert start(client, path=path).status_code == 200
    assert [entry["path"] for entry in upstream_calls(google, "/upload/")] == [
        "/upload/v1beta/files", "/upload/v1/files", "/upload/v1alpha/files"]


def test_a_start_is_checked(client, google, google_error):
    google_error(client.post("/upload/v1beta/files", json={}, headers=as_client()), 400, "INVALID_ARGUMENT")
    google_error(start(client, **{"X-Goog-Upload-Header-Content-Length": "ten"}), 400, "INVALID_ARGUMENT")
    bad_name = client.post("/upload/v1beta/files", json={"file": {"name": "files/../../x"}},
                           headers=as_client(**START))
    google_error(bad_name, 400, "INVALID_ARGUMENT")
    google_error(client.post("/upload/v1beta/files?uploadType=media", json={}, headers=as_client(**START)),
                 400, "INVALID_ARGUMENT")
    assert upstream_calls(google) == []


def test_a_file_name_http_cannot_carry_is_dropped_not_fatal(client, google):
    response = start(client, **{"X-Goog-Upload-File-Name": "r\u00e9sum\u00e9.pdf".encode().decode("latin-1")})
    assert response.status_code == 200
    assert "X-Goog-Upload-File-Name" not in dict(upstream_calls(google, "/upload/")[0]["headers"])


MULTIPART = (b"--b0\r\nContent-Type: application/json; charset=utf-8\r\n\r\n"
             b'{"file": {"displayName": "one-shot"}}\r\n'
             b"--b0\r\nContent-Type: text/plain\r\n\r\nthe whole file\r\n--b0--\r\n")


def test_a_multipart_upload_is_streamed_to_the_sticky_key_and_recorded(client, google):
    response = client.post("/upload/v1beta/files?uploadType=multipart", data=MULTIPART,
                           headers=as_client(**{"Content-Type": "multipart/related; boundary=b0"}))
    assert response.status_code == 200, response.data
    uploaded = response.get_json()["file"]
    [sent] = upstream_calls(google, "/upload/")
    assert sent["query"] == "uploadType=multipart" and sent["body_len"] == len(MULTIPART)
    assert dict(sent["headers"])["Content-Type"] == "multipart/related; boundary=b0"
    assert client.get(f"/v1beta/{uploaded['name']}", headers=as_client()).status_code == 200
    assert client.get(f"/v1beta/{uploaded['name']}", headers=as_client(CLIENT_B)).status_code == 403


def test_passthrough_uploads_use_the_callers_own_key(relay_app, google):
    client = relay_app(RELAY_UPSTREAM_KEYS=None, RELAY_API_KEYS=None).test_client()
    path = relay_path(start(client, key="google-key-of-caller-9999"))
    assert send_chunk(client, path, b"0123456789").status_code == 200
    assert [entry["key"] for entry in upstream_calls(google, "/upload/")] == ["google-key-of-caller-9999", None]
    other = send_chunk(client, path, b"", command="query", **as_client("another-google-key-8888"))
    assert other.status_code == 403
