"""This module provides the upstream tests' fixtures: a fake clock, a SQLite store, and apps over a pool of keys.

``store`` here is one SQLite file (the pool's own tests need no Redis twin), not the root conftest's store
that runs a test on both backends.
"""

import json

import pytest

from relay.store.sqlite import SqliteStore
from tests.support import ADMIN_TOKEN, CLIENT_KEY, START, UPSTREAM_URL
from tests.support.clock import FakeClock


@pytest.fixture
def clock():
    return FakeClock(START)


@pytest.fixture
def store(tmp_path):
    opened = SqliteStore(str(tmp_path / "relay.db"))
    yield opened
    opened.close()


def pool_toml(upstream_count, **models):
    """Upstream ``uN`` holds key ``key-N``, has priority N and serves the patterns given as ``uN=[...]`` (all)."""
    tables = []
    for index in range(upstream_count):
        patterns = models.get(f"u{index}", ["*"])
        tables.append(f'[[upstreams]]\nname = "u{index}"\nurl = "{UPSTREAM_URL}"\nkeys = ["key-{index}"]\n'
                      f"priority = {index}\nmodels = {json.dumps(patterns)}\n")
    return "\n".join(tables)


@pytest.fixture
def relay(app_factory, tmp_path):
    """``relay(upstreams=2, env={...}, aliases=..., u0=[model patterns], ...)`` → (test client, services).

    The pool comes from a relay.toml (:func:`pool_toml`), so attempts go ``key-0`` first, then ``key-1``, ...;
    callers present :data:`tests.support.CLIENT_KEY`, the admin :data:`tests.support.ADMIN_TOKEN`.
    """

    def build(upstreams=2, env=None, aliases=None, **models):
        text = pool_toml(upstreams, **models)
        if aliases:
            text += "\n[aliases]\n" + "".join(f'{name} = "{target}"\n' for name, target in aliases.items())
        config = tmp_path / "relay.toml"
        config.write_text(text)
        app = app_factory({"RELAY_CONFIG": str(config), "RELAY_API_KEYS": CLIENT_KEY, "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
                           **(env or {})})
        return app.test_client(), app.extensions["relay"]

    return build
