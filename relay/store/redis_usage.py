"""This module provides the Redis store's usage ledger: raw rows kept up to a cap, and exact hourly and daily totals.

Every batch of rows is written by one Lua script, so the raw rows and the totals move together:

- `<prefix>usage` is a sorted set of the raw rows by ts (member `<random tag>|<row JSON>`), trimmed to the
  newest `rows_cap` rows (USAGE_ROWS_CAP by default). It serves `usage_rows`, and the totals only for a
  `since` not on a whole hour: the rows from `since` to the next whole hour (see `query`).
- `<prefix>usage:day:<start>` and `<prefix>usage:hour:<start>` (start: unix seconds of the UTC day or hour)
  are strings, each a JSON object with one entry per usage combination: the key is the JSON array
  `[client, requested_model, upstream_model, upstream, status, door, batch]` (door: the front door, batch:
  true for a batch job's usage), the value the comma-separated counts
  "requests,prompt,candidates,thoughts,cached,tool_use,total". Errors are not stored: a combination's
  status says whether all its requests were errors. One string per granule, not a hash, so that a query
  gets each as one reply (parsing a field and a value per combination cost more than the rest).
- `<prefix>usage:days` and `<prefix>usage:hours` index the starts that have totals, so a query finds
  them without scanning keys. Totals are kept as long as SQLite keeps its rows: for ever.
"""

import datetime
import functools
import os
from typing import NamedTuple

import orjson

from relay.store.base import (
    TOKEN_FIELDS, USAGE_WINDOW_ALIGN_S, check_usage_group, normalize_usage_row, usage_sort_key,
)

# The raw rows kept (newest by ts); totals never depend on it for a `since` on a whole hour.
USAGE_ROWS_CAP = 100_000
DAY_S, HOUR_S = 86400, USAGE_WINDOW_ALIGN_S  # totals per UTC day, and per hour: the finest usage window
# The packed counters, in order; each combination's row counts once in "requests".
PACKED_COUNTERS = ("requests", *TOKEN_FIELDS)

# KEYS: raw rows, day index, hour index, then one totals string per granule. ARGV: rows cap, row count,
# the rows as (score, member) pairs, then per granule: its index's KEYS position, its start, and the JSON
# object of counts to add. Counts stay strings, summed with '%.0f' (exact to 2^53; cjson would round
# numbers to 14 digits).
WRITE_USAGE_LUA = """
local rows_cap, row_count = tonumber(ARGV[1]), tonumber(ARGV[2])
local position = 3
for _ = 1, row_count do
    redis.call('ZADD', KEYS[1], ARGV[position], ARGV[position + 1])
    position = position + 2
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -rows_cap - 1)
for granule = 4, #KEYS do
    local index, start = KEYS[tonumber(ARGV[position])], ARGV[position + 1]
    local added = cjson.decode(ARGV[position + 2])
    position = position + 3
    redis.call('ZADD', index, start, start)
    local stored = redis.call('GET', KEYS[granule])
    local totals = stored and cjson.decode(stored) or {}
    for field, counts in pairs(added) do
        local current = totals[field]
        if current then
            local sums, next_added = {}, string.gmatch(counts, '[^,]+')
            for value in string.gmatch(current, '[^,]+') do
                table.insert(sums, string.format('%.0f', tonumber(value) + tonumber(next_added())))
            end
            counts = table.concat(sums, ',')
        end
        totals[field] = counts
    end
    redis.call('SET', KEYS[granule], cjson.encode(totals))
end
"""


class UsageCombination(NamedTuple):
    """What usage totals are kept by (with the day or hour they fall in): every group and filter of query_usage."""

    client: str | None
    requested_model: str | None
    upstream_model: str | None
    upstream: str | None
    status: int
    door: str | None = None  # the front door ("gemini", "openai")
    batch: bool = False  # a batch job's usage, accounted once when relay first saw it finished

    def group_value(self, group: str, day: str):
        if group == "kind":
            return "batch" if self.batch else "interactive"
        if group == "model":
            return self.requested_model
        if group == "key":
            return self.client
        if group == "day":
            return day
        return getattr(self, group)


class RedisUsageLedger:
    """Reads the usage keys under `prefix` and prepares their writes; the store owns the connection and
    runs WRITE_USAGE_LUA."""

    def __init__(self, prefix: str, rows_cap: int = USAGE_ROWS_CAP):
        if rows_cap < 1:
            raise ValueError(f"the usage rows cap must be at least 1, not {rows_cap}")
        self.prefix = prefix
        self.rows_cap = rows_cap

    def _key(self, *parts) -> str:
        return self.prefix + ":".join(("usage", *map(str, parts)))

    def write_arguments(self, rows: list[dict]) -> tuple[list[str], list]:
        """Return the KEYS and ARGV with which WRITE_USAGE_LUA appends the (non-empty) rows and adds them
        to their day and hour totals, atomically."""
        normalized_rows = [normalize_usage_row(row) for row in rows]
        # A random tag keeps two identical rows from collapsing into one sorted-set member.
        row_args = [item for row in normalized_rows
                    for item in (repr(row["ts"]), f"{os.urandom(4).hex()}|{orjson.dumps(row).decode()}")]
        granule_keys, granule_args = [], []
        for (index_position, level, start), packed_by_field in _granule_sums(normalized_rows).items():
            granule_keys.append(self._key(level, start))
            granule_args += [index_position, start, orjson.dumps(packed_by_field)]
        keys = [self._key(), self._key("days"), self._key("hours"), *granule_keys]
        return keys, [self.rows_cap, len(normalized_rows), *row_args, *granule_args]

    def query(self, redis_client, since: float, group: str, client: str | None) -> list[dict]:
        """Totals of the rows with ts >= since, as Store.query_usage returns them.

        [since, +inf) is cut at the next whole hour h and the next whole day d (since <= h <= d): day totals
        from d on, hour totals from h to d, raw rows from since to h. With since on a whole hour the raw
        rows are not read, so the answer is exact however many rows were trimmed.
        """
        check_usage_group(group)
        hour_start, day_start = _ceil_to(since, HOUR_S), _ceil_to(since, DAY_S)
        pipe = redis_client.pipeline(transaction=False)
        pipe.zrangebyscore(self._key("days"), day_start, "+inf")
        pipe.zrangebyscore(self._key("hours"), hour_start, f"({day_start!r}")
        pipe.zrangebyscore(self._key(), since, f"({hour_start!r}")
        day_starts, hour_starts, raw_members = pipe.execute()
        granules = [("day", int(start)) for start in day_starts] + [("hour", int(start)) for start in hour_starts]
        stored_totals = redis_client.mget([self._key(level, start) for level, start in granules]) if granules else []
        # Counts are gathered per (group value, error or not) as strings and parsed in one go at the end.
        packed_by_total: dict[tuple, list[str]] = {}
        for (_level, start), stored in zip(granules, stored_totals):
            day = _utc_day(start)
            for field, packed in orjson.loads(stored or "{}").items():
                combination = _combination(field)
                if client is None or combination.client == client:
                    total_key = (combination.group_value(group, day), combination.status >= 400)
                    packed_by_total.setdefault(total_key, []).append(packed)
        for row in map(_usage_row, raw_members):
            combination = _row_combination(row)
            if client is None or combination.client == client:
                total_key = (combination.group_value(group, _utc_day(row["ts"])), combination.status >= 400)
                packed_by_total.setdefault(total_key, []).append(_packed(_row_counts(row)))
        totals: dict = {}
        for (value, errors), packed_counts in packed_by_total.items():
            _add(totals, group, value, errors, _sum_packed(packed_counts))
        return sorted(totals.values(), key=lambda total: usage_sort_key(total[group]))

    def rows(self, redis_client, since: float, client: str | None, limit: int) -> list[dict]:
        """Raw rows with ts >= since, newest first, at most `limit` (only those still retained)."""
        found, offset = [], 0
        page_size = limit if client is None else max(limit, 1000)
        while len(found) < limit:
            page = redis_client.zrevrangebyscore(self._key(), "+inf", since, start=offset, num=page_size)
            found.extend(row for row in map(_usage_row, page) if client is None or row["client"] == client)
            if len(page) < page_size:
                break
            offset += page_size
        return found[:limit]


def _granule_sums(rows: list[dict]) -> dict[tuple, dict[str, str]]:
    """Sum a batch per (index KEYS position, "day" or "hour", start) and combination field, packed."""
    sums: dict[tuple, dict[str, list[int]]] = {}
    for row in rows:
        combination = _row_combination(row)
        field = orjson.dumps(list(combination)).decode()
        counts = _row_counts(row)
        for index_position, level, seconds in ((2, "day", DAY_S), (3, "hour", HOUR_S)):
            granule = (index_position, level, int(row["ts"] // seconds * seconds))
            summed = sums.setdefault(granule, {}).setdefault(field, [0] * len(PACKED_COUNTERS))
            for position, count in enumerate(counts):
                summed[position] += count
    return {granule: {field: _packed(summed) for field, summed in by_field.items()}
            for granule, by_field in sums.items()}


def _row_combination(row: dict) -> UsageCombination:
    return UsageCombination(row["client"], row["requested_model"], row["upstream_model"], row["upstream"],
                            row["status"], row.get("door"), bool(row.get("batch")))


def _row_counts(row: dict) -> list[int]:
    return [1, *(row[field] for field in TOKEN_FIELDS)]


@functools.lru_cache(maxsize=4096)
def _combination(field: str) -> UsageCombination:
    # The same few combinations come back in every granule a query reads: parse each once.
    return UsageCombination(*orjson.loads(field))


def _packed(counts) -> str:
    return ",".join(map(str, counts))


def _sum_packed(packed_counts: list[str]) -> list[int]:
    numbers = list(map(int, ",".join(packed_counts).split(",")))
    return [sum(numbers[position::len(PACKED_COUNTERS)]) for position in range(len(PACKED_COUNTERS))]


def _add(totals: dict, group: str, value, errors: bool, counts: list[int]) -> None:
    total = totals.get(value)
    if total is None:
        total = totals[value] = {group: value, "requests": 0, "errors": 0, **dict.fromkeys(TOKEN_FIELDS, 0)}
    requests, *token_counts = counts
    total["requests"] += requests
    total["errors"] += requests if errors else 0
    for field, count in zip(TOKEN_FIELDS, token_counts):
        total[field] += count


def _ceil_to(since: float, seconds: int) -> float:
    # Float floor division is exact (fmod is), so a row's granule start and this boundary agree to the bit.
    return -(-since // seconds) * seconds


def _utc_day(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d")


def _usage_row(member: str) -> dict:
    return orjson.loads(member.partition("|")[2])
