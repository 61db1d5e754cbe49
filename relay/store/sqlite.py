"""This module provides the SQLite store: one database file shared by the worker processes of one host."""

import contextlib
import os
import sqlite3
import threading
import time

import orjson

from relay.store.base import (
    TOKEN_FIELDS, KeyExists, Store, check_resource_kind, check_usage_group, debt_floor, normalize_usage_row,
    refilled_tokens, seconds_until,
)
from relay.store.sqlite_schema import (
    ADD_KEY_COUNTER, COOL_DOWN, DISABLE, DROP_ORPHAN_CLAIMS, GROUP_EXPRESSIONS, INCR, INSERT_USAGE, MARK_KEY_USED,
    SCHEMA, SELECT_USAGE, USAGE_COLUMNS, VALUES_PER_QUERY, migrate,
)

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
            migrate(connection)
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
