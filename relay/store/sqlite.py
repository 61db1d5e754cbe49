"""This module provides the SQLite store: one database file shared by the worker processes of one host."""

import contextlib
import os
import sqlite3
import threading
import time

import orjson

from relay.store.base import (
    CACHES, TOKEN_FIELDS, USAGE_DEFAULTS, KeyExists, Store, check_resource_kind, check_usage_group, debt_floor,
    migrated_cache_owner, normalize_usage_row, refilled_tokens, seconds_until,
)

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
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, name TEXT NOT NULL, record TEXT NOT NULL, expire_at REAL NOT NULL, PRIMARY KEY (kind, name));
CREATE INDEX IF NOT EXISTS records_expire_at ON records (expire_at);
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


class SqliteStore(Store):
    """Store in one SQLite file (WAL). Each process opens its own connection on first use and again
    after a fork; read-modify-write runs in short BEGIN IMMEDIATE transactions. A writer waiting on the
    lock (busy_timeout) blocks its whole gevent worker, which is why every transaction is a few statements."""

    backend_errors = (sqlite3.Error,)

    def __init__(self, path: str, busy_timeout_ms: int = 5000):
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._connection: sqlite3.Connection | None = None
        self._connection_pid: int | None = None
        # A connection inherited over fork is kept referenced, never used or closed: closing it in the
        # child could disturb the parent's locks (SQLite: "do not carry a connection across fork").
        self._inherited_connection: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        # The last blocked_keys answer: (connection, data_version, asked at, rows). See blocked_keys.
        self._blocked = None

    def _db(self) -> sqlite3.Connection:
        if self._connection is not None and self._connection_pid == os.getpid():
            return self._connection
        if self._connection is not None:
            self._inherited_connection = self._connection
        connection = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000,
                                     isolation_level=None, check_same_thread=False)
        connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.executescript(SCHEMA)
        try:
            _migrate_caches(connection)
            _migrate_usage_columns(connection)
        except BaseException:
            connection.close()  # the next call opens again and retries the migrations
            raise
        self._connection, self._connection_pid = connection, os.getpid()
        return connection

    def _read(self, sql: str, parameters=()) -> list[tuple]:
        with self._lock:
            return self._db().execute(sql, parameters).fetchall()

    @contextlib.contextmanager
    def _write(self):
        """Yield the connection inside BEGIN IMMEDIATE (the write lock is taken up front, so a
        read-modify-write never fails half-way on a lock upgrade); commit, or roll back on error."""
        with self._lock:
            connection = self._db()
            self._blocked = None  # this connection's own commits do not move data_version
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    # Upstream key health

    def blocked_keys(self, now):
        # Asked on every request. PRAGMA data_version changes when another connection (worker) commits,
        # so the previous answer, less the blocks that have run out since, stays exact until it does.
        with self._lock:
            connection = self._db()
            version = connection.execute("PRAGMA data_version").fetchone()[0]
            last = self._blocked
            if last is None or last[0] is not connection or last[1] != version or now < last[2]:
                rows = connection.execute(
                    "SELECT key_id, until, state FROM key_health WHERE state != 'healthy' AND until > ?", (now,),
                ).fetchall()
                last = self._blocked = (connection, version, now, rows)
        return {key_id: (until, state) for key_id, until, state in last[3] if until > now}

    def cool_down(self, key_id, until, reason, now):
        with self._write() as connection:
            connection.execute(COOL_DOWN, {"key_id": key_id, "until": until, "reason": reason, "now": now})
            connection.execute(ADD_KEY_COUNTER, (key_id, "cooldowns", 1))

    def disable(self, key_id, until, reason, now):
        with self._write() as connection:
            connection.execute(DISABLE, {"key_id": key_id, "until": until, "reason": reason, "now": now})
            connection.execute(ADD_KEY_COUNTER, (key_id, "disables", 1))

    def clear_key(self, key_id):
        with self._write() as connection:
            connection.execute("UPDATE key_health SET state = 'healthy', until = 0, reason = NULL WHERE key_id = ?",
                               (key_id,))

    def add_key_counts(self, counts, now):
        with self._write() as connection:
            for key_id, key_counts in counts.items():
                failed_at = now if key_counts.get("failures", 0) > 0 else None
                connection.execute(MARK_KEY_USED, {"key_id": key_id, "now": now, "failed_at": failed_at})
                connection.executemany(ADD_KEY_COUNTER, [(key_id, name, int(value))
                                                         for name, value in key_counts.items()])

    def key_report(self):
        report = {}
        for key_id, state, until, reason, failed_at, failure_reason, used_at in self._read(
                "SELECT key_id, state, until, reason, last_failure_at, last_failure_reason, last_used_at"
                " FROM key_health ORDER BY key_id"):
            report[key_id] = {"state": state, "until": until, "reason": reason, "last_failure_at": failed_at,
                              "last_failure_reason": failure_reason, "last_used_at": used_at, "counters": {}}
        for key_id, name, value in self._read("SELECT key_id, name, value FROM key_counters"):
            if key_id in report:  # a key added between the two reads shows up next time
                report[key_id]["counters"][name] = value
        return report

    # Owned upstream resources

    def put_resource(self, kind, name, owner, expire_at):
        check_resource_kind(kind)
        with self._write() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO resources (kind, name, client, owner, expire_at) VALUES (?, ?, ?, ?, ?)",
                (kind, name, owner.get("client"), orjson.dumps(owner), expire_at))

    def get_resource(self, kind, name, now):
        check_resource_kind(kind)
        rows = self._read("SELECT owner, expire_at FROM resources WHERE kind = ? AND name = ?", (kind, name))
        if not rows:
            return None
        owner, expire_at = rows[0]
        if expire_at <= now:
            with self._write() as connection:
                if connection.execute("DELETE FROM resources WHERE kind = ? AND name = ? AND expire_at <= ?",
                                      (kind, name, now)).rowcount:
                    connection.execute("DELETE FROM resource_claims WHERE kind = ? AND name = ?", (kind, name))
            return None
        return orjson.loads(owner)

    def list_resources(self, kind, client, now):
        check_resource_kind(kind)
        with self._write() as connection:
            if connection.execute("DELETE FROM resources WHERE expire_at <= ?", (now,)).rowcount:
                connection.execute(DROP_ORPHAN_CLAIMS)
        if client is None:
            rows = self._read("SELECT name, owner FROM resources WHERE kind = ? ORDER BY name", (kind,))
        else:
            rows = self._read("SELECT name, owner FROM resources WHERE kind = ? AND client = ? ORDER BY name",
                              (kind, client))
        return [(name, orjson.loads(owner)) for name, owner in rows]

    def delete_resource(self, kind, name):
        check_resource_kind(kind)
        with self._write() as connection:
            connection.execute("DELETE FROM resources WHERE kind = ? AND name = ?", (kind, name))
            connection.execute("DELETE FROM resource_claims WHERE kind = ? AND name = ?", (kind, name))

    def claim_resource(self, kind, name, claim, now):
        check_resource_kind(kind)
        with self._write() as connection:
            live = connection.execute("SELECT 1 FROM resources WHERE kind = ? AND name = ? AND expire_at > ?",
                                      (kind, name, now)).fetchone()
            if live is None:
                return False
            inserted = connection.execute("INSERT OR IGNORE INTO resource_claims (kind, name, claim) VALUES (?, ?, ?)",
                                          (kind, name, claim))
            return inserted.rowcount == 1

    # Client keys

    def add_client_key(self, record):
        try:
            with self._write() as connection:
                connection.execute("INSERT INTO client_keys (name, key_hash, record) VALUES (?, ?, ?)",
                                   (record["name"], record["key_hash"], orjson.dumps(record)))
        except sqlite3.IntegrityError as err:
            raise KeyExists(f"a client key with name {record['name']!r} or the same key hash exists") from err

    def client_key_by_hash(self, key_hash):
        rows = self._read("SELECT record, last_used FROM client_keys WHERE key_hash = ?", (key_hash,))
        return _client_record(*rows[0]) if rows else None

    def list_client_keys(self):
        return [_client_record(*row) for row in self._read("SELECT record, last_used FROM client_keys ORDER BY name")]

    def revoke_client_key(self, name):
        with self._write() as connection:
            rows = connection.execute("SELECT record FROM client_keys WHERE name = ?", (name,)).fetchall()
            if not rows:
                return False
            record = orjson.loads(rows[0][0])
            record["revoked"] = True
            connection.execute("UPDATE client_keys SET record = ? WHERE name = ?", (orjson.dumps(record), name))
        return True

    def touch_client_keys(self, last_used):
        with self._write() as connection:
            connection.executemany(
                "UPDATE client_keys SET last_used = max(coalesce(last_used, 0), ?) WHERE name = ?",
                [(used_at, name) for name, used_at in last_used.items()])

    # Limits

    def _bucket_level(self, connection, bucket, capacity, refill_per_s, now) -> float:
        rows = connection.execute("SELECT tokens, updated FROM buckets WHERE name = ?", (bucket,)).fetchall()
        if not rows:
            return capacity
        return refilled_tokens(rows[0][0], rows[0][1], capacity, refill_per_s, now)

    def _save_bucket(self, connection, bucket, tokens, now):
        connection.execute("INSERT INTO buckets (name, tokens, updated) VALUES (?, ?, ?) ON CONFLICT (name)"
                           " DO UPDATE SET tokens = excluded.tokens, updated = max(updated, excluded.updated)",
                           (bucket, tokens, now))

    def take(self, bucket, capacity, refill_per_s, cost, now):
        with self._write() as connection:
            level = self._bucket_level(connection, bucket, capacity, refill_per_s, now)
            wait_s = seconds_until(level, cost, capacity, refill_per_s)
            if wait_s == 0.0:
                self._save_bucket(connection, bucket, level - cost, now)
        return wait_s

    def debit(self, bucket, capacity, refill_per_s, cost, now):
        with self._write() as connection:
            level = self._bucket_level(connection, bucket, capacity, refill_per_s, now)
            remaining = min(capacity, max(debt_floor(capacity), level - cost))
            self._save_bucket(connection, bucket, remaining, now)
        return remaining

    def peek(self, bucket, capacity, refill_per_s, now):
        with self._lock:
            return self._bucket_level(self._db(), bucket, capacity, refill_per_s, now)

    def incr(self, counter, amount, ttl_s):
        with self._write() as connection:
            parameters = {"name": counter, "amount": amount, "ttl": ttl_s, "clock": time.time()}
            return connection.execute(INCR, parameters).fetchone()[0]

    def get_counter(self, counter):
        rows = self._read("SELECT value FROM counters WHERE name = ? AND expires_at > ?", (counter, time.time()))
        return rows[0][0] if rows else 0

    # Live sessions

    def put_record(self, kind, name, record, expire_at):
        with self._write() as connection:
            connection.execute("DELETE FROM records WHERE expire_at <= ?", (time.time(),))
            connection.execute("INSERT OR REPLACE INTO records (kind, name, record, expire_at) VALUES (?, ?, ?, ?)",
                               (kind, name, orjson.dumps(record), expire_at))

    def get_record(self, kind, name, now):
        rows = self._read("SELECT record FROM records WHERE kind = ? AND name = ? AND expire_at > ?", (kind, name, now))
        return orjson.loads(rows[0][0]) if rows else None

    def acquire_lease(self, group, holder, limit, until, now):
        with self._write() as connection:
            connection.execute("DELETE FROM leases WHERE grp = ? AND until <= ?", (group, now))
            held = connection.execute("SELECT holder FROM leases WHERE grp = ?", (group,)).fetchall()
            if holder not in {row[0] for row in held} and len(held) >= limit:
                return False
            connection.execute("INSERT OR REPLACE INTO leases (grp, holder, until) VALUES (?, ?, ?)",
                               (group, holder, until))
        return True

    def release_lease(self, group, holder):
        with self._write() as connection:
            connection.execute("DELETE FROM leases WHERE grp = ? AND holder = ?", (group, holder))

    # Usage records

    def write_usage(self, rows):
        values = []
        for row in rows:
            normalized = normalize_usage_row(row)
            normalized["modalities"] = orjson.dumps(normalized["modalities"])
            values.append(tuple(normalized.values()))
        with self._write() as connection:
            connection.executemany(INSERT_USAGE, values)
            # Housekeeping rides on this periodic batch write: drop expired counters.
            connection.execute("DELETE FROM counters WHERE expires_at <= ?", (time.time(),))

    def query_usage(self, since, group, client):
        check_usage_group(group)
        sums = ", ".join(f"coalesce(sum({field}), 0)" for field in TOKEN_FIELDS)
        expression = GROUP_EXPRESSIONS[group]
        where, parameters = ("ts >= ? AND client = ?", (since, client)) if client is not None else ("ts >= ?", (since,))
        rows = self._read(f"SELECT {expression}, count(*), coalesce(sum(status >= 400), 0), {sums} FROM usage"
                          f" WHERE {where} GROUP BY 1 ORDER BY 1", parameters)
        columns = (group, "requests", "errors", *TOKEN_FIELDS)
        return [dict(zip(columns, row)) for row in rows]

    def usage_rows(self, since, client=None, limit=1000):
        where, parameters = ("ts >= ? AND client = ?", (since, client)) if client is not None else ("ts >= ?", (since,))
        rows = self._read(f"{SELECT_USAGE} WHERE {where} ORDER BY ts DESC, id DESC LIMIT ?", (*parameters, limit))
        return [_usage_row(row) for row in rows]

    # Short-lived values

    def put_values(self, values, expire_at):
        with self._write() as connection:
            connection.executemany("INSERT OR REPLACE INTO ttl_values (name, value, expire_at) VALUES (?, ?, ?)",
                                   [(name, value, expire_at) for name, value in values.items()])
            # Housekeeping rides on the write, through the expire_at index: only expired rows are visited.
            connection.execute("DELETE FROM ttl_values WHERE expire_at <= ?", (time.time(),))

    def get_values(self, names, now):
        found = {}
        for start in range(0, len(names), VALUES_PER_QUERY):
            batch = names[start:start + VALUES_PER_QUERY]
            found.update(self._read(f"SELECT name, value FROM ttl_values WHERE expire_at > ? AND name IN"
                                    f" ({', '.join('?' * len(batch))})", (now, *batch)))
        return found

    # Misc

    def ping(self):
        try:
            self._read("SELECT 1")
        except sqlite3.Error:
            return False
        return True

    def close(self):
        with self._lock:
            if self._connection is not None and self._connection_pid == os.getpid():
                self._connection.close()
            elif self._connection is not None:
                self._inherited_connection = self._connection
            self._connection = self._connection_pid = None


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


# -- the OpenAI door's additions: the usage rows' door column and the short-lived values table ----------

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


def _client_record(record_json, last_used) -> dict:
    record = orjson.loads(record_json)
    record["last_used"] = last_used
    return record


def _usage_row(values) -> dict:
    row = dict(zip(USAGE_COLUMNS, values))
    row["modalities"] = orjson.loads(row["modalities"])
    row["streamed"] = bool(row["streamed"])
    row["aborted"] = bool(row["aborted"])
    row["batch"] = bool(row["batch"])
    return row
