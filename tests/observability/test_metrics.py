"""Tests for relay/observability/metrics.py and the /metrics view: what is counted, bounded labels, multiprocess sums."""

import os
import subprocess
import sys
import textwrap

import pytest
from prometheus_client import REGISTRY

from relay.observability import metrics
from tests.fakeupstream import inprocess

from tests.support import UPSTREAM_URL
from tests.support import REPO_ROOT

UPSTREAM_KEY = "up-key-metrics-Aa11"
CLIENT_KEY = "client-key-metrics-Bb22"
ADMIN_TOKEN = "admin-metrics-Cc33"
BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
ROUTE = "/{version}/{collection}/{model}:generateContent"
STREAM_ROUTE = "/{version}/{collection}/{model}:streamGenerateContent"


@pytest.fixture
def app(app_factory):
    return app_factory({"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY,
                        "RELAY_ADMIN_TOKEN": ADMIN_TOKEN})


@pytest.fixture
def fake(mock_upstream):
    return inprocess.install(mock_upstream, UPSTREAM_URL)


@pytest.fixture
def fresh_labels(monkeypatch):
    monkeypatch.setattr(metrics, "_seen_models", set())


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_model_label_is_bounded(fresh_labels, monkeypatch):
    monkeypatch.setattr(metrics, "MAX_MODEL_LABELS", 3)
    assert metrics.model_label(None) == "" and metrics.model_label("") == ""
    assert [metrics.model_label(f"gemini-{index}") for index in range(5)] == [
        "gemini-0", "gemini-1", "gemini-2", "other", "other"]
    assert metrics.model_label("gemini-1") == "gemini-1", "a name already counted keeps its label"
    for hostile in ("a b", "x" * 200, "models/x", "bad\nname", 'quote"d', "ключ", 42):
        assert metrics.model_label(hostile) == "invalid"


def test_unauthenticated_requests_mint_no_model_labels(fresh_labels):
    before = sample("relay_requests_total", route=ROUTE, model="", status="401")
    metrics.request_done(ROUTE, "sk-some-key-as-a-model", 401, 0.01)
    assert sample("relay_requests_total", route=ROUTE, model="", status="401") == before + 1
    assert sample("relay_requests_total", route=ROUTE, model="sk-some-key-as-a-model", status="401") == 0
    assert "sk-some-key-as-a-model" not in metrics._seen_models


def test_requests_attempts_latency_tokens_and_streams_are_counted(app, fake, fresh_labels):
    client = app.test_client()
    headers = {"x-goog-api-key": CLIENT_KEY}
    model = "gemini-metrics-unit"
    before = {
        "unary": sample("relay_requests_total", route=ROUTE, model=model, status="200"),
        "stream": sample("relay_requests_total", route=STREAM_ROUTE, model=model, status="200"),
        "latency": sample("relay_request_duration_seconds_count", route=ROUTE),
        "ttfb": sample("relay_time_to_first_byte_seconds_count", model=model),
        "attempts": sample("relay_upstream_attempts_total", upstream="google", outcome="ok"),
        "prompt": sample("relay_tokens_total", model=model, upstream_model=model, kind="prompt"),
    }
    for _index in range(3):  # a response is accounted for when it is closed, as a server closes it
        with client.post(f"/v1beta/models/{model}:generateContent", json=BODY, headers=headers) as response:
            assert response.status_code == 200
    response = client.post(f"/v1beta/models/{model}:streamGenerateContent?alt=sse", json=BODY, headers=headers)
    assert response.status_code == 200 and response.data.count(b"data: ") > 1
    response.close()
    assert sample("relay_requests_total", route=ROUTE, model=model, status="200") == before["unary"] + 3
    assert sample("relay_requests_total", route=STREAM_ROUTE, model=model, status="200") == before["stream"] + 1
    assert sample("relay_request_duration_seconds_count", route=ROUTE) == before["latency"] + 3
    assert sample("relay_time_to_first_byte_seconds_count", model=model) >= before["ttfb"] + 1
    assert sample("relay_upstream_attempts_total", upstream="google", outcome="ok") == before["attempts"] + 4
    assert sample("relay_tokens_total", model=model, upstream_model=model, kind="prompt") > before["prompt"]
    assert sample("relay_open_streams") == 0


def test_retries_and_cooldowns_are_counted_by_reason(app_factory, mock_upstream, fresh_labels):
    keys = ("up-metrics-first-1111", "up-metrics-second-2222")
    app = app_factory({"RELAY_UPSTREAM_KEYS": ",".join(keys), "RELAY_API_KEYS": CLIENT_KEY})
    fake = inprocess.install(mock_upstream, UPSTREAM_URL)
    fake.add_rules([{"key": keys[0], "status": 429, "retry_delay": "30s"}])
    before_cooldowns = sample("relay_key_cooldowns_total", upstream="google", kind="cooldown")
    before_retries = sample("relay_upstream_retries_total", upstream="google", reason="rate_limited")
    with app.test_client().post("/v1beta/models/gemini-2.5-flash:generateContent", json=BODY,
                                headers={"x-goog-api-key": CLIENT_KEY}) as response:
        assert response.status_code == 200
    if [entry["key"] for entry in fake.requests] == [keys[0], keys[1]]:
        assert sample("relay_key_cooldowns_total", upstream="google", kind="cooldown") == before_cooldowns + 1
        assert sample("relay_upstream_retries_total", upstream="google", reason="rate_limited") == before_retries + 1
    else:  # the pool tried the healthy key first: nothing to retry
        assert [entry["key"] for entry in fake.requests] == [keys[1]]


def test_metrics_view_needs_the_admin_token_when_set(app, fake):
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": ADMIN_TOKEN}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401 and response.json["error"]["status"] == "UNAUTHENTICATED"
    response = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200 and response.content_type.startswith("text/plain; version=0.0.4")
    assert "relay_requests_total" in response.text


def test_metrics_view_is_off_without_an_admin_token(app_factory):
    # Its labels name models and routes callers chose: like every admin surface, off without the admin token.
    app = app_factory({"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY})
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
        response = app.test_client().get("/metrics", headers=headers)
        assert response.status_code == 403 and response.json["error"]["status"] == "PERMISSION_DENIED"


def test_no_key_ever_becomes_a_label(app, fake, fresh_labels):
    client = app.test_client()
    for headers in ({"x-goog-api-key": CLIENT_KEY}, {"x-goog-api-key": "wrong-key-metrics"}, {}):
        client.post("/v1beta/models/gemini-2.5-flash:generateContent?key=query-key-metrics", json=BODY,
                    headers=headers).close()
    text = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).text
    for secret in (UPSTREAM_KEY, CLIENT_KEY, ADMIN_TOKEN, "wrong-key-metrics", "query-key-metrics", UPSTREAM_KEY[-4:]):
        assert secret not in text


MULTIPROCESS_CHILD = textwrap.dedent("""
    import sys
    from relay.observability import metrics
    role = sys.argv[1]
    if role == "worker":
        for _ in range(int(sys.argv[2])):
            metrics.request_done("/healthz", None, 200, 0.001)
        metrics.OPEN_STREAMS.inc()
    else:
        sys.stdout.write(metrics.exposition().decode())
""")


def run_child(directory, *args):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", MULTIPROCESS_CHILD, *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, check=True)


def test_multiprocess_mode_sums_every_worker(tmp_path):
    workers = [subprocess.Popen([sys.executable, "-c", MULTIPROCESS_CHILD, "worker", str(count)], cwd=REPO_ROOT,
                                env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)})
               for count in (3, 4)]
    pids = [worker.pid for worker in workers]
    for worker in workers:
        assert worker.wait(60) == 0
    text = run_child(tmp_path, "scrape").stdout
    assert 'relay_requests_total{model="",route="/healthz",status="200"} 7.0' in text
    # Both "workers" have exited without being marked dead: their open streams still count...
    assert "relay_open_streams 2.0" in text
    # ...until gunicorn.conf.py's child_exit hook marks them dead.
    from prometheus_client import multiprocess

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    try:
        for pid in pids:
            multiprocess.mark_process_dead(pid, str(tmp_path))
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    text = run_child(tmp_path, "scrape").stdout
    assert "relay_open_streams 0.0" in text
    assert 'relay_requests_total{model="",route="/healthz",status="200"} 7.0' in text, "counters outlive workers"
