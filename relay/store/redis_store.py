"""This module provides the Redis store, shared by every relay instance that points at the same Redis."""

import os
from typing import NamedTuple

import orjson
import redis

from relay.store.base import DEBT_LIMIT_FACTOR, KeyExists, Store, StoreError, refilled_tokens
from relay.store.redis_resources import RESOURCE_SCRIPTS, RedisResourceIndex
from relay.store.redis_usage import USAGE_ROWS_CAP, WRITE_USAGE_LUA, RedisUsageLedger

# KEYS: blocked zset (key_id -> until), states hash (key_id -> state), key-states version. ARGV: now.
# The version comes first, read in the same atomic step as the states it describes.
BLOCKED_KEYS_LUA = """
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES')
local result = {redis.call('GET', KEYS[3]) or ''}
for i = 1, #found, 2 do
    local state = redis.call('HGET', KEYS[2], found[i])
    if state == 'cooling' or state == 'disabled' then
        table.insert(result, found[i]); table.insert(result, found[i + 1]); table.insert(result, state)
    end
end
return result
"""
# KEYS: blocked, states, the key's hash, all-keys set, key-states version. ARGV: key_id, until, reason, now,
# new version.
# Scores travel as the strings Redis and Python wrote, so no precision is lost in Lua.
COOL_DOWN_LUA = """
local key_id, blocked_until, reason, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local state = redis.call('HGET', KEYS[2], key_id)
local current = redis.call('ZSCORE', KEYS[1], key_id)
local new_state = 'cooling'
if current and (state == 'cooling' or state == 'disabled') then
    if tonumber(current) > tonumber(blocked_until) then blocked_until = current end
    if state == 'disabled' and tonumber(current) > now then new_state = 'disabled' end
end
redis.call('ZADD', KEYS[1], blocked_until, key_id)
redis.call('HSET', KEYS[2], key_id, new_state)
if new_state == 'cooling' then redis.call('HSET', KEYS[3], 'reason', reason) end
redis.call('HSET', KEYS[3], 'last_failure_at', ARGV[4], 'last_failure_reason', reason)
redis.call('HINCRBY', KEYS[3], 'c:cooldowns', 1)
redis.call('SADD', KEYS[4], key_id)
redis.call('SET', KEYS[5], ARGV[5])
"""
# KEYS: bucket hash. ARGV: capacity, refill_per_s, cost, now, "take" or "debit", debt limit factor.
# Same math as base.refilled_tokens / seconds_until; numbers go back as strings (Lua would truncate them).
BUCKET_LUA = """
local capacity, refill, cost, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local level, updated = capacity, now
if stored[1] then
    updated = tonumber(stored[2])
    level = math.min(capacity, tonumber(stored[1]) + math.max(0, now - updated) * refill)
    updated = math.max(updated, now)
end
local remaining
if ARGV[5] == 'take' then
    if level < cost then
        if cost > capacity or refill <= 0 then return 'inf' end
        return string.format('%.17g', (cost - level) / refill)
    end
    remaining = level - cost
else
    remaining = math.min(capacity, math.max(-capacity * tonumber(ARGV[6]), level - cost))
end
redis.call('HSET', KEYS[1], 'tokens', remaining, 'updated', updated)
if refill > 0 then
    redis.call('PEXPIRE', KEYS[1], math.min(2592000000, math.ceil((capacity - remaining) / refill * 1000) + 1000))
end
if ARGV[5] == 'take' then return '0' end
return string.format('%.17g', remaining)
"""
# KEYS: records hash (name -> JSON), by-hash hash (key_hash -> name). ARGV: name, key_hash, JSON.
ADD_CLIENT_KEY_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return 1
"""
# KEYS: by-hash, records, last-used hash. ARGV: key_hash.
CLIENT_KEY_BY_HASH_LUA = """
local name = redis.call('HGET', KEYS[1], ARGV[1])
if not name then return false end
return {redis.call('HGET', KEYS[2], name), redis.call('HGET', KEYS[3], name)}
"""
# KEYS: records, last-used hash. ARGV: name, time, name, time, ...
TOUCH_CLIENT_KEYS_LUA = """
for i = 1, #ARGV, 2 do
    if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
        local stored = redis.call('HGET', KEYS[2], ARGV[i])
        if not stored or tonumber(stored) < tonumber(ARGV[i + 1]) then
            redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
        end
    end
end
"""
# KEYS: the group's leases zset (holder -> until). ARGV: holder, limit, until, now.
ACQUIRE_LEASE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], math.ceil(tonumber(last[2]) * 1000))
return 1
"""
SCRIPTS = {
    "blocked_keys": BLOCKED_KEYS_LUA, "cool_down": COOL_DOWN_LUA, "bucket": BUCKET_LUA,
    "add_client_key": ADD_CLIENT_KEY_LUA, "client_key_by_hash": CLIENT_KEY_BY_HASH_LUA,
    "touch_client_keys": TOUCH_CLIENT_KEYS_LUA, "write_usage": WRITE_USAGE_LUA, "acquire_lease": ACQUIRE_LEASE_LUA,
    **RESOURCE_SCRIPTS,
}


class BlockedKeysAnswer(NamedTuple):
    """A blocked_keys answer kept for later requests: valid while the version is unchanged and now >= asked_at."""

    version: str
    asked_at: float
    blocked: dict[str, tuple[float, str]]


class RedisStore(Store):
    """Store in Redis; keys are named `<prefix>...` (default "relay:"). Each process builds its own
    connection pool on first use and again after a fork; every hot-path call is one round trip.

    Usage (relay.store.redis_usage): exact totals per UTC day and hour, written with the rows; the raw
    rows themselves are kept for the newest `usage_rows_cap` (default USAGE_ROWS_CAP, 100,000) only.

    Key states are asked on every request: blocked_keys keeps its last answer and costs one GET of the
    key-states version while that is unchanged (see there).
    """

    backend_errors = (redis.RedisError,)

    def __init__(self, url: str, prefix: str = "relay:", usage_rows_cap: int = USAGE_ROWS_CAP,
                 timeout_s: float = 5.0):
        try:
            redis.ConnectionPool.from_url(url)
        except ValueError as err:
            raise StoreError(f"the Redis URL is not valid ({err}); expected redis://host:port/db") from err
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self._usage = RedisUsageLedger(prefix, usage_rows_cap)
        self._resources = RedisResourceIndex(prefix)
        self._client: redis.Redis | None = None
        self._client_pid: int | None = None
        self._scripts: dict = {}
        self._blocked: BlockedKeysAnswer | None = None

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _redis(self) -> redis.Redis:
        if self._client is None or self._client_pid != os.getpid():
            self._client = redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=self.timeout_s,
                                                socket_connect_timeout=self.timeout_s, health_check_interval=30)
            self._scripts = {name: self._client.register_script(source) for name, source in SCRIPTS.items()}
            self._client_pid = os.getpid()
            try:
                self._resources.migrate_caches(self._client, self._run)
            except redis.RedisError:
                self._client = self._client_pid = None  # connect again, and retry, on the next call
                raise
        return self._client

    def _run(self, script_name: str, keys: list[str], args: list):
        client = self._redis()
        return self._scripts[script_name](keys=keys, args=args, client=client)

    # Upstream key health

    def blocked_keys(self, now):
        # Asked on every request. Every write that changes key states sets the version to a new random
        # token, so while it reads the same, the last answer less the blocks run out since is exact.
        # (A token, not INCR: a counter starts again at 1 when Redis loses its data, and could come back
        # to a number a worker holds with other states.) Going back in time re-reads: blocks that had run
        # out at asked_at were left out of the answer.
        version = self._redis().get(self._key("keys", "version")) or ""
        answer = self._blocked
        if answer is None or answer.version != version or now < answer.asked_at:
            keys = [self._key("keys", "blocked"), self._key("keys", "state"), self._key("keys", "version")]
            version, *found = self._run("blocked_keys", keys, [repr(now)])
            blocked = {found[i]: (float(found[i + 1]), found[i + 2]) for i in range(0, len(found), 3)}
            answer = self._blocked = BlockedKeysAnswer(version, now, blocked)
        return {key_id: block for key_id, block in answer.blocked.items() if block[0] > now}

    def cool_down(self, key_id, until, reason, now):
        keys = [self._key("keys", "blocked"), self._key("keys", "state"), self._key("key", key_id),
                self._key("keys", "all"), self._key("keys", "version")]
        self._run("cool_down", keys, [key_id, repr(until), reason, repr(now), _new_version()])

    def disable(self, key_id, until, reason, now):
        pipe = self._redis().pipeline()
        pipe.zadd(self._key("keys", "blocked"), {key_id: until})
        pipe.hset(self._key("keys", "state"), key_id, "disabled")
        pipe.hset(self._key("key", key_id), mapping={"reason": reason, "last_failure_at": repr(now),
                                                     "last_failure_reason": reason})
        pipe.hincrby(self._key("key", key_id), "c:disables", 1)
        pipe.sadd(self._key("keys", "all"), key_id)
        pipe.set(self._key("keys", "version"), _new_version())
        pipe.execute()

    def clear_key(self, key_id):
        pipe = self._redis().pipeline()
        pipe.zrem(self._key("keys", "blocked"), key_id)
        pipe.hdel(self._key("keys", "state"), key_id)
        pipe.hdel(self._key("key", key_id), "reason")
        pipe.set(self._key("keys", "version"), _new_version())
        pipe.execute()

    def add_key_counts(self, counts, now):
        pipe = self._redis().pipeline()
        for key_id, key_counts in counts.items():
            key_hash = self._key("key", key_id)
            for name, value in key_counts.items():
                pipe.hincrby(key_hash, f"c:{name}", int(value))
            pipe.hset(key_hash, "last_used_at", repr(now))
            if key_counts.get("failures", 0) > 0:
                pipe.hset(key_hash, "last_failure_at", repr(now))
            pipe.sadd(self._key("keys", "all"), key_id)
        pipe.execute()

    def key_report(self):
        client = self._redis()
        key_ids = sorted(client.smembers(self._key("keys", "all")))
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(self._key("keys", "state"))
        pipe.zrange(self._key("keys", "blocked"), 0, -1, withscores=True)
        for key_id in key_ids:
            pipe.hgetall(self._key("key", key_id))
        states, blocked, *details = pipe.execute()
        until_by_key = dict(blocked)
        report = {}
        for key_id, fields in zip(key_ids, details):
            state = states.get(key_id, "healthy")
            report[key_id] = {
                "state": state, "until": until_by_key.get(key_id, 0.0) if state != "healthy" else 0.0,
                "reason": fields.get("reason"), "last_failure_at": _float_or_none(fields.get("last_failure_at")),
                "last_failure_reason": fields.get("last_failure_reason"),
                "last_used_at": _float_or_none(fields.get("last_used_at")),
                "counters": {name[2:]: int(value) for name, value in fields.items() if name.startswith("c:")},
            }
        return report

    # Owned upstream resources (layout: relay.store.redis_resources)

    def put_resource(self, kind, name, owner, expire_at):
        self._run("put_resource", *self._resources.put_arguments(kind, name, owner, expire_at))

    def get_resource(self, kind, name, now):
        return self._resources.get(self._redis(), kind, name, now)

    def list_resources(self, kind, client, now):
        return self._resources.list(self._redis(), kind, client, now)

    def delete_resource(self, kind, name):
        self._run("delete_resource", *self._resources.delete_arguments(kind, name))

    def claim_resource(self, kind, name, claim, now):
        return self._run("claim_resource", *self._resources.claim_arguments(kind, name, claim, now)) == 1

    # Client keys

    def add_client_key(self, record):
        keys = [self._key("clients"), self._key("clients", "by_hash")]
        if not self._run("add_client_key", keys, [record["name"], record["key_hash"], orjson.dumps(record)]):
            raise KeyExists(f"a client key with name {record['name']!r} or the same key hash exists")

    def client_key_by_hash(self, key_hash):
        keys = [self._key("clients", "by_hash"), self._key("clients"), self._key("clients", "last_used")]
        found = self._run("client_key_by_hash", keys, [key_hash])
        return _client_record(*found) if found else None

    def list_client_keys(self):
        pipe = self._redis().pipeline(transaction=False)
        pipe.hgetall(self._key("clients"))
        pipe.hgetall(self._key("clients", "last_used"))
        records, last_used = pipe.execute()
        return [_client_record(records[name], last_used.get(name)) for name in sorted(records)]

    def revoke_client_key(self, name):
        records_key = self._key("clients")

        def revoke(pipe) -> bool:
            stored = pipe.hget(records_key, name)
            if stored is None:
                return False
            record = orjson.loads(stored)
            record["revoked"] = True
            pipe.multi()
            pipe.hset(records_key, name, orjson.dumps(record))
            return True

        return self._redis().transaction(revoke, records_key, value_from_callable=True)

    def touch_client_keys(self, last_used):
        if last_used:
            args = [item for name, used_at in last_used.items() for item in (name, repr(used_at))]
            self._run("touch_client_keys", [self._key("clients"), self._key("clients", "last_used")], args)

    # Limits

    def _bucket(self, mode, bucket, capacity, refill_per_s, cost, now) -> float:
        args = [repr(float(capacity)), repr(float(refill_per_s)), repr(float(cost)), repr(float(now)), mode,
                DEBT_LIMIT_FACTOR]
        return float(self._run("bucket", [self._key("bucket", bucket)], args))

    def take(self, bucket, capacity, refill_per_s, cost, now):
        return self._bucket("take", bucket, capacity, refill_per_s, cost, now)

    def debit(self, bucket, capacity, refill_per_s, cost, now):
        return self._bucket("debit", bucket, capacity, refill_per_s, cost, now)

    def peek(self, bucket, capacity, refill_per_s, now):
        tokens, updated = self._redis().hmget(self._key("bucket", bucket), ["tokens", "updated"])
        if tokens is None:
            return float(capacity)
        return refilled_tokens(float(tokens), float(updated), capacity, refill_per_s, now)

    def incr(self, counter, amount, ttl_s):
        pipe = self._redis().pipeline()
        pipe.incrby(self._key("counter", counter), amount)
        pipe.expire(self._key("counter", counter), ttl_s, nx=True)
        return pipe.execute()[0]

    def get_counter(self, counter):
        return int(self._redis().get(self._key("counter", counter)) or 0)

    # Live sessions

    def acquire_lease(self, group, holder, limit, until, now):
        arguments = [holder, int(limit), repr(until), repr(now)]
        return bool(self._run("acquire_lease", [self._key("leases", group)], arguments))

    def release_lease(self, group, holder):
        self._redis().zrem(self._key("leases", group), holder)

    # Usage records

    def write_usage(self, rows):
        if rows:
            self._run("write_usage", *self._usage.write_arguments(rows))

    def query_usage(self, since, group, client):
        return self._usage.query(self._redis(), since, group, client)

    def usage_rows(self, since, client=None, limit=1000):
        return self._usage.rows(self._redis(), since, client, limit)

    # Short-lived values

    def put_values(self, values, expire_at):
        if not values:
            return
        pipe = self._redis().pipeline(transaction=False)
        # The wall-clock expiry only reclaims memory; get_values judges expiry by the caller's `now`.
        for name, value in values.items():
            pipe.set(self._key("value", name), orjson.dumps([expire_at, value]), pxat=max(1, int(expire_at * 1000)))
        pipe.execute()

    def get_values(self, names, now):
        if not names:
            return {}
        found = {}
        for name, stored in zip(names, self._redis().mget([self._key("value", name) for name in names])):
            if stored is not None:
                expire_at, value = orjson.loads(stored)
                if expire_at > now:
                    found[name] = value
        return found

    # Misc

    def ping(self):
        try:
            return bool(self._redis().ping())
        except redis.RedisError:
            return False

    def close(self):
        if self._client is not None and self._client_pid == os.getpid():
            self._client.close()
        self._client = self._client_pid = self._blocked = None
        self._scripts = {}


def _float_or_none(value: str | None) -> float | None:
    return float(value) if value is not None else None


def _client_record(record_json: str, last_used: str | None) -> dict:
    record = orjson.loads(record_json)
    record["last_used"] = _float_or_none(last_used)
    return record


def _new_version() -> str:
    return os.urandom(8).hex()
