"""relay_worker and gunicorn.conf.py without a running server: what they import, what loading them changes (nothing),
the start-up checks in the master, and the Google-shaped answers to what gunicorn refuses.

tests/e2e/test_startup_e2e.py runs the same against real gunicorn processes.
"""

import json
import resource
import socket
import subprocess
import sys
from http import HTTPStatus
from types import SimpleNamespace

import pytest
from gunicorn.http import errors as http_errors

import relay_worker
from relay.config import load_settings
from tests.support import REPO_ROOT

# Modules that must not load in gunicorn's master: gevent patches each worker before they may.
HEAVY = ("requests", "urllib3", "flask", "werkzeug", "redis", "marshmallow", "prometheus_client", "orjson",
         "sqlite3", "relay.services", "relay.upstream")


def run_python(code, env=None, preexec_fn=None):
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                            env=env, preexec_fn=preexec_fn)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_worker_module_and_the_gunicorn_config_load_nothing_gevent_must_patch_first():
    loaded = run_python(
        "import runpy, sys; import relay_worker; runpy.run_path('gunicorn.conf.py'); "
        f"print(sorted(name for name in sys.modules if name.split('.')[0] in {HEAVY!r} or name in {HEAVY!r}))")
    assert loaded.strip() == "[]"


def test_loading_relay_changes_nothing_in_the_process():
    """No import-time side effects: http.client's header parser, the file limit and the metrics directory are
    set up by explicit calls (create_app, gunicorn's on_starting hook)."""
    code = ("import http.client, os, resource, runpy; parser = http.client.parse_headers; "
            "limit = resource.getrlimit(resource.RLIMIT_NOFILE); "
            "import relay, relay.config, relay.upstream.http, relay_worker; runpy.run_path('gunicorn.conf.py'); "
            "print(http.client.parse_headers is parser, resource.getrlimit(resource.RLIMIT_NOFILE) == limit, "
            "os.environ.get('PROMETHEUS_MULTIPROC_DIR'))")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    assert run_python(code, env=env, preexec_fn=_lower_file_limit).split() == ["True", "True", "None"]


def test_the_header_parser_is_installed_by_an_explicit_call():
    code = ("import http.client; from relay.upstream import http as upstream; before = http.client.parse_headers; "
            "upstream.install_header_parser(); "
            "print(before is upstream.parse_response_headers, "
            "http.client.parse_headers is upstream.parse_response_headers)")
    assert run_python(code).split() == ["False", "True"]


def _lower_file_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))


def test_raise_file_limit_lifts_the_soft_limit_to_the_hard_one():
    code = ("import resource, relay_worker; relay_worker.raise_file_limit(); "
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); print(soft == hard or soft == 1 << 20)")
    assert run_python(code, preexec_fn=_lower_file_limit).strip() == "True"


# --- start-up in the master --------------------------------------------------------------------------------


def fake_server(bind=None, port=8080):
    return SimpleNamespace(cfg=SimpleNamespace(bind=bind or [f"0.0.0.0:{port}"],
                                               address=[("0.0.0.0", port)] if bind is None else bind))


def error_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip() and json.loads(line)["level"] == "ERROR"]


def test_read_settings_keeps_the_problem_for_on_starting():
    settings, problem = relay_worker.read_settings({"PORT": "http"})
    assert settings.port == 8080 and problem.setting == "PORT"


def test_a_bad_setting_stops_start_up_with_one_json_line(capfd):
    settings, problem = relay_worker.read_settings({"RELAY_GRACEFUL_TIMEOUT": "soon"})
    with pytest.raises(SystemExit) as stopped:
        relay_worker.start_up(fake_server(), settings, problem)
    assert stopped.value.code == 4
    [line] = error_lines(capfd.readouterr().err)
    assert line["setting"] == "RELAY_GRACEFUL_TIMEOUT" and "RELAY_GRACEFUL_TIMEOUT=30" in line["message"]


def test_a_port_in_use_names_the_setting_to_change(capfd):
    with socket.create_server(("0.0.0.0", 0)) as taken:
        port = taken.getsockname()[1]
        settings = load_settings({"PORT": str(port)})
        with pytest.raises(SystemExit):
            relay_worker.start_up(fake_server(port=port), settings, None)
    [line] = error_lines(capfd.readouterr().err)
    assert line["setting"] == "PORT" and f"0.0.0.0:{port}: Address already in use" in line["message"]
    assert "set PORT to a free port" in line["message"]


def test_an_open_relay_is_refused_once_from_a_child_process(capfd, tmp_path):
    settings = load_settings({"RELAY_UPSTREAM_KEYS": "up-key", "RELAY_DB": str(tmp_path / "relay.db")})
    with pytest.raises(SystemExit) as stopped:
        relay_worker.start_up(fake_server(port=_free_port()), settings, None)
    assert stopped.value.code == 4
    [line] = error_lines(capfd.readouterr().err)
    assert line["setting"] == "RELAY_API_KEYS" and "RELAY_API_KEYS=<key>" in line["message"]


def test_a_key_made_with_the_cli_lets_relay_start_and_the_store_loads_only_in_the_child(tmp_path):
    db = tmp_path / "relay.db"
    run_python("from relay.store.sqlite import SqliteStore; from relay.clients.auth import hash_key; "
               f"store = SqliteStore({str(db)!r}); store.add_client_key({{'name': 'alice', 'key_hash': "
               "hash_key('sk-relay-x'), 'created': 0, 'revoked': False}); store.close()")
    code = ("import sys, types, relay_worker; from relay.config import load_settings; "
            f"settings = load_settings({{'RELAY_UPSTREAM_KEYS': 'up-key', 'RELAY_DB': {str(db)!r}}}); "
            "server = types.SimpleNamespace(cfg=types.SimpleNamespace(bind=['x'], address=[])); "
            "relay_worker.start_up(server, settings, None); relay_worker.clean_up(server); "
            f"print([name for name in sys.modules if name.split('.')[0] in {HEAVY!r} "
            "or name.startswith('relay.store')])")
    assert run_python(code).strip() == "[]"


def test_start_up_makes_a_metrics_directory_and_on_exit_removes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # so that monkeypatch removes what start_up sets
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    server = fake_server(port=_free_port())
    relay_worker.start_up(server, load_settings({"RELAY_DB": str(tmp_path / "relay.db")}), None)
    made = server.relay_metrics_dir
    assert made and (tmp_path / made).is_dir()
    relay_worker.clean_up(server)
    assert not (tmp_path / made).exists()


def _free_port():
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return probe.getsockname()[1]


# --- what gunicorn refuses, in Google's shape ----------------------------------------------------------------


@pytest.mark.parametrize("exc, code, status", [
    (http_errors.InvalidRequestLine("GET /x?key=k"), 400, "INVALID_ARGUMENT"),
    (http_errors.InvalidHeaderName("X Y"), 400, "INVALID_ARGUMENT"),
    (http_errors.LimitRequestLine(9000, 4094), 414, "INVALID_ARGUMENT"),
    (http_errors.LimitRequestHeaders("too many"), 431, "INVALID_ARGUMENT"),
    (http_errors.ExpectationFailed("200-ok"), 417, "FAILED_PRECONDITION"),
    (http_errors.UnsupportedTransferCoding("foo"), 501, "UNIMPLEMENTED"),
    (http_errors.InvalidResponseHeader("x"), 500, "INTERNAL"),
    (RuntimeError("a bug"), 500, "INTERNAL"),
])
def test_handle_error_answers_with_google_json_and_a_true_status_line(exc, code, status):
    ours, theirs = socket.socketpair()
    logged = []
    worker = SimpleNamespace(log=SimpleNamespace(warning=lambda *a, **k: logged.append(a),
                                                 exception=lambda *a, **k: logged.append(a)))
    with ours, theirs:
        theirs.shutdown(socket.SHUT_WR)  # the client has sent everything
        relay_worker.RelayWorker.handle_error(worker, None, ours, ("127.0.0.1", 5), exc)
        answer = theirs.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n")[0].decode()
    assert status_line == f"HTTP/1.1 {code} {HTTPStatus(code).phrase}"
    assert b"Content-Type: application/json; charset=UTF-8" in head and b"X-Request-Id: " in head
    error = json.loads(body)["error"]
    assert list(error) == ["code", "message", "status"] and (error["code"], error["status"]) == (code, status)
    assert b"key=k" not in answer and logged
