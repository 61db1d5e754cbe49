"""This module provides the e2e harness: the fake upstream and the real relay (gunicorn) as child processes.

Both run as real processes on loopback ports chosen at runtime, with proxy variables removed, and
write their output to files under the test's tmp directory so tests can read the access log.
:class:`WorkerProbe` measures what each gunicorn worker holds (fds, sockets, greenlets) and
:func:`usage_rows` reads the usage rows a relay wrote, for fault tests that compare against a baseline.
"""
from __future__ import annotations

import base64
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from tests.support import FIXTURES, REPO_ROOT  # noqa: F401  (FIXTURES: re-exported for the e2e suites)

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY")
# Settings a developer may have exported that would leak into the relay under test.
AMBIENT_SETTINGS = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_API_VERSION", "PORT", "WEB_CONCURRENCY")


def clean_env(overrides: dict | None = None) -> dict:
    """The parent environment without proxies or relay settings, plus `overrides` (None removes)."""
    env = {
        name: value for name, value in os.environ.items()
        if name.upper() not in PROXY_VARIABLES and not name.startswith("RELAY_") and name not in AMBIENT_SETTINGS
    }
    env.update(NO_PROXY="*", no_proxy="*", PYTHONUNBUFFERED="1")
    for name, value in (overrides or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http() -> requests.Session:
    """A requests session that never uses proxies from the environment."""
    session = requests.Session()
    session.trust_env = False
    return session


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy; return that value (or the last falsy one)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def body_bytes(entry: dict) -> bytes:
    """The request body the fake upstream logged (exact unless `body_truncated`)."""
    return base64.b64decode(entry["body_b64"])


def header_values(entry: dict, name: str) -> list[str]:
    return [value for key, value in entry["headers"] if key.lower() == name.lower()]


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except FileNotFoundError:
        return ""


def _stop(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the child's process group, wait; then SIGQUIT (gunicorn's quick shutdown, which still runs the
    exit hooks: usage flushed, metrics directory removed), then SIGKILL (the group is ours: start_new_session)."""
    if process.poll() is not None:
        return
    # Responses this process dropped may still hold keep-alive sockets to the child until the cyclic GC
    # runs; gunicorn's graceful shutdown would wait for them.
    gc.collect()
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGQUIT, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


class FakeUpstream:
    """`python -m tests.fakeupstream` as a child process, with its control API as methods."""

    def __init__(self, workdir: Path, name: str = "fake-upstream"):
        self.workdir = Path(workdir)
        self.name = name
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.session = http()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "FakeUpstream":
        self.workdir.mkdir(parents=True, exist_ok=True)
        port_file = self.workdir / f"{self.name}.port"
        port_file.unlink(missing_ok=True)
        stderr_path = self.workdir / f"{self.name}.stderr"
        with open(self.workdir / f"{self.name}.stdout", "wb") as stdout, open(stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.fakeupstream", "--port", "0", "--port-file", str(port_file),
                 "--data-dir", str(self.workdir / f"{self.name}.data")],
                cwd=REPO_ROOT, env=clean_env(), stdout=stdout, stderr=stderr, start_new_session=True,
            )
        ready = wait_until(lambda: port_file.exists() or self.process.poll() is not None, timeout)
        if not ready or self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"fake upstream did not start:\n{_tail(stderr_path)}")
        self.port = int(port_file.read_text())
        return self

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, timeout=5)
        self.session.close()

    def __enter__(self) -> "FakeUpstream":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _call(self, method: str, path: str, **kwargs):
        response = self.session.request(method, self.url + path, timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def requests(self, since: int = 0) -> list[dict]:
        return self._call("GET", f"/_fake/requests?since={since}")

    def script(self, rules) -> dict:
        return self._call("POST", "/_fake/script", json=rules)

    def reset(self) -> None:
        self._call("POST", "/_fake/reset")

    def closed(self) -> list[dict]:
        return self._call("GET", "/_fake/closed")

    def resources(self, key: str | None = None) -> dict:
        """Owned resources (files with owner and sha256, uploads with their chunks, batches, operations, caches)."""
        return self._call("GET", "/_fake/resources" + (f"?key={key}" if key else ""))

    def settings(self, **values) -> dict:
        """Merge progress settings (batch_polls, operation_polls, video_processing_polls, ...); reset restores them."""
        return self._call("POST", "/_fake/settings", json=values)

    def progress(self, name: str, **spec) -> dict:
        """Move a batch (``state=``), operation (done now, optional ``error=``) or file (``state=``) on."""
        return self._call("POST", "/_fake/progress", json={"name": name, **spec})

    def make_file(self, key: str, size_bytes: int, mime_type: str = "application/octet-stream", **spec) -> dict:
        """A downloadable GENERATED file of ``size_bytes`` deterministic bytes owned by ``key``."""
        return self._call("POST", "/_fake/files", json={"key": key, "size_bytes": size_bytes,
                                                         "mime_type": mime_type, **spec})

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[dict]:
        entries = wait_until(lambda: (lambda got: got if len(got) >= count else None)(self.requests()), timeout)
        return entries or self.requests()


class RelayServer:
    """The real relay: `gunicorn -c gunicorn.conf.py app:app` from the repo root with the gevent worker."""

    def __init__(self, workdir: Path, upstream_url: str, env: dict | None = None, workers: int = 2,
                 name: str = "relay"):
        self.workdir = Path(workdir)
        self.upstream_url = upstream_url
        self.env = dict(env or {})
        self.workers = workers
        self.name = name
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.stdout_path = self.workdir / f"{name}.stdout"
        self.stderr_path = self.workdir / f"{name}.stderr"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "RelayServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            self.port = free_port()
            env = clean_env({
                "PORT": self.port, "WEB_CONCURRENCY": self.workers, "RELAY_UPSTREAM_URL": self.upstream_url,
                **self.env,
            })
            with open(self.stdout_path, "ab") as stdout, open(self.stderr_path, "ab") as stderr:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
                    cwd=REPO_ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True,
                )
            if self._wait_ready(timeout):
                return self
            output = _tail(self.stderr_path)
            self.stop()
            if "Address already in use" not in output:
                raise RuntimeError(f"relay did not become ready on port {self.port}:\n{output}")
        raise RuntimeError(f"relay could not bind a free port:\n{_tail(self.stderr_path)}")

    def _wait_ready(self, timeout: float) -> bool:
        session = http()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    # Connection: close, or this idle keep-alive socket would hold a graceful shutdown.
                    if session.get(self.url + "/healthz", timeout=1, headers={"Connection": "close"}).status_code == 200:
                        return True
                except requests.RequestException:
                    pass
                time.sleep(0.1)
            return False
        finally:
            session.close()

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is not None:
            _stop(self.process, timeout)

    def __enter__(self) -> "RelayServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def output_text(self) -> str:
        """Everything the relay printed (stdout + stderr)."""
        return _tail(self.stdout_path, 10**9) + _tail(self.stderr_path, 10**9)

    def access_log(self) -> list[dict]:
        """JSON access-log lines (objects with a request_id) the relay wrote so far."""
        records = []
        for line in self.output_text().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "request_id" in record:
                records.append(record)
        return records

    def access_log_for(self, request_id: str, timeout: float = 5.0) -> list[dict]:
        """Access-log records with this request id, waiting briefly because streams log at their end."""
        def matching():
            return [record for record in self.access_log() if record.get("request_id") == request_id]
        return wait_until(matching, timeout) or []


def genai_client(base_url: str, api_key: str, api_version: str | None = None, timeout_ms: int = 30_000):
    """A google-genai Client pointed at `base_url` (the relay or the fake upstream)."""
    from google import genai
    from google.genai import types

    options = types.HttpOptions(base_url=base_url, api_version=api_version, timeout=timeout_ms)
    return genai.Client(api_key=api_key, http_options=options)


def usage_rows(db_path, request_ids, timeout: float = 10.0) -> dict:
    """The usage rows relay wrote for `request_ids` (request_id -> row), waiting for the background flush."""
    from relay.store.sqlite import SqliteStore

    wanted = set(request_ids)
    store = SqliteStore(str(db_path))
    try:
        def found():
            rows = {row["request_id"]: row for row in store.usage_rows(0, limit=100_000) if row["request_id"] in wanted}
            return rows if len(rows) == len(wanted) else None
        return wait_until(found, timeout, interval=0.2) or {
            row["request_id"]: row for row in store.usage_rows(0, limit=100_000) if row["request_id"] in wanted}
    finally:
        store.close()


class WorkerProbe:
    """What each gunicorn worker of a relay holds: file descriptors, TCP connections and live greenlets.

    fds and connections are read from outside (/proc, psutil); greenlets come from the worker's own
    ``GET /debug/runtime`` (admin token), asked on fresh connections until every worker has answered.
    Upstream connections idle in the pool (ESTABLISHED to the fake upstream) are pooling, not leaks,
    so :meth:`snapshot` reports them apart.
    """

    def __init__(self, relay: "RelayServer", admin_token: str | None = None, upstream_port: int | None = None):
        self.relay = relay
        self.admin_token = admin_token
        self.upstream_port = upstream_port

    def pids(self) -> list[int]:
        import psutil

        return sorted(child.pid for child in psutil.Process(self.relay.process.pid).children())

    def greenlets(self, tries: int = 60) -> dict[int, int]:
        wanted, seen = set(self.pids()), {}
        session = http()
        try:
            for _attempt in range(tries):
                response = session.get(self.relay.url + "/debug/runtime", timeout=10,
                                       headers={"Authorization": f"Bearer {self.admin_token}", "Connection": "close"})
                response.raise_for_status()
                body = response.json()
                seen[body["pid"]] = body["greenlets"]
                if wanted <= set(seen):
                    break
        finally:
            session.close()
        return seen

    def snapshot(self, with_greenlets: bool = True) -> dict[int, dict]:
        import psutil

        greenlets = self.greenlets() if with_greenlets and self.admin_token else {}
        report = {}
        for pid in self.pids():
            connections = psutil.Process(pid).net_connections(kind="tcp")
            pooled = sum(1 for conn in connections if conn.status == psutil.CONN_ESTABLISHED and conn.raddr
                         and conn.raddr.port == self.upstream_port)
            report[pid] = {
                "fds": len(os.listdir(f"/proc/{pid}/fd")),
                "pooled_upstream": pooled,
                "client_connections": sum(1 for conn in connections if conn.laddr.port == self.relay.port
                                          and conn.status != psutil.CONN_LISTEN),
                "close_wait": sum(1 for conn in connections if conn.status == psutil.CONN_CLOSE_WAIT),
                "greenlets": greenlets.get(pid),
            }
        return report

    @staticmethod
    def excess(baseline: dict, now: dict, fd_slack: int = 3, greenlet_slack: int = 2) -> list[str]:
        """What `now` holds beyond `baseline` (empty when every worker is back to it)."""
        problems = []
        if set(now) != set(baseline):
            problems.append(f"workers changed: {sorted(baseline)} -> {sorted(now)}")
        for pid, then in baseline.items():
            current = now.get(pid)
            if current is None:
                continue
            own_fds = current["fds"] - current["pooled_upstream"]
            if own_fds > then["fds"] - then["pooled_upstream"] + fd_slack:
                problems.append(f"worker {pid}: {own_fds} fds besides pooled upstream connections, was "
                                f"{then['fds'] - then['pooled_upstream']}")
            if current["client_connections"] > max(then["client_connections"], 1):
                problems.append(f"worker {pid}: {current['client_connections']} client connections still open")
            if current["close_wait"]:
                problems.append(f"worker {pid}: {current['close_wait']} sockets in CLOSE_WAIT")
            if then["greenlets"] is not None and current["greenlets"] is not None \
                    and current["greenlets"] > then["greenlets"] + greenlet_slack:
                problems.append(f"worker {pid}: {current['greenlets']} greenlets, was {then['greenlets']}")
        return problems

    def wait_for_baseline(self, baseline: dict, timeout: float = 30.0) -> list[str]:
        """Poll until every worker is back to `baseline`; the remaining excess (empty on success)."""
        deadline = time.monotonic() + timeout
        while True:
            problems = self.excess(baseline, self.snapshot())
            if not problems or time.monotonic() > deadline:
                return problems
            time.sleep(0.5)
