"""Operations end to end: health, readiness and metrics across two gunicorn workers; graceful SIGTERM.

Metrics are checked from both sides: ``/metrics`` (whichever worker answers) must show the sum of every
worker's counts, and each worker's own multiprocess file (found through /proc/<pid>/fd) must hold its share.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests

from .harness import REPO_ROOT, WorkerProbe, free_port, http, usage_rows, wait_until

pytestmark = pytest.mark.timeout(120)

CLIENT_KEY = "client-key-ops-Lm34cd"
UPSTREAM_KEY = "up-key-ops-Rr81tt"
ADMIN_TOKEN = "admin-token-ops-Vv09kk"
MODEL = "gemini-2.5-flash"
BODY = {"contents": [{"role": "user", "parts": [{"text": "why is the sky blue?"}]}]}
UNARY = f"/v1beta/models/{MODEL}:generateContent"
SSE = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
HEADERS = {"x-goog-api-key": CLIENT_KEY}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MANAGED = {"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY, "RELAY_ADMIN_TOKEN": ADMIN_TOKEN}


@pytest.fixture(scope="module")
def relay(module_relay_factory):
    return module_relay_factory(env=MANAGED)


def fresh(relay, path, **kwargs):
    """One request on its own connection, so that either worker may answer it."""
    headers = {"Connection": "close", **kwargs.pop("headers", {})}
    return http().get(relay.url + path, headers=headers, timeout=30, **kwargs)


def test_healthz_and_readyz_from_every_worker(relay):
    for _attempt in range(20):
        health = fresh(relay, "/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        ready = fresh(relay, "/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok", "store": "ok", "mode": "managed", "upstreams": 1,
                                "keys": {"total": 1, "usable": 1, "cooling": 0, "rejected": 0}}
        assert health.headers["X-Request-Id"] and ready.headers["Content-Type"].startswith("application/json")


def test_healthz_makes_no_upstream_call(relay, fake_upstream):
    for _attempt in range(5):
        assert fresh(relay, "/healthz").status_code == 200
        assert fresh(relay, "/readyz").status_code == 200
    assert fake_upstream.requests() == []


def test_readyz_is_503_when_the_store_is_unreachable(relay_factory, tmp_path):
    dead_redis = relay_factory(env={**MANAGED, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    health, ready = fresh(dead_redis, "/healthz"), fresh(dead_redis, "/readyz")
    assert health.status_code == 200, "liveness does not depend on the store"
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "store": "unreachable", "mode": "managed", "upstreams": 1}


def test_openapi_document_is_the_one_in_the_repository(relay):
    response = fresh(relay, "/openapi.json")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    assert response.content == (REPO_ROOT / "relay" / "openapi.json").read_bytes()
    assert response.json()["openapi"].startswith("3.")


def test_metrics_and_debug_need_the_admin_token(relay):
    for path in ("/metrics", "/debug/runtime"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN},
                        {"Authorization": f"Basic {ADMIN_TOKEN}"}, {"x-goog-api-key": CLIENT_KEY}):
            response = fresh(relay, path, headers=headers)
            assert response.status_code == 401, (path, headers)
            error = response.json()["error"]
            assert error["status"] == "UNAUTHENTICATED" and ADMIN_TOKEN not in response.text
        assert fresh(relay, path, headers=ADMIN).status_code == 200


def test_metrics_and_debug_are_off_without_an_admin_token(relay_factory):
    open_relay = relay_factory(env={"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY}, workers=1)
    for path in ("/metrics", "/debug/runtime"):
        answer = fresh(open_relay, path)
        assert answer.status_code == 403 and answer.json()["error"]["status"] == "PERMISSION_DENIED"


def metric_value(text, name, **labels):
    """The sum of samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        sample = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(sample.get(key) == value for key, value in labels.items()):
            total += float(match.group(3))
    return total


def worker_counter_files(relay) -> dict[int, Path]:
    """Each worker's prometheus_client counter file, found among its open file descriptors."""
    files = {}
    for pid in WorkerProbe(relay).pids():
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if os.path.basename(target) == f"counter_{pid}.db":
                files[pid] = Path(target)
    return files


def test_metrics_count_every_worker(relay, fake_upstream):
    fake_upstream.script({"path_contains": "streamGenerateContent", "gap_ms": 100})
    before = fresh(relay, "/metrics", headers=ADMIN).text
    route = "/{version}/{collection}/{model}:generateContent"

    def call(index):
        path = SSE if index % 3 == 0 else UNARY
        response = http().post(relay.url + path, json=BODY, headers={**HEADERS, "Connection": "close"}, timeout=30)
        return response.status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(call, range(60)))
    assert statuses == [200] * 60
    # Each worker answered some of them, and counted them in its own file...
    from prometheus_client.mmap_dict import MmapedDict

    per_worker = {}
    for pid, path in worker_counter_files(relay).items():
        per_worker[pid] = sum(entry[1] for entry in MmapedDict.read_all_values_from_file(str(path))
                              if json.loads(entry[0])[1] == "relay_requests_total"
                              and json.loads(entry[0])[2].get("route") == route)
    assert len(per_worker) == 2 and all(count > 0 for count in per_worker.values()), per_worker
    # ...and /metrics shows the sum whichever worker answers it.
    for _attempt in range(6):
        text = fresh(relay, "/metrics", headers=ADMIN).text
        served = metric_value(text, "relay_requests_total", route=route, model=MODEL, status="200") - \
            metric_value(before, "relay_requests_total", route=route, model=MODEL, status="200")
        assert served == 40
        assert metric_value(text, "relay_requests_total", model=MODEL, status="200") - \
            metric_value(before, "relay_requests_total", model=MODEL, status="200") == 60
    assert metric_value(text, "relay_upstream_attempts_total", upstream="google", outcome="ok") >= 60
    assert metric_value(text, "relay_request_duration_seconds_count", route=route) >= 40
    assert metric_value(text, "relay_time_to_first_byte_seconds_count", model=MODEL) >= 20
    assert metric_value(text, "relay_tokens_total", model=MODEL, kind="prompt") > 0
    assert metric_value(text, "relay_open_streams") == 0
    assert UPSTREAM_KEY not in text and CLIENT_KEY not in text and ADMIN_TOKEN not in text


def test_metrics_count_retries_and_cooldowns(relay_factory, fake_upstream):
    keys = ("up-key-ops-first-1111", "up-key-ops-second-2222")
    relay = relay_factory(env={**MANAGED, "RELAY_UPSTREAM_KEYS": ",".join(keys)}, workers=1)
    fake_upstream.script([{"key": keys[0], "status": 429, "retry_delay": "30s"},
                          {"key": keys[1], "status": 503, "times": 1}])
    for _attempt in range(3):
        http().post(relay.url + UNARY, json=BODY, headers=HEADERS, timeout=30)
    text = fresh(relay, "/metrics", headers=ADMIN).text
    assert metric_value(text, "relay_key_cooldowns_total", upstream="google", kind="cooldown") == 1
    assert metric_value(text, "relay_upstream_attempts_total", outcome="rate_limited") == 1
    assert metric_value(text, "relay_upstream_attempts_total", outcome="server_error") == 1
    assert metric_value(text, "relay_upstream_retries_total") >= 1
    for key in keys:
        assert key not in text and key[-4:] not in text


def test_hostile_model_names_cannot_grow_the_metrics(relay):
    for index in range(30):
        http().post(relay.url + f"/v1beta/models/probe-unauth-{index}:generateContent", json=BODY,
                    headers={"x-goog-api-key": f"not-a-key-{index}"}, timeout=30)
    text = fresh(relay, "/metrics", headers=ADMIN).text
    assert "probe-unauth-" not in text and "not-a-key-" not in text


# -- graceful shutdown ------------------------------------------------------------------------------


def start_stream(relay, path=SSE, headers=None):
    """(response, chunk iterator, first chunk) of a stream that is under way.

    Keep the iterator: a dropped ``iter_content`` generator closes the connection when it is collected,
    which relay rightly takes for the caller hanging up.
    """
    session = http()
    response = session.post(relay.url + path, json=BODY, headers={**HEADERS, **(headers or {})}, stream=True, timeout=60)
    assert response.status_code == 200
    chunks = response.iter_content(chunk_size=None)
    response.session = session
    return response, chunks, next(chunks)


def refused(relay):
    try:
        socket.create_connection(("127.0.0.1", relay.port), timeout=2).close()
    except OSError:
        return True
    return False


def test_sigterm_lets_an_in_flight_stream_finish_and_flushes_usage(relay_factory, fake_upstream):
    relay = relay_factory(env={**MANAGED, "RELAY_GRACEFUL_TIMEOUT": "15"})
    events = [{"candidates": [{"content": {"parts": [{"text": f"part {n} "}], "role": "model"}}],
               "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": n + 1, "totalTokenCount": 8 + n}}
              for n in range(8)]
    fake_upstream.script({"path_contains": "streamGenerateContent", "events": events, "gap_ms": 400})
    closing = {"Connection": "close"}
    unary_ids = [http().post(relay.url + UNARY, json=BODY, headers={**HEADERS, **closing}, timeout=30)
                 .headers["X-Request-Id"] for _index in range(5)]
    stream, chunks, first = start_stream(relay, headers=closing)
    assert first.startswith(b"data: ")
    sent_at = time.monotonic()
    os.kill(relay.process.pid, signal.SIGTERM)
    assert wait_until(lambda: refused(relay), timeout=10), "the listening socket closes at once"
    rest = b"".join(chunks)
    payloads = [json.loads(block[len(b"data: "):]) for block in (first + rest).split(b"\r\n\r\n") if block.strip()]
    assert [payload["candidates"][0]["content"]["parts"][0]["text"] for payload in payloads] == \
        [f"part {n} " for n in range(8)], "every event arrived and no in-band error"
    relay.process.wait(30)
    assert relay.process.returncode == 0
    assert time.monotonic() - sent_at < 12, "the workers left as soon as their streams were done"
    rows = usage_rows(relay.env["RELAY_DB"], [*unary_ids, stream.headers["X-Request-Id"]], timeout=5)
    assert len(rows) == 6, "usage queued at SIGTERM was written before the workers exited"
    stream_row = rows[stream.headers["X-Request-Id"]]
    assert stream_row["status"] == 200 and not stream_row["aborted"] and stream_row["total_tokens"] == 15
    assert "Traceback" not in relay.output_text()


def test_sigterm_with_an_idle_keep_alive_client_does_not_wait_for_it(relay_factory):
    relay = relay_factory(env={**MANAGED, "RELAY_GRACEFUL_TIMEOUT": "8"}, workers=1)
    session = http()
    assert session.get(relay.url + "/healthz", timeout=10).status_code == 200  # the connection stays open
    sent_at = time.monotonic()
    os.kill(relay.process.pid, signal.SIGTERM)
    relay.process.wait(40)
    session.close()
    assert time.monotonic() - sent_at < 5


def test_a_stream_longer_than_the_graceful_timeout_still_gets_its_usage_row(relay_factory, fake_upstream):
    relay = relay_factory(env={**MANAGED, "RELAY_GRACEFUL_TIMEOUT": "3"}, workers=1)
    fake_upstream.script({"path_contains": "streamGenerateContent", "stream_forever": True, "gap_ms": 200,
                          "forever_max_s": 60})
    stream, chunks, _first = start_stream(relay)
    os.kill(relay.process.pid, signal.SIGTERM)
    with pytest.raises(requests.RequestException):
        for _chunk in chunks:
            pass
    relay.process.wait(30)
    rows = usage_rows(relay.env["RELAY_DB"], [stream.headers["X-Request-Id"]], timeout=3)
    assert rows and rows[stream.headers["X-Request-Id"]]["aborted"]


def test_sigterm_without_requests_exits_cleanly_and_removes_the_metrics_directory(relay_factory):
    relay = relay_factory(env=MANAGED, workers=2)
    metrics_dirs = {os.path.dirname(path) for path in worker_counter_files_after_traffic(relay)}
    os.kill(relay.process.pid, signal.SIGTERM)
    relay.process.wait(30)
    assert relay.process.returncode == 0
    assert metrics_dirs and not any(os.path.exists(path) for path in metrics_dirs)


def worker_counter_files_after_traffic(relay):
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _index: fresh(relay, "/healthz"), range(20)))
    return [str(path) for path in worker_counter_files(relay).values()]


def test_worker_killed_hard_is_replaced_and_its_streams_stop_counting(relay_factory, fake_upstream):
    relay = relay_factory(env=MANAGED, workers=1)
    fake_upstream.script({"path_contains": "streamGenerateContent", "stream_forever": True, "gap_ms": 200,
                          "forever_max_s": 60})
    stream, _chunks, _first = start_stream(relay)
    assert metric_value(fresh(relay, "/metrics", headers=ADMIN).text, "relay_open_streams") == 1
    [worker] = WorkerProbe(relay).pids()
    os.kill(worker, signal.SIGKILL)
    stream.close()
    assert wait_until(lambda: (lambda pids: pids and pids != [worker])(WorkerProbe(relay).pids()), timeout=20)
    assert wait_until(lambda: fresh(relay, "/healthz").status_code == 200, timeout=20)
    assert metric_value(fresh(relay, "/metrics", headers=ADMIN).text, "relay_open_streams") == 0
    assert psutil.pid_exists(relay.process.pid)
