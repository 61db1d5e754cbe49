"""End-to-end tests of the Files API, Batch API and long-running media through relay: the real google-genai SDK
against real gunicorn (gevent workers) and the fake upstream, which enforces ownership per key like Google,
with two upstream keys in rotation and two client keys.

What reached the upstream is read from the fake's request log and its resources (owner key and sha256 of
every file, every chunk of every upload session), so "the file went to one key, whole" is checked where it
landed, not only on what came back.
"""
from __future__ import annotations

import hashlib
import json
import random
import socket
import time

import pytest
from google.genai import errors, types

from relay.store.sqlite import SqliteStore

from .harness import http, wait_until

pytestmark = pytest.mark.timeout(240)

CLIENT_A = "client-files-A-e2e-1111"
CLIENT_B = "client-files-B-e2e-2222"
UP_KEYS = ("up-files-key-1-aaaa", "up-files-key-2-bbbb")
MODEL = "gemini-2.5-flash"
BIG = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def relay(module_relay_factory):
    return module_relay_factory({"RELAY_UPSTREAM_KEYS": ",".join(UP_KEYS), "RELAY_API_KEYS": f"{CLIENT_A},{CLIENT_B}",
                                 "RELAY_MAX_UPLOAD_MB": "64"})


@pytest.fixture
def sdk(relay, genai_client):
    """``sdk()`` is client A's google-genai Client, ``sdk(CLIENT_B)`` client B's (kept: a Client closes its
    connections when it is collected)."""
    clients = {key: genai_client(relay.url, key, timeout_ms=120_000) for key in (CLIENT_A, CLIENT_B)}
    return lambda key=CLIENT_A: clients[key]


def write_file(path, size, seed=7):
    """``size`` deterministic bytes at ``path``, written a MiB at a time; returns their sha256."""
    digest, block = hashlib.sha256(), random.Random(seed).randbytes(1024 * 1024)
    with open(path, "wb") as handle:
        for start in range(0, size, len(block)):
            piece = block[: size - start]
            handle.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def fake_file(fake, name):
    return next(entry for entry in fake.resources()["files"] if entry["name"] == name)


def keys_of(entries):
    return {entry["key"] for entry in entries}


def test_a_50_mb_upload_is_the_callers_file_on_one_key(relay, sdk, fake_upstream, tmp_path):
    path = tmp_path / "big.pdf"
    sha = write_file(path, BIG)
    uploaded = sdk().files.upload(file=str(path), config={"mime_type": "application/pdf", "display_name": "big"})

    landed = fake_file(fake_upstream, uploaded.name)
    assert landed["sha256"] == sha and int(landed["sizeBytes"]) == BIG
    assert landed["owner"] in UP_KEYS
    chunks = [entry for entry in fake_upstream.requests() if "upload_id=" in entry["query"]]
    assert len(chunks) == 7 and keys_of(chunks) == {landed["owner"]}  # 8 MiB chunks, all to the session's key
    assert sdk().files.get(name=uploaded.name).size_bytes == BIG
    other = sdk(CLIENT_B).files.upload(file=str(write_small(tmp_path / "b.txt")), config={"mime_type": "text/plain"})
    assert [listed.name for listed in sdk().files.list()] == [uploaded.name]
    assert [listed.name for listed in sdk(CLIENT_B).files.list()] == [other.name]

    with pytest.raises(errors.ClientError) as refused:
        sdk(CLIENT_B).files.get(name=uploaded.name)
    assert refused.value.code == 403
    with pytest.raises(errors.ClientError) as refused:
        sdk(CLIENT_B).models.generate_content(model=MODEL, contents=[uploaded, "What is in it?"])
    assert refused.value.code == 403

    before = len(fake_upstream.requests())
    answer = sdk().models.generate_content(model=MODEL, contents=[uploaded, "Summarize this document."])
    assert answer.text
    generated = [entry for entry in fake_upstream.requests()[before:] if ":generateContent" in entry["path"]]
    assert keys_of(generated) == {landed["owner"]}

    sdk().files.delete(name=uploaded.name)
    assert uploaded.name not in {entry["name"] for entry in fake_upstream.resources()["files"]}
    with pytest.raises(errors.ClientError) as gone:
        sdk().files.get(name=uploaded.name)
    assert gone.value.code == 403


def write_small(path, text="hello relay"):
    path.write_text(text)
    return path


def test_a_prompt_uses_three_uploaded_files_on_their_one_key(sdk, fake_upstream, tmp_path):
    files = [sdk().files.upload(file=str(write_small(tmp_path / f"part{index}.txt", f"part {index}")),
                                config={"mime_type": "text/plain"}) for index in range(3)]
    owners = {fake_file(fake_upstream, uploaded.name)["owner"] for uploaded in files}
    assert len(owners) == 1  # a client's uploads stick to one key
    before = len(fake_upstream.requests())
    answer = sdk().models.generate_content(model=MODEL, contents=[*files, "Put the three parts together."])
    assert answer.text
    sent = [entry for entry in fake_upstream.requests()[before:] if ":generateContent" in entry["path"]]
    assert keys_of(sent) == owners
    assert all(uploaded.uri in sent[0]["body_text"] for uploaded in files)


def test_inline_batches_are_created_read_listed_cancelled_and_charged_once(relay, sdk, fake_upstream):
    requests = [{"contents": [{"role": "user", "parts": [{"text": f"Question {index}"}]}]} for index in range(3)]
    job = sdk().batches.create(model=MODEL, src=requests, config={"display_name": "e2e batch"})
    assert job.name.startswith("batches/")
    states = [sdk().batches.get(name=job.name).state for _ in range(4)]  # the fake succeeds on the 2nd read
    assert states[-1] == types.JobState.JOB_STATE_SUCCEEDED
    finished = sdk().batches.get(name=job.name)
    assert len(finished.dest.inlined_responses) == 3
    second = sdk().batches.create(model=MODEL, src=requests[:1], config={"display_name": "to cancel"})
    sdk().batches.cancel(name=second.name)
    assert fake_upstream.resources()["batches"][-1]["state"] == "BATCH_STATE_CANCELLED"
    assert {listed.name for listed in sdk().batches.list()} == {job.name, second.name}
    assert list(sdk(CLIENT_B).batches.list()) == []
    with pytest.raises(errors.ClientError) as refused:
        sdk(CLIENT_B).batches.get(name=job.name)
    assert refused.value.code == 403

    usage = [response.usage_metadata.total_token_count for response in
             (item.response for item in finished.dest.inlined_responses)]
    rows = wait_until(lambda: batch_rows(relay), timeout=10)
    assert [(row["route"], row["total_tokens"], row["requested_model"]) for row in rows if
            row["total_tokens"]] == [("batchGenerateContent", sum(usage), MODEL)]


def batch_rows(relay):
    store = SqliteStore(relay.env["RELAY_DB"])
    try:
        return [row for row in store.usage_rows(0, limit=100_000) if row["batch"]]
    finally:
        store.close()


def test_imagen_predict_over_http(relay):
    with http() as session:
        response = session.post(relay.url + "/v1beta/models/imagen-4.0-generate-001:predict", timeout=30,
                                headers={"x-goog-api-key": CLIENT_A},
                                json={"instances": [{"prompt": "a lighthouse"}], "parameters": {"sampleCount": 2}})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2 and predictions[0]["mimeType"] == "image/png"


def test_veo_operation_polled_with_the_sdk_then_its_video_downloaded(relay, sdk, fake_upstream):
    with http() as session:
        started = session.post(relay.url + "/v1beta/models/veo-3.0-generate-001:predictLongRunning", timeout=30,
                               headers={"x-goog-api-key": CLIENT_A}, json={"instances": [{"prompt": "waves"}]})
    assert started.status_code == 200, started.text
    operation = types.GenerateVideosOperation(name=started.json()["name"])
    while not operation.done:
        operation = sdk().operations.get(operation)
    video = operation.response.generated_videos[0].video
    data = sdk().files.download(file=video)
    stored = fake_file(fake_upstream, "files/" + video.uri.split("/files/")[1].split(":")[0])
    assert hashlib.sha256(data).hexdigest() == stored["sha256"]
    with pytest.raises(errors.ClientError) as refused:
        sdk(CLIENT_B).operations.get(operation)
    assert refused.value.code == 403


BUSY = {"status": 503, "body": json.dumps({"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}})}


@pytest.mark.parametrize("failure", [BUSY, {"reset_before_headers": True}], ids=["google-503", "reset"])
def test_an_upstream_failure_mid_upload_is_resumed_by_the_sdk(sdk, fake_upstream, tmp_path, failure):
    fake_upstream.script([{"path_contains": "/upload/", "query_contains": "upload_id", "times": 1, **failure}])
    path = tmp_path / "resumed.bin"
    sha = write_file(path, 9 * 1024 * 1024, seed=9)
    uploaded = sdk().files.upload(file=str(path), config={"mime_type": "application/octet-stream"})
    assert fake_file(fake_upstream, uploaded.name)["sha256"] == sha
    first = _chunks_sent(fake_upstream)[0]
    assert first["status"] == 503 or first["outcome"] == "cut"  # the failure did happen, and was survived


def test_a_caller_hanging_up_mid_chunk_leaves_the_upstream_session_where_it_was(relay, fake_upstream):
    with http() as session:
        start = session.post(relay.url + "/upload/v1beta/files", timeout=30, json={"file": {"display_name": "cut"}},
                             headers={"x-goog-api-key": CLIENT_A, "X-Goog-Upload-Protocol": "resumable",
                                      "X-Goog-Upload-Command": "start",
                                      "X-Goog-Upload-Header-Content-Length": str(4 * 1024 * 1024)})
    upload_url = start.headers["X-Goog-Upload-URL"]
    assert upload_url.startswith(relay.url + "/upload/v1beta/files?upload_id=")
    path = upload_url.removeprefix(relay.url)
    with socket.create_connection(("127.0.0.1", relay.port)) as raw:
        raw.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {4 * 1024 * 1024}\r\n"
                    "X-Goog-Upload-Command: upload, finalize\r\nX-Goog-Upload-Offset: 0\r\n\r\n".encode())
        raw.sendall(b"x" * (1024 * 1024))
        assert wait_until(lambda: _chunks_sent(fake_upstream), timeout=10)  # the chunk is on its way upstream
    cut = wait_until(lambda: [entry for entry in _chunks_sent(fake_upstream)
                              if entry.get("outcome") == "client_closed"], timeout=10)
    assert cut and cut[0]["body_len"] < 4 * 1024 * 1024  # relay cut the upstream request short
    session_state = fake_upstream.resources()["uploads"][-1]
    assert session_state["received"] == 0 and session_state["status"] == "active"
    with http() as session:  # keyless, as the Python SDK sends chunks
        status = session.post(relay.url + path, timeout=30, headers={"X-Goog-Upload-Command": "query"})
    assert status.status_code == 200 and status.headers["x-goog-upload-size-received"] == "0"


def _chunks_sent(fake):
    return [entry for entry in fake.requests() if "upload_id=" in entry["query"]]


def test_upload_urls_are_relays_own_and_bound_to_their_client(relay, fake_upstream):
    with http() as session:
        start = session.post(relay.url + "/v1/upload/v1beta/files", timeout=30, json={},
                             headers={"x-goog-api-key": CLIENT_A, "X-Goog-Upload-Protocol": "resumable",
                                      "X-Goog-Upload-Command": "start", "X-Goog-Upload-Header-Content-Length": "5"})
        assert start.status_code == 200, start.text
        exposed = json.dumps(dict(start.headers)) + start.text
        upstream_session = fake_upstream.resources()["uploads"][-1]["upload_id"]
        assert upstream_session not in exposed and fake_upstream.url not in exposed
        assert not any(key in exposed for key in UP_KEYS)
        path = start.headers["X-Goog-Upload-URL"].removeprefix(relay.url)
        foreign = session.post(relay.url + path, data=b"12345", timeout=30,
                               headers={"x-goog-api-key": CLIENT_B, "X-Goog-Upload-Command": "upload, finalize",
                                        "X-Goog-Upload-Offset": "0"})
        assert foreign.status_code == 403
        upload_id = path.split("upload_id=")[1].split("&")[0]
        guessed = session.post(relay.url + path.replace(upload_id, upload_id[:-4] + "AAAA"), data=b"12345", timeout=30,
                               headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"})
        assert guessed.status_code == 404
        done = session.post(relay.url + path, data=b"12345", timeout=30,
                            headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"})
        assert done.status_code == 200 and done.headers["x-goog-upload-status"] == "final"
        assert done.json()["file"]["sizeBytes"] == "5"
    assert [chunk["key"] for chunk in fake_upstream.resources()["uploads"][-1]["chunks"]] == [
        fake_upstream.resources()["uploads"][-1]["owner"]]  # the refused chunk never reached the upstream


def test_two_relays_on_one_redis_charge_a_batch_once_and_share_uploads(relay_factory, fake_upstream, genai_client,
                                                                       tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from relay.store.redis_store import RedisStore
    from tests.support.redis_server import redis_server

    with redis_server() as redis_url:
        env = {"RELAY_UPSTREAM_KEYS": ",".join(UP_KEYS), "RELAY_API_KEYS": CLIENT_A, "REDIS_URL": redis_url}
        first, second = relay_factory(env), relay_factory(env)
        on_first, on_second = genai_client(first.url, CLIENT_A), genai_client(second.url, CLIENT_A)
        uploaded = on_first.files.upload(file=str(write_small(tmp_path / "shared.txt")),
                                         config={"mime_type": "text/plain"})
        assert on_second.files.get(name=uploaded.name).name == uploaded.name  # the record is shared
        job = on_second.batches.create(model=MODEL, src=[{"contents": [{"parts": [{"text": "hi"}]}]}])
        fake_upstream.progress(job.name, state="SUCCEEDED")
        clients = [on_first, on_second] * 6
        with ThreadPoolExecutor(len(clients)) as pool:
            states = list(pool.map(lambda client: client.batches.get(name=job.name).state, clients))
        assert set(states) == {types.JobState.JOB_STATE_SUCCEEDED}
        store = RedisStore(redis_url)
        try:
            rows = wait_until(lambda: [row for row in store.usage_rows(0) if row["batch"]], timeout=10)
            time.sleep(1.5)  # any second row would have been flushed by now
            assert len([row for row in store.usage_rows(0) if row["batch"]]) == len(rows) == 1
        finally:
            store.close()
