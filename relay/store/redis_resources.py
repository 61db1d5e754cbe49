"""This module provides the Redis store's layout for owned upstream resources (Store.put_resource and kin).

One hash family and two sorted-set indexes per kind (`<kind>` is one of RESOURCE_KINDS):

- `<prefix>res:<kind>:<name>` is a hash {client, owner (JSON), expire_at, and a `claim:<claim>` field per
  claim_resource}, expiring at expire_at by the wall
  clock (to reclaim memory; reads judge expiry by the caller's `now`).
- `<prefix>res-client:<kind>:<client>` is a sorted set of that client's names scored by expire_at: listing
  one client's resources reads only its own entries. It expires with its last entry.
- `<prefix>res-all:<kind>` is the same for every client, for operators' listings.

A write trims both indexes of entries whose expiry has passed by Redis' clock, so neither grows without
bound. Stores written before resources were generic kept context caches as `<prefix>cache:<name>` strings
indexed by the sorted set `<prefix>caches`; :meth:`RedisResourceIndex.migrate_caches` moves them over.
"""

import orjson

from relay.store.base import CACHES, check_resource_kind, migrated_cache_owner

# KEYS: the record hash, the all-clients index. ARGV: name, client ('' for none), owner JSON, expire_at,
# the prefix of client indexes of this kind. A resource whose client changes leaves the old one's index.
PUT_RESOURCE_LUA = """
local name, client, expire_at = ARGV[1], ARGV[2], ARGV[4]
local previous = redis.call('HGET', KEYS[1], 'client')
if previous and previous ~= '' and previous ~= client then redis.call('ZREM', ARGV[5] .. previous, name) end
redis.call('HSET', KEYS[1], 'client', client, 'owner', ARGV[3], 'expire_at', expire_at)
redis.call('PEXPIREAT', KEYS[1], math.max(1, math.floor(tonumber(expire_at) * 1000)))
local wall = redis.call('TIME')[1]
local function index(key)
    redis.call('ZADD', key, expire_at, name)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', wall)
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    if last[2] then redis.call('PEXPIREAT', key, math.max(1, math.ceil(tonumber(last[2]) * 1000))) end
end
index(KEYS[2])
if client ~= '' then index(ARGV[5] .. client) end
"""
# KEYS: the record hash, the all-clients index. ARGV: name, the prefix of client indexes of this kind.
DELETE_RESOURCE_LUA = """
local client = redis.call('HGET', KEYS[1], 'client')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if client and client ~= '' then redis.call('ZREM', ARGV[2] .. client, ARGV[1]) end
"""
# KEYS: the record hash. ARGV: the claim, now. A claim is a field of the record hash: put_resource's HSET
# leaves it, and it goes with the record (DEL, or its wall-clock expiry).
CLAIM_RESOURCE_LUA = """
local expire_at = redis.call('HGET', KEYS[1], 'expire_at')
if not expire_at or tonumber(expire_at) <= tonumber(ARGV[2]) then return 0 end
return redis.call('HSETNX', KEYS[1], 'claim:' .. ARGV[1], '1')
"""
RESOURCE_SCRIPTS = {"put_resource": PUT_RESOURCE_LUA, "delete_resource": DELETE_RESOURCE_LUA,
                    "claim_resource": CLAIM_RESOURCE_LUA}


class RedisResourceIndex:
    """Key names and reads for owned resources; writes go through the scripts above (RedisStore runs them)."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def record_key(self, kind: str, name: str) -> str:
        return f"{self.prefix}res:{kind}:{name}"

    def client_index_prefix(self, kind: str) -> str:
        return f"{self.prefix}res-client:{kind}:"

    def all_index(self, kind: str) -> str:
        return f"{self.prefix}res-all:{kind}"

    def put_arguments(self, kind, name, owner, expire_at):
        """(keys, args) for the put_resource script."""
        check_resource_kind(kind)
        client = owner.get("client")
        args = [name, client if isinstance(client, str) else "", orjson.dumps(owner), repr(float(expire_at)),
                self.client_index_prefix(kind)]
        return [self.record_key(kind, name), self.all_index(kind)], args

    def delete_arguments(self, kind, name):
        """(keys, args) for the delete_resource script."""
        check_resource_kind(kind)
        return [self.record_key(kind, name), self.all_index(kind)], [name, self.client_index_prefix(kind)]

    def claim_arguments(self, kind, name, claim, now):
        """(keys, args) for the claim_resource script."""
        check_resource_kind(kind)
        return [self.record_key(kind, name)], [claim, repr(float(now))]

    def get(self, redis_client, kind, name, now):
        check_resource_kind(kind)
        owner, expire_at = redis_client.hmget(self.record_key(kind, name), ["owner", "expire_at"])
        if owner is None or float(expire_at) <= now:
            return None
        return orjson.loads(owner)

    def list(self, redis_client, kind, client, now):
        """One client's (or, client None, everyone's) unexpired resources: one index read, one HMGET each."""
        check_resource_kind(kind)
        index = self.all_index(kind) if client is None else self.client_index_prefix(kind) + client
        names = redis_client.zrangebyscore(index, f"({now!r}", "+inf")
        if not names:
            return []
        pipe = redis_client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(self.record_key(kind, name), ["client", "owner", "expire_at"])
        listed = []
        for name, (stored_client, owner, expire_at) in zip(names, pipe.execute()):
            if owner is None or float(expire_at) <= now:
                continue
            if client is None or stored_client == client:  # an index entry left by a change of owner
                listed.append((name, orjson.loads(owner)))
        return sorted(listed, key=lambda entry: entry[0])

    def migrate_caches(self, redis_client, run):
        """Move context caches recorded in the layout before this one; ``run(script, keys, args)`` runs a script.

        Idempotent, so processes that start together may all do it.
        """
        legacy_index = f"{self.prefix}caches"
        names = redis_client.zrange(legacy_index, 0, -1)
        if not names:
            return
        legacy_keys = [f"{self.prefix}cache:{name}" for name in names]
        for name, stored in zip(names, redis_client.mget(legacy_keys)):
            if stored is not None:
                entry = orjson.loads(stored)
                run("put_resource", *self.put_arguments(CACHES, name, migrated_cache_owner(entry["owner"]),
                                                        entry["expire_at"]))
        pipe = redis_client.pipeline()
        pipe.delete(*legacy_keys)
        pipe.zrem(legacy_index, *names)
        pipe.execute()
