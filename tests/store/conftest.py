"""This module provides the store fixtures: one redis-server per session and a fresh store per backend."""

import pytest
import redis

from relay.store import open_store
from tests.support.redis_server import start_redis


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
