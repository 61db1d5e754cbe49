"""Start-up and the server's edges against real gunicorn: bad settings refused once, the start-up line, JSON log
lines, and Google-shaped answers to malformed HTTP (raw sockets, since HTTP clients refuse to send it)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from .harness import REPO_ROOT, clean_env, free_port, http, wait_until

pytestmark = pytest.mark.timeout(120)

GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"]
LAUNCHER = [sys.executable, "-m", "relay"]
CLIENT_KEY = "client-key-startup-Qq71zz"
UPSTREAM_KEY = "up-key-startup-Ww52xx"
ADMIN_TOKEN = "admin-token-startup-Ee38yy"
REDIS_PASSWORD = "redis-password-Rr19uu"


def json_lines(text):
    """Every line of ``text`` parsed as JSON (a line that is not JSON fails the test)."""
    lines = []
    for line in text.splitlines():
        if line.strip():
            try:
                lines.append(json.loads(line))
            except ValueError:
                pytest.fail(f"a log line is not JSON: {line!r}")
    return lines


def refused_start(tmp_path, env, command=GUNICORN):
    port = free_port()
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                            env=clean_env({"PORT": port, "RELAY_DB": tmp_path / "relay.db", **env}))
    return result, port


def assert_refused_once(result, setting, *words):
    assert result.returncode == 4, result.stderr
    lines = json_lines(result.stdout + result.stderr)
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1, errors
    assert errors[0]["setting"] == setting and setting in errors[0]["message"]
    for word in words:
        assert word in errors[0]["message"]
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "HaltServer" not in output
    assert "Listening at" not in output and "Booting worker" not in output, "nothing was bound, no worker forked"


@pytest.mark.parametrize("command, variable, value", [
    (GUNICORN, "PORT", "eighty"),
    (GUNICORN, "PORT", "70000"),
    (GUNICORN, "WEB_CONCURRENCY", "0"),
    (LAUNCHER, "WEB_CONCURRENCY", "four"),  # gunicorn itself would die on this one with a traceback
    (GUNICORN, "RELAY_WORKER_TIMEOUT", "0"),
    (GUNICORN, "RELAY_GRACEFUL_TIMEOUT", "-3"),
    (GUNICORN, "RELAY_WORKER_CONNECTIONS", "many"),
    (GUNICORN, "RELAY_LOG_LEVEL", "verbose"),
    (GUNICORN, "RELAY_MAX_ATTEMPTS", "0"),
    (LAUNCHER, "RELAY_READ_TIMEOUT", "forever"),
])
def test_a_bad_setting_stops_start_up_once(tmp_path, command, variable, value):
    result, _port = refused_start(tmp_path, {variable: value}, command)
    assert_refused_once(result, variable, f"{variable}={value!r}", "e.g.")


def test_an_open_relay_is_refused_once_without_a_halt_server_traceback(tmp_path):
    result, port = refused_start(tmp_path, {"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "WEB_CONCURRENCY": 3})
    assert_refused_once(result, "RELAY_API_KEYS", "RELAY_API_KEYS=<key>", "keys create")
    assert UPSTREAM_KEY not in result.stderr


def test_a_port_in_use_names_the_setting_to_change(tmp_path):
    with socket.create_server(("0.0.0.0", 0)) as taken:
        taken.listen()
        port = taken.getsockname()[1]
        result, _ = refused_start(tmp_path, {"PORT": port})
    assert_refused_once(result, "PORT", f"0.0.0.0:{port}: Address already in use", "set PORT to a free port")


# -- a running relay --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def relay(module_relay_factory):
    """Managed, with an admin token, a Redis that is down (its password must never show) and an upstream that
    refuses connections."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    return module_relay_factory(env={
        "RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY, "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/3",
    }, workers=2, upstream_url=f"http://127.0.0.1:{closed_port}")


def raw(relay, data):
    """Send ``data`` on a fresh connection; everything the server answers until it closes (or 3 s pass)."""
    with socket.create_connection(("127.0.0.1", relay.port), timeout=3) as connection:
        connection.sendall(data)
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def google_error(answer, code, reason):
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == f"HTTP/1.1 {code} {reason}".encode(), answer[:300]
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert list(error) == ["code", "message", "status"] and error["code"] == code
    return error


def test_the_start_up_line_says_what_relay_does_and_no_secret(relay):
    [line] = [line for line in json_lines(relay.output_text()) if line.get("logger") == "relay.startup"]
    assert line["mode"] == "managed" and line["admin_views"] == "on" and line["workers"] == 2
    assert line["upstreams"] == [{"name": "google", "url": relay.upstream_url, "keys": 1}]
    assert line["store"] == f"redis://127.0.0.1:{line['store'].rsplit(':', 1)[1]}"
    assert line["store"].endswith("/3") and line["listening"] == [f"http://0.0.0.0:{relay.port}"]
    for word in ("managed mode", relay.upstream_url, "1 key", "redis://127.0.0.1", "admin views on"):
        assert word in line["message"]


@pytest.mark.parametrize("request_bytes, code, reason, status", [
    (b"GARBAGE\r\n\r\n", 400, "Bad Request", "INVALID_ARGUMENT"),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: relay\r\n\r\n", 414, "Request-URI Too Long", "INVALID_ARGUMENT"),
    (b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", 431,
     "Request Header Fields Too Large", "INVALID_ARGUMENT"),
    (b"POST /healthz HTTP/1.1\r\nHost: relay\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}", 417,
     "Expectation Failed", "FAILED_PRECONDITION"),
    (b"POST /healthz HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: foo\r\n\r\n", 501, "Not Implemented",
     "UNIMPLEMENTED"),
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "Bad Request", "INVALID_ARGUMENT"),
])
def test_malformed_http_gets_google_shaped_json(relay, request_bytes, code, reason, status):
    error = google_error(raw(relay, request_bytes), code, reason)
    assert error["status"] == status


def test_an_http_1_1_request_without_host_is_400(relay):
    answer = raw(relay, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
    error = google_error(answer, 400, "BAD REQUEST")
    assert "Host" in error["message"]
    assert raw(relay, b"GET /healthz HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200 ")


@pytest.mark.parametrize("script_name", [b"/healthz", b"/elsewhere"])
def test_a_script_name_header_from_the_network_is_ignored(relay, script_name):
    answer = raw(relay, b"GET /healthz HTTP/1.1\r\nHost: relay\r\nSCRIPT_NAME: " + script_name +
                 b"\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"status":"ok"}\n')


def test_every_log_line_is_json_and_carries_no_secret(relay):
    raw(relay, b"GET /v1beta/models?key=" + CLIENT_KEY.encode() + b"\r\n\r\n")  # a request line gunicorn refuses
    response = http().post(relay.url + "/v1beta/models/gemini-2.5-flash:generateContent", timeout=30,
                           json={"contents": [{"parts": [{"text": "hi"}]}]}, headers={"x-goog-api-key": CLIENT_KEY})
    assert response.status_code == 503

    def unreachable():
        return [line for line in json_lines(relay.output_text()) if line.get("logger") == "relay.upstream"]

    [failure] = wait_until(unreachable)
    assert failure["cause"] == "refused" and failure["upstream_url"] == relay.upstream_url
    assert "connection refused" in failure["message"]
    gunicorn_lines = [line for line in json_lines(relay.output_text()) if line.get("logger") == "gunicorn.error"]
    assert any("key=[redacted]" in line["message"] for line in gunicorn_lines), "gunicorn logged the refused line"
    output = relay.output_text()
    for secret in (CLIENT_KEY, UPSTREAM_KEY, ADMIN_TOKEN, REDIS_PASSWORD):
        assert secret not in output
