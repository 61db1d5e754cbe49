"""This module provides the processes a benchmark run compares: fake upstream, nginx, relay and LiteLLM.

Each `start_*` returns a `Service` that knows its port, how a client authenticates and which
process ids to sample for RSS, or raises `Unavailable` with a reason the report prints. Every
process is started in its own session and stopped by its own process-group id.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LITELLM_VENV = os.environ.get("BENCH_LITELLM_VENV", "/opt/bench-venvs/litellm")
UPSTREAM_KEY = "bench-upstream-key"
CLIENT_KEY = "bench-client-key"
LITELLM_MASTER_KEY = "sk-bench-master"


class Unavailable(Exception):
    """A target could not be started; the message says why."""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def children(pid):
    """Direct children of `pid`, read from /proc (no psutil needed)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


class Service:
    """A started process group, plus how to reach it."""

    def __init__(self, name, process, port, log_path, workers_are_children=True):
        self.name, self.process, self.port, self.log_path = name, process, port, log_path
        self.workers_are_children = workers_are_children
        self.restart = None

    def worker_pids(self):
        """The processes whose memory counts: the workers, or the process itself if it has none."""
        if self.workers_are_children:
            pids = children(self.process.pid)
            if pids:
                return pids
        return [self.process.pid]

    def rss_kb(self):
        return {pid: rss_kb(pid) for pid in self.worker_pids()}

    def alive(self):
        return self.process.poll() is None

    def stop(self):
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
            except ProcessLookupError:
                pass

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return ""


def launch(name, command, workdir, env=None, cwd=None, unset=()):
    log_path = os.path.join(workdir, f"{name}.log")
    log = open(log_path, "wb")
    environment = {**os.environ, **(env or {})}
    for variable in unset:
        environment.pop(variable, None)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd or workdir,
                               env=environment, start_new_session=True)
    log.close()
    return process, log_path


def wait_http(service, path, timeout, expect=(200,)):
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{service.port}{path}"
    while time.monotonic() < deadline:
        if not service.alive():
            raise Unavailable(f"{service.name} exited: {service.log_tail(5).strip()[-400:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status in expect:
                    return
        except urllib.error.HTTPError as error:
            if error.code in expect:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    service.stop()
    raise Unavailable(f"{service.name} not ready after {timeout:.0f}s: {service.log_tail(5).strip()[-400:]}")


def start_upstream(workdir, events, gap_ms):
    command = [sys.executable, "-m", "bench.upstream", "--port", "0", "--events", str(events),
               "--gap-ms", str(gap_ms)]
    process, log_path = launch("upstream", command, workdir, cwd=REPO)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with open(log_path) as handle:
            for line in handle:
                if line.startswith("PORT "):
                    return Service("upstream", process, int(line.split()[1]), log_path, False)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise Unavailable(f"fake upstream did not start: {open(log_path).read()[-400:]}")


NGINX_CONF = """
worker_processes 2;
worker_rlimit_nofile 65536;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
daemon off;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    client_max_body_size 0;
    upstream fake {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def start_nginx(workdir, upstream_port):
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if binary is None:
        raise Unavailable("nginx not installed (apt-get install nginx-light)")
    folder = os.path.join(workdir, "nginx")
    os.makedirs(folder, exist_ok=True)
    port = free_port()
    conf = os.path.join(folder, "nginx.conf")
    with open(conf, "w") as handle:
        handle.write(NGINX_CONF.format(work=folder, upstream=upstream_port, port=port))
    process, log_path = launch("nginx", [binary, "-p", folder, "-c", conf, "-e", f"{folder}/nginx-error.log"],
                               workdir)
    service = Service("nginx", process, port, log_path)
    wait_http(service, "/healthz-probe", 15, expect=(404,))
    service.restart = lambda: start_nginx(workdir, upstream_port)
    return service


def start_relay(workdir, upstream_port, workers=2):
    if not os.path.exists(os.path.join(REPO, "app.py")):
        raise Unavailable("app.py not found in the repo root")
    gunicorn = shutil.which("gunicorn")
    if gunicorn is None:
        raise Unavailable("gunicorn not installed")
    port = free_port()
    env = {
        "PORT": str(port), "WEB_CONCURRENCY": str(workers),
        "RELAY_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}", "RELAY_UPSTREAM_KEYS": UPSTREAM_KEY,
        "RELAY_API_KEYS": CLIENT_KEY, "RELAY_DB": os.path.join(workdir, "relay.db"),
    }
    # --bind overrides the config's 0.0.0.0: the benchmark stays on loopback.
    command = [gunicorn, "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "app:app"]
    process, log_path = launch("relay", command, workdir, env, cwd=REPO)
    service = Service("relay", process, port, log_path)
    wait_http(service, "/healthz", 60)
    service.restart = lambda: start_relay(workdir, upstream_port, workers)
    return service


def start_stack(workdir, upstream_port, workers=2):
    """The design card's bare framework (bench/stack_app.py) under gunicorn's gevent worker, like relay."""
    gunicorn = shutil.which("gunicorn")
    if gunicorn is None:
        raise Unavailable("gunicorn not installed")
    port = free_port()
    env = {"BENCH_UPSTREAM": f"http://127.0.0.1:{upstream_port}"}
    command = [gunicorn, "-k", "gevent", "-w", str(workers), "--worker-connections", "10000", "--bind",
               f"127.0.0.1:{port}", "--log-level", "warning", "bench.stack_app:app"]
    process, log_path = launch("stack", command, workdir, env, cwd=REPO)
    service = Service("stack", process, port, log_path)
    wait_http(service, "/", 60, expect=(404, 405))  # up: the app answers (it only has a POST route)
    service.restart = lambda: start_stack(workdir, upstream_port, workers)
    return service


LITELLM_CONF_HEAD = "model_list:\n"
LITELLM_MODEL = """  - model_name: {model}
    litellm_params:
      model: gemini/{model}
      api_base: http://127.0.0.1:{upstream}/v1beta
      api_key: {key}
"""
LITELLM_CONF_TAIL = "general_settings:\n  master_key: {master}\n"


def ensure_litellm(install_timeout=900):
    """Installs LiteLLM's venv with bench/setup_litellm.sh unless it is already there."""
    binary = os.path.join(LITELLM_VENV, "bin", "litellm")
    if os.path.exists(binary):
        return binary
    script = os.path.join(REPO, "bench", "setup_litellm.sh")
    try:
        finished = subprocess.run(["bash", script, LITELLM_VENV], capture_output=True, text=True,
                                  timeout=install_timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise Unavailable(f"LiteLLM install timed out after {install_timeout}s") from error
    if finished.returncode != 0 or not os.path.exists(binary):
        raise Unavailable(f"LiteLLM install failed: {(finished.stderr or finished.stdout).strip()[-300:]}")
    return binary


def start_litellm(workdir, upstream_port, models, workers=2):
    binary = ensure_litellm()
    port = free_port()
    conf = os.path.join(workdir, "litellm.yaml")
    with open(conf, "w") as handle:
        handle.write(LITELLM_CONF_HEAD)
        for model in models:
            handle.write(LITELLM_MODEL.format(model=model, upstream=upstream_port, key=UPSTREAM_KEY))
        handle.write(LITELLM_CONF_TAIL.format(master=LITELLM_MASTER_KEY))
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True", "GEMINI_API_BASE": f"http://127.0.0.1:{upstream_port}",
        "GEMINI_API_KEY": UPSTREAM_KEY, "LITELLM_LOG": "ERROR",
    }
    command = [binary, "--config", conf, "--host", "127.0.0.1", "--port", str(port), "--num_workers", str(workers)]
    # No DATABASE_URL: LiteLLM would try to run migrations against it.
    process, log_path = launch("litellm", command, workdir, env, unset=("DATABASE_URL",))
    service = Service("litellm", process, port, log_path)
    wait_http(service, "/health/liveliness", 120)
    service.restart = lambda: start_litellm(workdir, upstream_port, models, workers)
    return service


def make_workdir():
    return tempfile.mkdtemp(prefix="relay-bench-")
