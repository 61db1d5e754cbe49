"""This module provides the SQLite store's tables, its SQL statements, and the migrations that bring a
database file written by an earlier relay up to date (each run once, by the first process to open it)."""

import orjson

from relay.store.base import CACHES, USAGE_DEFAULTS, migrated_cache_owner

SCHEMA = """
CREATE TABLE IF NOT EXISTS key_health (
    key_id TEXT PRIMARY KEY, state TEXT NOT NULL DEFAULT 'healthy', until REAL NOT NULL DEFAULT 0,
    reason TEXT, last_failure_at REAL, last_failure_reason TEXT, last_used_at REAL);
CREATE INDEX IF NOT EXISTS key_health_blocked ON key_health (until) WHERE state != 'healthy';
CREATE TABLE IF NOT EXISTS key_counters (
    key_id TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (key_id, name));
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, name TEXT NOT NULL, client TEXT, owner TEXT NOT NULL, expire_at REAL NOT NULL,
    PRIMARY KEY (kind, name));
CREATE INDEX IF NOT EXISTS resources_by_client ON resources (kind, client, name);
CREATE INDEX IF NOT EXISTS resources_expire_at ON resources (expire_at);
CREATE TABLE IF NOT EXISTS resource_claims (
    kind TEXT NOT NULL, name TEXT NOT NULL, claim TEXT NOT NULL, PRIMARY KEY (kind, name, claim));
CREATE TABLE IF NOT EXISTS client_keys (
    name TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, record TEXT NOT NULL, last_used REAL);
CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, tokens REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, request_id TEXT, client TEXT, requested_model TEXT,
    upstream_model TEXT, upstream TEXT, key_id TEXT, status INTEGER NOT NULL, upstream_status INTEGER,
    prompt_tokens INTEGER NOT NULL, candidates_tokens INTEGER NOT NULL, thoughts_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL, tool_use_tokens INTEGER NOT NULL, total_tokens INTEGER NOT NULL,
    modalities TEXT NOT NULL, latency_ms REAL NOT NULL, streamed INTEGER NOT NULL, aborted INTEGER NOT NULL,
    route TEXT, door TEXT, batch INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
CREATE INDEX IF NOT EXISTS usage_client_ts ON usage (client, ts);
CREATE TABLE IF NOT EXISTS leases (grp TEXT NOT NULL, holder TEXT NOT NULL, until REAL NOT NULL, PRIMARY KEY (grp, holder));
"""

USAGE_COLUMNS = tuple(USAGE_DEFAULTS)
INSERT_USAGE = f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) VALUES ({', '.join('?' * len(USAGE_COLUMNS))})"
SELECT_USAGE = f"SELECT {', '.join(USAGE_COLUMNS)} FROM usage"
GROUP_EXPRESSIONS = {
    "model": "requested_model", "upstream_model": "upstream_model", "key": "client", "day": "strftime('%Y-%m-%d', ts, 'unixepoch')",
    "status": "status", "upstream": "upstream", "door": "door",
    "kind": "CASE WHEN batch THEN 'batch' ELSE 'interactive' END",
}
# Claims whose resource is gone (deleted, or expired and swept).
DROP_ORPHAN_CLAIMS = """
DELETE FROM resource_claims WHERE NOT EXISTS (
    SELECT 1 FROM resources WHERE resources.kind = resource_claims.kind AND resources.name = resource_claims.name)
"""

COOL_DOWN = """
INSERT INTO key_health (key_id, state, until, reason, last_failure_at, last_failure_reason)
VALUES (:key_id, 'cooling', :until, :reason, :now, :reason)
ON CONFLICT (key_id) DO UPDATE SET
    state = CASE WHEN state = 'disabled' AND until > :now THEN 'disabled' ELSE 'cooling' END,
    reason = CASE WHEN state = 'disabled' AND until > :now THEN reason ELSE :reason END,
    until = CASE WHEN state != 'healthy' AND until > :until THEN until ELSE :until END,
    last_failure_at = :now, last_failure_reason = :reason
"""
DISABLE = """
INSERT INTO key_health (key_id, state, until, reason, last_failure_at, last_failure_reason)
VALUES (:key_id, 'disabled', :until, :reason, :now, :reason)
ON CONFLICT (key_id) DO UPDATE SET state = 'disabled', until = :until, reason = :reason,
    last_failure_at = :now, last_failure_reason = :reason
"""
ADD_KEY_COUNTER = """
INSERT INTO key_counters (key_id, name, value) VALUES (?, ?, ?)
ON CONFLICT (key_id, name) DO UPDATE SET value = value + excluded.value
"""
MARK_KEY_USED = """
INSERT INTO key_health (key_id, last_used_at, last_failure_at) VALUES (:key_id, :now, :failed_at)
ON CONFLICT (key_id) DO UPDATE SET last_used_at = :now, last_failure_at = coalesce(:failed_at, last_failure_at)
"""
INCR = """
INSERT INTO counters (name, value, expires_at) VALUES (:name, :amount, :clock + :ttl)
ON CONFLICT (name) DO UPDATE SET
    value = CASE WHEN expires_at <= :clock THEN :amount ELSE value + :amount END,
    expires_at = CASE WHEN expires_at <= :clock THEN :clock + :ttl ELSE expires_at END
RETURNING value
"""


def migrate(connection):
    """Bring a file made by an earlier relay up to date: generic resources, the usage rows' door and batch
    columns, the short-lived values table."""
    _migrate_caches(connection)
    _migrate_usage_columns(connection)


def _migrate_caches(connection):
    """Move the cache owners of a database written before resources were generic (table ``caches``) into
    ``resources`` and drop the old table; the first process to open the file does it, once."""
    legacy = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'caches'"
    if not connection.execute(legacy).fetchall():
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        if connection.execute(legacy).fetchall():  # not migrated by another process meanwhile
            rows = connection.execute("SELECT name, client, owner, expire_at FROM caches").fetchall()
            connection.executemany(
                "INSERT OR IGNORE INTO resources (kind, name, client, owner, expire_at) VALUES (?, ?, ?, ?, ?)",
                [(CACHES, name, client, orjson.dumps(migrated_cache_owner(orjson.loads(owner))), expire_at)
                 for name, client, owner, expire_at in rows])
            connection.execute("DROP TABLE caches")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


VALUES_SCHEMA = """
CREATE TABLE IF NOT EXISTS ttl_values (name TEXT PRIMARY KEY, value TEXT NOT NULL, expire_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ttl_values_expire_at ON ttl_values (expire_at);
"""
# SQLite allows 32,766 parameters per statement; a lookup stays well below.
VALUES_PER_QUERY = 500


def _migrate_usage_columns(connection):
    """Add what a database made by an earlier relay lacks: usage.door (NULL on old rows), usage.batch (0 on
    old rows) and the ttl_values table.  Under BEGIN IMMEDIATE, so two workers opening one old file at once
    add each column once."""
    connection.executescript(VALUES_SCHEMA)
    connection.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(usage)")}
        for column, declaration in (("door", "door TEXT"), ("batch", "batch INTEGER NOT NULL DEFAULT 0")):
            if column not in columns:
                connection.execute(f"ALTER TABLE usage ADD COLUMN {declaration}")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
