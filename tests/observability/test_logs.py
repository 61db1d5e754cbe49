"""relay's log format: every line one JSON object, ``extra`` fields as fields, a traceback as one field, keys
scrubbed; gunicorn's own lines through relay_worker.RelayLogger; an upstream failure logged with its cause."""

import io
import json
import logging
import socket

import pytest
import requests
from gunicorn.config import Config

import relay_worker
from relay.observability import logs
from relay.upstream import http as upstream_http


def formatted(record_args, exc_info=None, **extra):
    record = logging.LogRecord("relay.test", logging.WARNING, __file__, 1, *record_args, exc_info)
    record.__dict__.update(extra)
    return logs.JsonFormatter().format(record)


def test_a_line_is_one_json_object_with_the_extra_fields():
    line = formatted(("upstream %s failed", ("google",)), cause="dns", attempts=2)
    assert "\n" not in line
    parsed = json.loads(line)
    assert (parsed["level"], parsed["logger"], parsed["message"]) == ("WARNING", "relay.test", "upstream google failed")
    assert parsed["cause"] == "dns" and parsed["attempts"] == 2 and isinstance(parsed["ts"], float) and parsed["pid"]


def test_a_traceback_is_one_field():
    try:
        raise ValueError("broken")
    except ValueError:
        import sys

        line = formatted(("flush failed", ()), exc_info=sys.exc_info())
    parsed = json.loads(line)
    assert "\n" not in line and parsed["traceback"].startswith("Traceback")
    assert "ValueError: broken" in parsed["traceback"]


@pytest.mark.parametrize("text", [
    "GET /v1beta/models?key=AIzaSyKEY123 HTTP/1.1", "x-goog-api-key: AIzaSyKEY123",
    "Authorization: Bearer AIzaSyKEY123",
    "GET /x?alt=sse&key=AIzaSyKEY123", "%3Fkey=AIzaSyKEY123",
])
def test_keys_are_scrubbed_everywhere_in_the_line(text):
    line = formatted(("%s", (text,)), request_line=text)
    assert "AIzaSyKEY123" not in line and "[redacted]" in line
    json.loads(line)


def test_gunicorn_lines_are_json_and_scrubbed():
    cfg = Config()
    cfg.set("errorlog", "-")
    logger = relay_worker.RelayLogger(cfg)
    stream = io.StringIO()
    for handler in logger.error_log.handlers:
        handler.setStream(stream)
    logger.warning("Invalid request from ip=%s: %s", "10.0.0.1", "Invalid HTTP Version: 'GET /x?key=SECRET99 HTTP/9'")
    parsed = json.loads(stream.getvalue())
    assert parsed["logger"] == "gunicorn.error" and parsed["level"] == "WARNING"
    assert "SECRET99" not in stream.getvalue() and "key=[redacted]" in parsed["message"]


def test_install_is_idempotent_and_sets_the_level():
    logs.install("warning")
    logs.install("debug")
    relay_log = logging.getLogger("relay")
    assert sum(getattr(handler, "relay_json", False) for handler in relay_log.handlers) == 1
    assert relay_log.level == logging.DEBUG
    logs.install("info")


def test_an_unreachable_upstream_is_logged_with_its_cause(caplog):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    with caplog.at_level(logging.WARNING, logger="relay.upstream"):
        with pytest.raises(upstream_http.UpstreamFailure) as failed:
            upstream_http.send(upstream_http.make_session(), "POST", f"http://127.0.0.1:{port}/v1beta/x", {}, b"{}",
                               (2.0, 2.0))
    assert failed.value.reason == "connection" and failed.value.cause == "refused"
    [record] = [record for record in caplog.records if record.name == "relay.upstream"]
    assert record.cause == "refused" and record.upstream_url == f"http://127.0.0.1:{port}"
    assert "connection refused" in record.getMessage()


@pytest.mark.parametrize("error, cause", [
    (requests.ConnectionError(socket.gaierror(-2, "Name or service not known")), "dns"),
    (requests.exceptions.SSLError("handshake"), "tls"),
    (requests.ConnectTimeout(), "connect_timeout"),
    (requests.ReadTimeout(), "timeout"),
    (requests.ConnectionError(ConnectionResetError(104, "reset")), "reset"),
    (requests.ConnectionError("something else"), "connection"),
])
def test_failure_causes(error, cause):
    assert upstream_http.failure_cause(error) == cause
