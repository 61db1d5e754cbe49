"""This module provides a throwaway loopback redis-server for tests: start_redis() and redis_server()."""

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable

import pytest
import redis

START_TIMEOUT_S = 10.0
START_ATTEMPTS = 3


def redis_server_binary() -> str | None:
    fallback = "/usr/bin/redis-server"
    return shutil.which("redis-server") or (fallback if os.path.exists(fallback) else None)


def start_redis() -> tuple[str, Callable[[], None]]:
    """Start redis-server on a free loopback port; return (url, stop).

    Without the binary the calling test is skipped, or failed when the CI environment variable is set
    (CI must not silently skip). Install it with `apt-get install redis-server`.
    """
    binary = redis_server_binary()
    if binary is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    failures = []
    for _ in range(START_ATTEMPTS):
        # The port may be taken between choosing and binding by servers other tests start: retry.
        started = _try_start(binary, _free_port())
        if isinstance(started, tuple):
            return started
        failures.append(started)
    raise RuntimeError("redis-server did not start: " + " | ".join(failures))


@contextlib.contextmanager
def redis_server():
    """Run a redis-server for the duration of the block and yield its URL."""
    url, stop = start_redis()
    try:
        yield url
    finally:
        stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _try_start(binary: str, port: int):
    """Return (url, stop) once the server answers PING, or a description of why it did not."""
    workdir = tempfile.mkdtemp(prefix="relay-redis-")
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", workdir, "--daemonize", "no", "--loglevel", "warning"]
    log_path = os.path.join(workdir, "redis.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"

    def stop():
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2, socket_timeout=1.0)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                with open(log_path, "rb") as log:
                    output = log.read().decode(errors="replace").strip()
                stop()
                return f"exited with {process.returncode} on port {port}: {output[-300:]}"
            try:
                # Another test's server may hold the port and answer first: make sure the pid is ours.
                if client.info("server")["process_id"] == process.pid:
                    return url, stop
                stop()
                return f"port {port} is served by another process"
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.02)
            except redis.RedisError as err:
                stop()
                return f"port {port} answered but not as our redis-server: {err}"
    finally:
        client.close()
    stop()
    return f"no PING answer on port {port} within {START_TIMEOUT_S:.0f}s"
