"""Checks of the fake upstream's owned resources: Files, uploads, Batch, Imagen/Veo, and ownership like Google's.

The fake runs as its own process (tests/e2e/harness.py); the real google-genai SDK drives it directly
where the SDK speaks the route, plain requests (and raw sockets) elsewhere.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import subprocess
import sys

import psutil
import pytest
import requests
import responses
from google.genai import errors, types

from tests.e2e.harness import REPO_ROOT, genai_client, http, wait_until
from tests.fakeupstream import inprocess
from tests.support import fake_upstream

pytestmark = pytest.mark.timeout(120)

KEY_A, KEY_B = "upstream-key-a", "upstream-key-b"
MIB = 1024 * 1024
GRANULARITY = 8 * MIB
MODEL_URL = "/v1beta/models/gemini-2.5-flash"


def denied(file_id: str, kind: str = "File") -> dict:
    message = f"You do not have permission to access the {kind} {file_id} or it may not exist."
    return {"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED"}}


fake_process, fake = fake_upstream.fake_process, fake_upstream.fake  # the shared fixtures


def key(upstream_key: str | None) -> dict:
    return {"x-goog-api-key": upstream_key} if upstream_key else {}


def start_upload(fake, upstream_key: str, size: int, mime_type: str = "application/pdf", version: str = "v1beta"):
    response = http().post(f"{fake.url}/upload/{version}/files", json={"file": {"display_name": "doc"}}, headers={
        **key(upstream_key), "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": str(size), "X-Goog-Upload-Header-Content-Type": mime_type})
    assert response.status_code == 200, response.text
    return response


def send_chunk(url: str, data, offset: int, command: str = "upload", upstream_key: str | None = None):
    return http().post(url, data=data, headers={**key(upstream_key), "X-Goog-Upload-Command": command,
                                                "X-Goog-Upload-Offset": str(offset)})


def multipart_upload(fake, upstream_key: str, data: bytes, mime_type: str, name: str | None = None) -> dict:
    boundary = "fake-boundary-42"
    metadata = json.dumps({"file": {"displayName": "mp", **({"name": name} if name else {})}}).encode()
    body = (f"--{boundary}\r\nContent-Type: application/json; charset=utf-8\r\n\r\n".encode() + metadata
            + f"\r\n--{boundary}\r\nContent-Type: {mime_type}\r\n\r\n".encode() + data
            + f"\r\n--{boundary}--\r\n".encode())
    response = http().post(f"{fake.url}/upload/v1beta/files?uploadType=multipart", data=body, headers={
        **key(upstream_key), "X-Goog-Upload-Protocol": "multipart",
        "Content-Type": f"multipart/related; boundary={boundary}"})
    assert response.status_code == 200, response.text
    return response.json()["file"]


def generate(fake, upstream_key: str, file_uri: str, method: str = "generateContent", snake: bool = False):
    part = {"file_data": {"file_uri": file_uri}} if snake else {"fileData": {"fileUri": file_uri, "mimeType": "x/y"}}
    body = {"contents": [{"role": "user", "parts": [{"text": "describe"}, part]}]}
    return http().post(f"{fake.url}{MODEL_URL}:{method}", json=body, headers=key(upstream_key))


def test_sdk_uploads_with_two_keys_are_owned_listed_downloaded_and_deleted(fake):
    client_a, client_b = genai_client(fake.url, KEY_A), genai_client(fake.url, KEY_B)
    data_a, data_b = os.urandom(10 * MIB + 123), os.urandom(2 * MIB)
    file_a = client_a.files.upload(file=io.BytesIO(data_a), config={"mime_type": "application/pdf"})
    file_b = client_b.files.upload(file=io.BytesIO(data_b), config={"mime_type": "text/plain", "display_name": "b"})
    assert file_a.size_bytes == len(data_a) and file_a.state == types.FileState.ACTIVE
    assert file_a.uri == f"https://generativelanguage.googleapis.com/v1/{file_a.name}" and file_a.download_uri is None
    assert base64.b64decode(file_a.sha256_hash).decode() == hashlib.sha256(data_a).hexdigest()
    [stored_a] = fake.resources(KEY_A)["files"]
    assert stored_a["sha256"] == hashlib.sha256(data_a).hexdigest() and stored_a["owner"] == KEY_A
    [session] = fake.resources(KEY_A)["uploads"]
    assert [(chunk["command"], chunk["offset"], chunk["length"], chunk["key"]) for chunk in session["chunks"]] == [
        ("upload", 0, GRANULARITY, None), ("upload, finalize", GRANULARITY, len(data_a) - GRANULARITY, None)]
    assert [f.name for f in client_a.files.list()] == [file_a.name]
    assert [f.name for f in client_b.files.list()] == [file_b.name]
    assert client_a.files.get(name=file_a.name).display_name is None
    assert client_a.files.download(file=file_a.name) == data_a
    file_id = file_a.name.removeprefix("files/")
    for method, path in (("GET", f"/v1/files/{file_id}"), ("DELETE", f"/v1beta/files/{file_id}"),
                         ("GET", f"/v1/files/{file_id}:download?alt=media"),
                         ("GET", f"/download/v1beta/files/{file_id}:download?alt=media")):
        refused = http().request(method, fake.url + path, headers=key(KEY_B))
        assert (refused.status_code, refused.json()) == (403, denied(file_id)), path
    with pytest.raises(errors.ClientError) as info:
        client_b.files.get(name=file_a.name)
    assert info.value.code == 403 and info.value.status == "PERMISSION_DENIED"
    client_a.files.delete(name=file_a.name)
    assert http().get(f"{fake.url}/v1/{file_a.name}", headers=key(KEY_A)).json() == denied(file_id)
    assert [f.name for f in client_b.files.list()] == [file_b.name]


def test_resumable_protocol_offsets_query_and_keyless_chunks(fake):
    data = os.urandom(3 * MIB)
    start = start_upload(fake, KEY_A, len(data))
    url = start.headers["x-goog-upload-url"]
    assert url.startswith(f"{fake.url}/upload/v1beta/files?upload_id=") and url.endswith("&upload_protocol=resumable")
    assert start.headers["x-goog-upload-chunk-granularity"] == str(GRANULARITY)
    assert start.headers["x-goog-upload-status"] == "active" and start.content == b""
    first = send_chunk(url, data[:MIB], 0)
    assert first.status_code == 200 and first.headers["x-goog-upload-status"] == "active"
    wrong = send_chunk(url, data[2 * MIB:], 2 * MIB, "upload, finalize")
    assert wrong.status_code == 503 and wrong.headers["x-goog-upload-size-received"] == str(MIB)
    assert b"upload offset is 2097152 byte(s)" in wrong.content
    foreign = send_chunk(url, data[MIB:2 * MIB], MIB, upstream_key=KEY_B)
    assert foreign.status_code == 403 and foreign.json()["error"]["status"] == "PERMISSION_DENIED"
    query = send_chunk(url, b"", 0, "query")
    assert query.headers["x-goog-upload-status"] == "active"
    assert query.headers["x-goog-upload-size-received"] == str(MIB)
    pieces = (data[offset:min(offset + 100_000, 2 * MIB)] for offset in range(MIB, 2 * MIB, 100_000))
    assert send_chunk(url, pieces, MIB, upstream_key=KEY_A).status_code == 200  # chunked transfer encoding
    too_long = send_chunk(url, data[2 * MIB:] + b"x", 2 * MIB, "upload, finalize")
    assert too_long.status_code == 400 and "declared size" in too_long.json()["error"]["message"]
    final = send_chunk(url, data[2 * MIB:], 2 * MIB, "upload, finalize")
    assert final.status_code == 200 and final.headers["x-goog-upload-status"] == "final"
    created = final.json()["file"]
    assert created["sizeBytes"] == str(len(data)) and created["state"] == "ACTIVE" and created["source"] == "UPLOADED"
    assert send_chunk(url, data[2 * MIB:], 2 * MIB, "upload, finalize").json() == final.json()
    [stored] = fake.resources()["files"]
    assert stored["sha256"] == hashlib.sha256(data).hexdigest() and stored["owner"] == KEY_A
    missing = send_chunk(f"{fake.url}/upload/v1beta/files?upload_id=nope&upload_protocol=resumable", b"x", 0)
    assert missing.status_code == 404
    chunk_log = [entry for entry in fake.requests() if "upload_id=" in entry["query"]]
    assert chunk_log[0]["key"] is None and chunk_log[0]["body_len"] == MIB and chunk_log[0]["body_truncated"]
    assert chunk_log[0]["body_sha256"] == hashlib.sha256(data[:MIB]).hexdigest()


def test_client_hanging_up_mid_chunk_leaves_the_session_where_it_was(fake):
    url = start_upload(fake, KEY_A, 2 * MIB).headers["x-goog-upload-url"]
    target = url.removeprefix(fake.url)
    with socket.create_connection(("127.0.0.1", fake.port)) as sock:
        sock.sendall((f"POST {target} HTTP/1.1\r\nHost: x\r\nX-Goog-Upload-Command: upload\r\n"
                      f"X-Goog-Upload-Offset: 0\r\nContent-Length: {2 * MIB}\r\n\r\n").encode() + b"y" * 300_000)
    closed = wait_until(fake.closed, timeout=5)
    assert closed and closed[0]["path"] == "/upload/v1beta/files"
    query = send_chunk(url, b"", 0, "query")
    assert query.headers["x-goog-upload-size-received"] == "0"
    assert send_chunk(url, b"z" * 2 * MIB, 0, "upload, finalize").headers["x-goog-upload-status"] == "final"


def test_scripted_failure_on_a_chunk_keeps_nothing(fake):
    url = start_upload(fake, KEY_A, MIB).headers["x-goog-upload-url"]
    fake.script({"query_contains": "upload_id=", "status": 503, "times": 1})
    assert send_chunk(url, b"a" * MIB, 0, "upload, finalize").status_code == 503
    assert send_chunk(url, b"", 0, "query").headers["x-goog-upload-size-received"] == "0"
    assert send_chunk(url, b"a" * MIB, 0, "upload, finalize").status_code == 200


def test_multipart_upload_and_video_processing_before_use(fake):
    data = os.urandom(300_000)
    created = multipart_upload(fake, KEY_A, data, "video/mp4", name="files/my-video-1")
    assert created["name"] == "files/my-video-1" and created["state"] == "PROCESSING"
    assert created["mimeType"] == "video/mp4" and created["sizeBytes"] == str(len(data))
    refused = generate(fake, KEY_A, created["uri"])
    assert refused.status_code == 400 and refused.json()["error"] == {
        "code": 400, "status": "FAILED_PRECONDITION",
        "message": "The File my-video-1 is not in an ACTIVE state and usage is not allowed."}
    assert http().get(f"{fake.url}/v1beta/files/my-video-1", headers=key(KEY_A)).json()["state"] == "ACTIVE"
    assert generate(fake, KEY_A, created["uri"]).status_code == 200
    download = http().get(f"{fake.url}/v1beta/files/my-video-1:download?alt=media", headers=key(KEY_A))
    assert download.content == data and download.headers["Content-Type"] == "video/mp4"
    assert fake.resources()["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    clash = http().post(f"{fake.url}/upload/v1beta/files", json={"file": {"name": "files/my-video-1"}}, headers={
        **key(KEY_A), "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"})
    assert clash.status_code == 400


def test_generation_calls_check_every_referenced_file(fake):
    own = multipart_upload(fake, KEY_A, b"own bytes", "application/pdf")
    other = multipart_upload(fake, KEY_B, b"other bytes", "application/pdf")
    own_id, other_id = own["name"].removeprefix("files/"), other["name"].removeprefix("files/")
    for uri in (own["uri"], f"https://generativelanguage.googleapis.com/v1/files/{own_id}",
                f"https://generativelanguage.googleapis.com/v1alpha/files/{own_id}", own["name"]):
        assert generate(fake, KEY_A, uri).status_code == 200, uri
        assert generate(fake, KEY_B, uri).json() == denied(own_id), uri
    assert generate(fake, KEY_B, own["uri"], snake=True).status_code == 403
    assert generate(fake, KEY_A, "files/doesnotexist").json() == denied("doesnotexist")
    for uri in ("https://www.youtube.com/watch?v=9hE5-98ZeCg", "gs://bucket/object.pdf", "https://example.com/a.pdf"):
        assert generate(fake, KEY_A, uri).status_code == 200, uri
    streamed = generate(fake, KEY_A, other["uri"], "streamGenerateContent")
    assert streamed.status_code == 403 and streamed.json() == [denied(other_id)]
    sse = http().post(f"{fake.url}{MODEL_URL}:streamGenerateContent?alt=sse", headers=key(KEY_A), json={
        "contents": [{"parts": [{"fileData": {"fileUri": own["uri"]}}, {"fileData": {"fileUri": other["uri"]}}]}]})
    assert sse.status_code == 403 and sse.json() == denied(other_id)
    assert generate(fake, KEY_B, own["uri"], "countTokens").status_code == 403


def test_cached_contents_belong_to_their_key(fake):
    session = http()
    created = session.post(f"{fake.url}/v1beta/cachedContents", headers=key(KEY_A),
                           json={"model": "models/gemini-2.5-flash", "ttl": "300s"}).json()
    cache_url = f"{fake.url}/v1beta/{created['name']}"
    assert session.get(cache_url, headers=key(KEY_A)).json()["name"] == created["name"]
    refused = session.get(cache_url, headers=key(KEY_B))
    assert refused.status_code == 403 and refused.json()["error"]["status"] == "PERMISSION_DENIED"
    assert session.get(f"{fake.url}/v1beta/cachedContents", headers=key(KEY_B)).json() == {}
    body = {"contents": [{"parts": [{"text": "hi"}]}], "cachedContent": created["name"]}
    assert session.post(f"{fake.url}{MODEL_URL}:generateContent", json=body, headers=key(KEY_B)).status_code == 403
    assert session.post(f"{fake.url}{MODEL_URL}:generateContent", json=body, headers=key(KEY_A)).status_code == 200
    assert session.delete(cache_url, headers=key(KEY_B)).status_code == 403
    assert session.delete(cache_url, headers=key(KEY_A)).json() == {}
    other_file = multipart_upload(fake, KEY_B, b"b", "application/pdf")
    cache_with_file = session.post(f"{fake.url}/v1beta/cachedContents", headers=key(KEY_A), json={
        "model": "models/gemini-2.5-flash", "contents": [{"parts": [{"fileData": {"fileUri": other_file["uri"]}}]}]})
    assert cache_with_file.status_code == 403


def test_sdk_batches_inline_lifecycle_and_ownership(fake):
    client_a, client_b = genai_client(fake.url, KEY_A), genai_client(fake.url, KEY_B)
    requests_in = [{"contents": [{"parts": [{"text": f"q{n}"}], "role": "user"}]} for n in range(3)]
    job = client_a.batches.create(model="gemini-2.5-flash", src=requests_in, config={"display_name": "inline"})
    assert job.state == types.JobState.JOB_STATE_PENDING and job.name.startswith("batches/")
    assert client_a.batches.get(name=job.name).state == types.JobState.JOB_STATE_RUNNING
    done = client_a.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED and len(done.dest.inlined_responses) == 3
    assert all(item.response.usage_metadata.total_token_count == 429 for item in done.dest.inlined_responses)
    raw = http().get(f"{fake.url}/v1beta/{job.name}", headers=key(KEY_A)).json()
    assert raw["done"] is True and raw["metadata"]["batchStats"] == {"requestCount": "3", "successfulRequestCount": "3"}
    assert raw["response"]["@type"].endswith("v1main.GenerateContentBatchOutput")
    assert [b.name for b in client_a.batches.list()] == [job.name] and list(client_b.batches.list()) == []
    batch_id = job.name.removeprefix("batches/")
    for call in (lambda: client_b.batches.get(name=job.name), lambda: client_b.batches.cancel(name=job.name),
                 lambda: client_b.batches.delete(name=job.name)):
        with pytest.raises(errors.ClientError) as info:
            call()
        assert info.value.code == 403 and info.value.message == denied(batch_id, "Batch")["error"]["message"]
    second = client_a.batches.create(model="gemini-2.5-flash", src=requests_in[:1])
    client_a.batches.cancel(name=second.name)
    assert client_a.batches.get(name=second.name).state == types.JobState.JOB_STATE_CANCELLED
    client_a.batches.delete(name=second.name)
    assert http().get(f"{fake.url}/v1beta/{second.name}", headers=key(KEY_A)).status_code == 403
    by_b = [(entry["method"], entry["path"].rsplit("/", 1)[-1]) for entry in fake.requests() if entry["key"] == KEY_B]
    assert by_b == [("GET", "batches"), ("GET", batch_id), ("POST", f"{batch_id}:cancel"), ("DELETE", batch_id)]


def test_batch_from_an_input_file_writes_a_results_file(fake):
    client_a, client_b = genai_client(fake.url, KEY_A), genai_client(fake.url, KEY_B)
    lines = [{"key": f"r{n}", "request": {"contents": [{"parts": [{"text": f"q{n}"}]}]}} for n in range(2)]
    jsonl = "".join(json.dumps(line) + "\n" for line in lines).encode()
    source = client_a.files.upload(file=io.BytesIO(jsonl), config={"mime_type": "application/jsonl"})
    with pytest.raises(errors.ClientError) as info:
        client_b.batches.create(model="gemini-2.5-flash", src=source.name)
    assert info.value.code == 403
    fake.settings(batch_polls=1)
    job = client_a.batches.create(model="gemini-2.5-flash", src=source.name)
    done = client_a.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED and done.dest.file_name.startswith("files/")
    results_id = done.dest.file_name.removeprefix("files/")
    downloaded = http().get(f"{fake.url}/download/v1beta/files/{results_id}:download?alt=media", headers=key(KEY_A))
    rows = [json.loads(line) for line in downloaded.text.splitlines()]
    assert [row["key"] for row in rows] == ["r0", "r1"] and all("usageMetadata" in row["response"] for row in rows)
    assert client_a.files.download(file=done.dest.file_name) == downloaded.content
    assert http().get(f"{fake.url}/v1/files/{results_id}:download?alt=media", headers=key(KEY_B)).status_code == 403


def test_batch_progress_is_controllable(fake):
    client = genai_client(fake.url, KEY_A)
    src = [{"contents": [{"parts": [{"text": "q"}]}]}]
    failing = client.batches.create(model="gemini-2.5-flash", src=src)
    fake.progress(failing.name, state="FAILED")
    raw = http().get(f"{fake.url}/v1beta/{failing.name}", headers=key(KEY_A)).json()
    assert raw["metadata"]["state"] == "BATCH_STATE_FAILED" and raw["done"] and raw["error"]["code"] == 13
    fake.settings(batch_polls=None, batch_after_s=0)
    assert client.batches.get(name=client.batches.create(model="m", src=src).name).state.name == "JOB_STATE_SUCCEEDED"
    fake.settings(batch_after_s=None)
    slow = client.batches.create(model="m", src=src)
    assert {client.batches.get(name=slow.name).state.name for _ in range(5)} == {"JOB_STATE_RUNNING"}
    embeddings = client.batches.create_embeddings(
        model="gemini-embedding-001", src={"inlined_requests": {"contents": [{"parts": [{"text": "x"}]}]}})
    fake.progress(embeddings.name, state="SUCCEEDED")
    [embedded] = client.batches.get(name=embeddings.name).dest.inlined_embed_content_responses
    assert len(embedded.response.embedding.values) == 3072
    missing = http().post(f"{fake.url}/v1beta/models/missing-model:batchGenerateContent", headers=key(KEY_A),
                          json={"batch": {"inputConfig": {"requests": {"requests": [{"request": src[0]}]}}}})
    assert missing.status_code == 404
    assert http().post(f"{fake.url}/_fake/settings", json={"batch_polls": "soon"}).status_code == 400


def test_inline_batch_request_naming_another_keys_file_fails_alone(fake):
    other = multipart_upload(fake, KEY_B, b"theirs", "application/pdf")
    own = multipart_upload(fake, KEY_A, b"mine", "application/pdf")
    requests_in = [{"request": {"contents": [{"parts": [{"fileData": {"fileUri": uri}}]}]}, "metadata": {"n": n}}
                   for n, uri in enumerate((own["uri"], other["uri"]))]
    batch = {"display_name": "mixed", "input_config": {"requests": {"requests": requests_in}}}
    created = http().post(f"{fake.url}/v1beta/models/gemini-2.5-flash:batchGenerateContent", headers=key(KEY_A),
                          json={"batch": batch})
    fake.progress(created.json()["name"], state="SUCCEEDED")
    done = http().get(f"{fake.url}/v1beta/{created.json()['name']}", headers=key(KEY_A)).json()
    first, second = done["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
    assert "usageMetadata" in first["response"] and first["metadata"] == {"n": 0}
    assert second["error"]["code"] == 403 and second["metadata"] == {"n": 1}
    assert done["metadata"]["batchStats"] == {"requestCount": "2", "successfulRequestCount": "1",
                                              "failedRequestCount": "1"}


def test_imagen_predict(fake):
    url = f"{fake.url}/v1beta/models/imagen-4.0-generate-001:predict"
    answer = http().post(url, headers=key(KEY_A), json={"instances": [{"prompt": "a cat"}],
                                                        "parameters": {"sampleCount": 2}})
    predictions = answer.json()["predictions"]
    assert answer.status_code == 200 and [p["mimeType"] for p in predictions] == ["image/png", "image/png"]
    assert base64.b64decode(predictions[0]["bytesBase64Encoded"]).startswith(b"\x89PNG\r\n\x1a\n")
    assert http().post(url, headers=key(KEY_A), json={"parameters": {}}).status_code == 400


def test_veo_operation_polled_with_the_sdk_then_downloaded(fake):
    client_a = genai_client(fake.url, KEY_A, api_version="v1beta")
    started = http().post(f"{fake.url}/v1beta/models/veo-3.0-generate-001:predictLongRunning", headers=key(KEY_A),
                          json={"instances": [{"prompt": "a cat"}], "parameters": {"sampleCount": 1}}).json()
    assert list(started) == ["name"] and started["name"].startswith("models/veo-3.0-generate-001/operations/")
    refused = http().get(f"{fake.url}/v1beta/{started['name']}", headers=key(KEY_B))
    assert refused.status_code == 403 and refused.json() == denied(started["name"], "Operation")
    operation, polls = types.GenerateVideosOperation(name=started["name"]), 0
    while not operation.done:
        operation, polls = client_a.operations.get(operation), polls + 1
    assert polls == 2
    video = operation.response.generated_videos[0].video
    assert video.uri.startswith("https://generativelanguage.googleapis.com/v1beta/files/")
    assert len(client_a.files.download(file=video)) == 256 * 1024
    [stored] = fake.resources(KEY_A)["files"]
    assert stored["source"] == "GENERATED" and stored["downloadUri"] == video.uri
    assert http().get(f"{fake.url}/v1beta/{stored['name']}:download?alt=media", headers=key(KEY_B)).status_code == 403
    extend = http().post(f"{fake.url}/v1beta/models/veo-3.0-generate-001:predictLongRunning", headers=key(KEY_B),
                         json={"instances": [{"prompt": "more", "video": {"uri": video.uri}}]})
    assert extend.status_code == 403


def test_files_list_is_paginated_per_key(fake):
    names = [fake.make_file(KEY_A, 10 + n)["name"] for n in range(5)]
    fake.make_file(KEY_B, 10)
    first = http().get(f"{fake.url}/v1beta/files?pageSize=2", headers=key(KEY_A)).json()
    assert [f["name"] for f in first["files"]] == names[:2] and first["nextPageToken"]
    client = genai_client(fake.url, KEY_A)
    assert [f.name for f in client.files.list(config={"page_size": 2})] == names
    bad = http().get(f"{fake.url}/v1beta/files?pageToken=%%%", headers=key(KEY_A))
    assert bad.status_code == 400


def test_uploads_and_downloads_stream_through_disk_not_memory(fake, tmp_path):
    client = genai_client(fake.url, KEY_A)
    process = psutil.Process(fake.process.pid)
    warm = client.files.upload(file=io.BytesIO(os.urandom(9 * MIB)), config={"mime_type": "application/pdf"})
    client.files.download(file=warm.name)
    source = tmp_path / "big.bin"
    with open(source, "wb") as handle:
        for _ in range(64):
            handle.write(os.urandom(MIB))
    before = process.memory_info().rss
    uploaded = client.files.upload(file=str(source), config={"mime_type": "application/pdf"})
    after_upload = process.memory_info().rss
    target = tmp_path / "back.bin"
    client.files.download(file=uploaded.name, destination=str(target))
    after_download = process.memory_info().rss
    print(f"fake RSS {before / MIB:.1f} MB, +{(after_upload - before) / MIB:.1f} MB after a 64 MB upload, "
          f"+{(after_download - before) / MIB:.1f} MB after downloading it")
    assert after_upload - before < 16 * MIB, f"fake RSS grew {(after_upload - before) / MIB:.1f} MB on upload"
    assert after_download - before < 16 * MIB, f"fake RSS grew {(after_download - before) / MIB:.1f} MB in total"
    expected = hashlib.sha256(source.read_bytes()).hexdigest()
    assert fake.resources(KEY_A)["files"][-1]["sha256"] == expected
    assert hashlib.sha256(target.read_bytes()).hexdigest() == expected


def test_help_lists_what_the_fake_serves():
    output = subprocess.run([sys.executable, "-m", "tests.fakeupstream", "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=30, check=True).stdout
    for route in ("/upload/{ver}/files", ":download?alt=media", ":batchGenerateContent", ":asyncBatchEmbedContent",
                  "/{ver}/batches/{id}:cancel", ":predictLongRunning", "/operations/{id}", "/_fake/progress",
                  "/_fake/resources", "--data-dir"):
        assert route in output, route


def test_in_process_twin_serves_uploads_and_files():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        state = inprocess.install(mock, "http://upstream.test")
        start = requests.post("http://upstream.test/upload/v1beta/files", json={}, headers={
            **key(KEY_A), "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": "5", "X-Goog-Upload-Header-Content-Type": "text/plain"})
        url = start.headers["x-goog-upload-url"]
        assert url.startswith("http://upstream.test/upload/v1beta/files?upload_id=")
        final = requests.post(url, data=iter([b"he", b"llo"]), headers={"X-Goog-Upload-Command": "upload, finalize",
                                                                        "X-Goog-Upload-Offset": "0"})
        name = final.json()["file"]["name"]
        assert requests.get(f"http://upstream.test/v1beta/{name}:download?alt=media", headers=key(KEY_A)).content \
            == b"hello"
        assert requests.get(f"http://upstream.test/v1beta/{name}", headers=key(KEY_B)).status_code == 403
        assert state.resources.files[name.removeprefix("files/")].owner == KEY_A
