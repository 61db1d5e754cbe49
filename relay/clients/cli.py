"""This module provides the ``flask --app app keys ...`` commands: create, list, revoke client keys, show usage.

A new key (``sk-relay-`` + 32 random bytes from :mod:`secrets`) is printed once; only its hash is stored,
with its last four characters as a hint for ``keys list``.  The commands use the same store as the
server (``RELAY_DB``, or ``REDIS_URL`` when set), so run them with the server's environment.
"""

import re
import secrets
import time
from datetime import date, datetime, timezone

import click
from flask import current_app
from flask.cli import AppGroup

from relay.clients.auth import expired, hash_key
from relay.store import KeyExists, StoreError
from relay.store.base import MAX_USAGE_DAYS, TOKEN_FIELDS, usage_window_start

keys = AppGroup("keys", help="Manage relay client keys (stored hashed in the shared store).")

# Names appear in usage rows, limit counters and the usage page: keep them plain, and unlike the
# "static:…" / "passthrough:…" names relay gives other callers.
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MODEL_PATTERN = re.compile(r"^[A-Za-z0-9.*?_\[\]!-]{1,256}$")


def init_app(app):
    app.cli.add_command(keys)


def _store():
    return current_app.extensions["relay"].store


def _name(ctx, param, value):
    if value is not None and not KEY_NAME.match(value):
        raise click.BadParameter("use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def _positive(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter("must be a positive whole number")
    return value


def _models(ctx, param, value):
    patterns = [pattern.strip().removeprefix("models/") for pattern in (value or "").split(",") if pattern.strip()]
    bad = [pattern for pattern in patterns if not MODEL_PATTERN.match(pattern)]
    if bad:
        raise click.BadParameter(f"{bad[0]!r} is not a model name or glob such as gemini-2.5-*")
    return patterns


def _expiry(ctx, param, value):
    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise click.BadParameter("use the form YYYY-MM-DD, e.g. 2027-01-31") from None


def _days(ctx, param, value):
    if value is not None and not 1 <= value <= MAX_USAGE_DAYS:
        raise click.BadParameter(f"must be between 1 and {MAX_USAGE_DAYS}")
    return value


@keys.command("create")
@click.argument("name", callback=_name)
@click.option("--rpm", type=int, callback=_positive, help="Requests per minute.")
@click.option("--tpm", type=int, callback=_positive, help="Tokens per minute (as Google reports them).")
@click.option("--daily-tokens", type=int, callback=_positive, help="Tokens per UTC day.")
@click.option("--models", callback=_models,
              help='Comma-separated model globs the key may use, e.g. "gemini-2.5-*,gemini-3-*" (default: all).')
@click.option("--expires", callback=_expiry, help="Last day the key works (YYYY-MM-DD, UTC).")
@click.option("--live-sessions", type=int, callback=_positive, help="Live API sessions open at once.")
def create(name, rpm, tpm, daily_tokens, models, expires, live_sessions):
    """Create a key called NAME and print it (once: only its hash is kept)."""
    if expires and expired(expires, time.time()):
        raise click.BadParameter(f"{expires} is in the past", param_hint="'--expires'")
    key = "sk-relay-" + secrets.token_urlsafe(32)
    record = {
        "name": name, "key_hash": hash_key(key), "created": time.time(), "rpm": rpm, "tpm": tpm,
        "daily_tokens": daily_tokens, "models": models, "expires": expires, "revoked": False, "hint": key[-4:],
        "live_sessions": live_sessions,
    }
    try:
        _store().add_client_key(record)
    except KeyExists:
        raise click.ClickException(f"a key named {name!r} exists already; pick another name or revoke it first") from None
    except StoreError as error:
        raise click.ClickException(f"the store could not save the key: {error}") from None
    click.echo(key)


@keys.command("list")
def list_keys():
    """Name, limits, created and last used of every key (never the key itself)."""
    try:
        records = _store().list_client_keys()
    except StoreError as error:
        raise click.ClickException(f"the store could not be read: {error}") from None
    rows = [("NAME", "KEY", "RPM", "TPM", "DAILY", "LIVE", "MODELS", "EXPIRES", "CREATED", "LAST USED", "STATUS")]
    for record in sorted(records, key=lambda record: record["name"]):
        rows.append((
            record["name"], f"…{record.get('hint', '')}", _text(record.get("rpm")), _text(record.get("tpm")),
            _text(record.get("daily_tokens")), _text(record.get("live_sessions")),
            ",".join(record.get("models") or []) or "*", _text(record.get("expires")),
            _when(record.get("created")), _when(record.get("last_used")), _status(record),
        ))
    _table(rows)


@keys.command("revoke")
@click.argument("name")
def revoke(name):
    """Revoke the key called NAME (requests with it get 401 within seconds)."""
    try:
        revoked = _store().revoke_client_key(name)
    except StoreError as error:
        raise click.ClickException(f"the store could not be updated: {error}") from None
    if not revoked:
        raise click.ClickException(f"no key named {name!r}; `flask --app app keys list` shows the names")
    click.echo(f"revoked {name}")


@keys.command("usage")
@click.argument("name", required=False)
@click.option("--days", type=int, default=7, show_default=True, callback=_days, help="How many days back.")
def usage(name, days):
    """Requests and tokens over the last DAYS days (from the start of that hour): per key, or per model
    for the key called NAME."""
    group, heading = ("model", "MODEL") if name else ("key", "KEY")
    try:
        rows = _store().query_usage(usage_window_start(time.time(), days), group, name)
        # A mistyped name would print an empty table: fail like `revoke`. Names relay gives callers itself
        # ("static:…", "passthrough:…") are not stored keys, but their usage rows name them.
        if name and not rows and not any(record["name"] == name for record in _store().list_client_keys()):
            raise click.ClickException(f"no key named {name!r}; `flask --app app keys list` shows the names")
    except StoreError as error:
        raise click.ClickException(f"the store could not be read: {error}") from None
    table = [(heading, "REQUESTS", "ERRORS", "PROMPT", "CANDIDATES", "THOUGHTS", "CACHED", "TOOL USE", "TOTAL")]
    totals = dict.fromkeys(("requests", "errors", *TOKEN_FIELDS), 0)
    for row in rows:
        table.append((_text(row[group]), *(str(row[column]) for column in totals)))
        for column in totals:
            totals[column] += row[column]
    table.append(("TOTAL", *(str(value) for value in totals.values())))
    _table(table)


def _status(record):
    if record.get("revoked"):
        return "revoked"
    return "expired" if expired(record.get("expires"), time.time()) else "active"


def _text(value):
    return "-" if value in (None, "", []) else str(value)


def _when(timestamp):
    return "-" if not timestamp else datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _table(rows):
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
