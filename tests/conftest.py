"""This module provides the shared unit-test fixtures: apps built from a settings dict, a mocked upstream, the access log.

Tests build apps only through ``app_factory`` / ``module_app_factory`` (tests/test_layout_tests.py checks it):
apps never read ``os.environ`` (``create_app(environ=...)``), each gets its own SQLite file under
``tmp_path``, ``RELAY_UPSTREAM_URL`` defaults to :data:`tests.support.UPSTREAM_URL`, which ``mock_upstream``
answers for, and every app is shut down after its test (or module).  Shared constants live in
``tests.support``.  Nothing here reads ``/work/shared``: recorded traffic lives in ``tests/fixtures/gemini``.
"""

import json
import logging

import pytest
import redis
import responses

from relay import create_app
from relay.observability import accesslog
from relay.store import open_store
from tests.support import MANAGED, UPSTREAM_URL
from tests.support.redis_server import start_redis


def _factory(directory):
    """A builder of relay apps whose SQLite files live in ``directory``, and the list of apps it built."""
    apps = []

    def build(env=None, *, environ=None, check_open=False, **kwargs):
        if environ is None:
            environ = {"RELAY_UPSTREAM_URL": UPSTREAM_URL, "RELAY_DB": str(directory / f"relay-{len(apps)}.db")}
            environ.update(env or {})
            environ = {name: value for name, value in environ.items() if value is not None}
        elif env is not None:
            raise TypeError("env goes over the defaults, environ replaces them: pass one of them")
        app = create_app(environ=environ, check_open=check_open, **kwargs)
        apps.append(app)
        return app

    return build, apps


@pytest.fixture
def app_factory(tmp_path):
    """``app_factory({"RELAY_API_KEYS": "..."})`` builds a fresh relay app, shut down after the test.

    ``env`` goes over the defaults (upstream :data:`UPSTREAM_URL`, a database file of its own); a None value
    removes a default.  ``environ=`` is the whole environment instead (e.g. ``{}`` with ``store=``);
    ``check_open=True`` refuses an open relay as production start-up does; ``overrides=`` and ``store=`` go
    to create_app.
    """
    build, apps = _factory(tmp_path)
    yield build
    for app in apps:
        app.relay_shutdown()


@pytest.fixture(scope="module")
def module_app_factory(tmp_path_factory):
    """Like ``app_factory``, for apps a whole test module shares (~30 ms saved per test).

    Only for tests that leave no state behind: an upstream 429 or invalid-key answer cools down or
    disables the app's upstream key for every later test.
    """
    build, apps = _factory(tmp_path_factory.mktemp("relay"))
    yield build
    for app in apps:
        app.relay_shutdown()


@pytest.fixture(scope="module")
def managed(request, module_app_factory):
    """A test client of the module's managed-mode app: the module's ``MANAGED`` settings, else
    :data:`tests.support.MANAGED` (relay's upstream key, one client key)."""
    return module_app_factory(getattr(request.module, "MANAGED", MANAGED)).test_client()


@pytest.fixture(scope="module")
def passthrough(module_app_factory):
    """A test client of the module's passthrough app: no upstream keys, the caller's own key goes upstream."""
    return module_app_factory({}).test_client()


@pytest.fixture
def mock_upstream():
    """The upstream as a ``responses`` mock: register answers on it, read ``.calls`` for what relay sent.

    Unregistered URLs fail like a refused connection, so an unexpected upstream call shows up as a 503.
    """
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def google_error():
    """``google_error(response, 401, "UNAUTHENTICATED")`` checks Google's error shape and returns ``body["error"]``.

    ``wrapped=True`` expects the one-element JSON array a non-SSE stream call gets (``[{"error": ...}]``).
    """

    def check(response, code, status=None, wrapped=False):
        assert response.status_code == code, response.data[:2000]
        body = json.loads(response.data)
        if wrapped:
            assert isinstance(body, list) and len(body) == 1, response.data[:2000]
            body = body[0]
        assert isinstance(body, dict) and list(body) == ["error"], response.data[:2000]
        error = body["error"]
        assert list(error)[:3] == ["code", "message", "status"]
        assert error["code"] == code
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["status"], str) and error["status"].isupper()
        if status is not None:
            assert error["status"] == status
        return error

    return check


@pytest.fixture
def access_log():
    """The ``relay.access`` lines written during the test, parsed (a line is written when a response is closed)."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(json.loads(record.getMessage()))

    accesslog.init_logging()  # first, so relay's own stderr handler is installed whatever the test order
    handler = Collect()
    logger = logging.getLogger("relay.access")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


# -- shared-state stores: one redis-server per session, a fresh store per backend ----------------------

@pytest.fixture(scope="session")
def redis_url():
    url, stop = start_redis()
    yield url
    stop()


@pytest.fixture(params=["sqlite", "redis"])
def store_location(request, tmp_path) -> tuple[str | None, str]:
    """(redis_url, sqlite_path) as open_store takes them; the Redis database is flushed first."""
    if request.param == "sqlite":
        return None, str(tmp_path / "relay.sqlite3")
    url = request.getfixturevalue("redis_url")
    with redis.Redis.from_url(url) as admin:
        admin.flushall()
    return url, str(tmp_path / "unused.sqlite3")


@pytest.fixture
def store(store_location):
    opened = open_store(*store_location)
    yield opened
    opened.close()
