"""This module provides the ``flask --app app keys ...`` commands: create, list, revoke client keys, show usage.

A new key (``sk-relay-`` + 32 random bytes from :mod:`secrets`) is printed once; only its hash is stored.
"""

import secrets
import time
from datetime import date, datetime, timezone

import click
from flask import current_app
from flask.cli import AppGroup

from relay.auth import hash_key
from relay.store import KeyExists

keys = AppGroup("keys", help="Manage relay client keys (stored hashed in the shared store).")


def init_app(app):
    app.cli.add_command(keys)


def _store():
    return current_app.extensions["relay"].store


def _positive(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter("must be a positive whole number")
    return value


def _expiry(ctx, param, value):
    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise click.BadParameter("use the form YYYY-MM-DD, e.g. 2027-01-31") from None


@keys.command("create")
@click.argument("name")
@click.option("--rpm", type=int, callback=_positive, help="Requests per minute.")
@click.option("--tpm", type=int, callback=_positive, help="Tokens per minute.")
@click.option("--daily-tokens", type=int, callback=_positive, help="Tokens per UTC day.")
@click.option("--models", default="", help='Comma-separated model patterns allowed, e.g. "gemini-2.5-*,gemini-3-*".')
@click.option("--expires", callback=_expiry, help="Last day the key works (YYYY-MM-DD, UTC).")
def create(name, rpm, tpm, daily_tokens, models, expires):
    """Create a key called NAME and print it (once: only its hash is kept)."""
    key = "sk-relay-" + secrets.token_urlsafe(32)
    record = {
        "name": name, "key_hash": hash_key(key), "created": time.time(), "rpm": rpm, "tpm": tpm,
        "daily_tokens": daily_tokens, "models": [pattern.strip() for pattern in models.split(",") if pattern.strip()],
        "expires": expires, "revoked": False, "hint": key[-4:],
    }
    try:
        _store().add_client_key(record)
    except KeyExists:
        raise click.ClickException(f"a key named {name!r} exists already; pick another name or revoke it first") from None
    click.echo(key)


@keys.command("list")
def list_keys():
    """Name, limits, created and last used of every key (never the key itself)."""
    rows = [("NAME", "KEY", "RPM", "TPM", "DAILY", "MODELS", "EXPIRES", "CREATED", "LAST USED", "STATUS")]
    for record in sorted(_store().list_client_keys(), key=lambda record: record["name"]):
        rows.append((
            record["name"], f"…{record.get('hint', '')}", _text(record.get("rpm")), _text(record.get("tpm")),
            _text(record.get("daily_tokens")), ",".join(record.get("models") or []) or "*", _text(record.get("expires")),
            _when(record.get("created")), _when(record.get("last_used")), "revoked" if record.get("revoked") else "active",
        ))
    _table(rows)


@keys.command("revoke")
@click.argument("name")
def revoke(name):
    """Revoke the key called NAME (requests with it get 401 from then on)."""
    if not _store().revoke_client_key(name):
        raise click.ClickException(f"no key named {name!r}; `flask --app app keys list` shows the names")
    click.echo(f"revoked {name}")


@keys.command("usage")
@click.argument("name", required=False)
@click.option("--days", type=int, default=7, show_default=True, callback=_positive, help="How many days back.")
def usage(name, days):
    """Requests and tokens per model over the last DAYS days, for one key or all."""
    rows = _store().query_usage(time.time() - days * 86400, "model", name)
    table = [("MODEL", "REQUESTS", "ERRORS", "PROMPT", "CANDIDATES", "THOUGHTS", "CACHED", "TOTAL")]
    for row in rows:
        table.append((str(row["model"]), *(str(row[field]) for field in (
            "requests", "errors", "prompt_tokens", "candidates_tokens", "thoughts_tokens", "cached_tokens", "total_tokens"))))
    _table(table)


def _text(value):
    return "-" if value in (None, "", []) else str(value)


def _when(timestamp):
    return "-" if not timestamp else datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _table(rows):
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
