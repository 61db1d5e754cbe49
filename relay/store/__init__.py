"""This package provides the shared state (SQLite on one box, Redis across instances): open_store picks the
backend, and the store API is re-exported here."""

from relay.store.base import KeyExists, Store, StoreError

__all__ = ["KeyExists", "Store", "StoreError", "open_store"]


def open_store(redis_url: str | None, sqlite_path: str) -> Store:
    """Return a RedisStore when redis_url is set (several instances), else a SqliteStore on sqlite_path.

    Nothing connects yet: each process opens its connection on first use.
    """
    if redis_url:
        from relay.store.redis_store import RedisStore  # redis is only imported when it is configured

        return RedisStore(redis_url)
    from relay.store.sqlite import SqliteStore

    return SqliteStore(sqlite_path)
