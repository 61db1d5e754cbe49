"""This module provides relay's settings as one value: defaults < relay.toml (RELAY_CONFIG) < environment < overrides.

It is the only module that reads settings from ``os.environ``.  What each setting is (variable, relay.toml
key, check, default, help) is declared once in :mod:`relay.settings`; this module reads both sources through
those declarations.  Every problem is a :class:`ConfigError` whose message names the setting (and, for the
TOML file, the line) and says how to fix it.  Standard library only, like :mod:`relay.settings`.

``python -m relay.config`` checks the environment as start-up would; ``--markdown`` prints the README's
settings tables.
"""

import argparse
import json
import os
import re
import sys
import tomllib
from dataclasses import replace
from urllib.parse import urlsplit

from relay.settings import (
    GOOGLE_URL, MODEL_ID, SETTINGS, UPSTREAM_FIELDS, UPSTREAM_KINDS, ConfigError, Invalid, Number, Settings, Upstream,
)

__all__ = ["GOOGLE_URL", "MODEL_ID", "UPSTREAM_KINDS", "ConfigError", "Settings", "Upstream", "load_settings",
           "markdown", "summary"]

BY_ENV = {setting.env: setting for setting in (*SETTINGS, *UPSTREAM_FIELDS) if setting.env}
BY_FIELD = {setting.field: setting for setting in SETTINGS if setting.field}
TOML_SETTINGS = {setting.toml: setting for setting in SETTINGS if setting.toml}
UPSTREAM_TOML = {field.toml: field for field in UPSTREAM_FIELDS}


def load_settings(environ=None, overrides=None):
    """Build Settings from the environment (``os.environ`` by default) and an optional overrides dict."""
    environ = os.environ if environ is None else environ
    values, upstreams = {}, None
    path = _text(environ, "RELAY_CONFIG")
    if path:
        upstreams, values = _read_toml(path, environ)
    for setting in SETTINGS:
        text = _text(environ, setting.env)
        if setting.field and text:
            values[setting.field] = from_env(setting, text)
    values["upstreams"] = _with_environment(upstreams, environ)
    settings = Settings(**values)
    if overrides:
        _check_overrides(overrides)
        settings = replace(settings, **overrides)
    _check_upstreams(settings)
    _check_tls(settings)
    return settings


def from_env(setting, text):
    """The value of ``setting``'s variable, or a ConfigError naming it and what it should be."""
    try:
        return setting.kind.from_text(text)
    except Invalid:
        raise ConfigError(setting.env_problem(text), setting.env) from None


def _text(environ, variable):
    return environ.get(variable, "").strip() if variable else ""


def _with_environment(file_upstreams, environ):
    """RELAY_UPSTREAM_URL/KEYS set the first upstream's url/keys (the file's, or Google's when there is none)."""
    keys = _env_value(environ, "RELAY_UPSTREAM_KEYS")
    if not keys and file_upstreams is None:
        # GEMINI_API_KEY is a convenience for the one-upstream setup; it never overrides relay.toml's keys.
        keys = _env_value(environ, "GEMINI_API_KEY")
    url = _env_value(environ, "RELAY_UPSTREAM_URL")
    if file_upstreams is not None and not keys and not url:
        return tuple(file_upstreams)
    first, *rest = file_upstreams or [Upstream(name="google")]
    changes = {"url": url} if url else {}
    if keys:
        changes["keys"] = keys
    return (replace(first, **changes), *rest)


def _env_value(environ, variable):
    text = _text(environ, variable)
    return from_env(BY_ENV[variable], text) if text else None


def _check_overrides(overrides):
    """Numbers given as overrides meet the same checks as the environment's (in the units relay uses)."""
    for name, value in overrides.items():
        setting = BY_FIELD.get(name)
        if setting is None or not isinstance(setting.kind, Number) or value is None:
            continue
        try:
            setting.kind.from_toml(value / setting.kind.scale if setting.kind.scale else value)
        except Invalid:
            raise ConfigError(f"{setting.name}: {name} = {value!r} must be {setting.kind.requirement}",
                              setting.name) from None


def _check_tls(settings):
    if bool(settings.tls_cert) != bool(settings.tls_key):
        missing = "RELAY_TLS_KEY" if settings.tls_cert else "RELAY_TLS_CERT"
        raise ConfigError(f"{missing} is not set: RELAY_TLS_CERT and RELAY_TLS_KEY go together (set both, to serve "
                          "HTTPS, or neither)", missing)


def _check_upstreams(settings):
    names = [upstream.name for upstream in settings.upstreams]
    if len(set(names)) != len(names):
        raise ConfigError(f"upstream names must be unique, got {names}", "upstreams")
    if settings.managed and not all(upstream.keys for upstream in settings.upstreams):
        empty = [upstream.name for upstream in settings.upstreams if not upstream.keys]
        raise ConfigError(f"upstreams {empty} have no keys while others do; give every upstream keys (or none, "
                          "for passthrough)", "RELAY_UPSTREAM_KEYS")


# --- relay.toml -----------------------------------------------------------------------------------


def _read_toml(path, environ):
    """(upstreams, {Settings field: value}) from the relay.toml at ``path``."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"RELAY_CONFIG={path!r}: no such file; point RELAY_CONFIG at your relay.toml",
                          "RELAY_CONFIG") from None
    except OSError as exc:
        raise ConfigError(f"RELAY_CONFIG={path!r} cannot be read ({exc.strerror}); check the path and its "
                          "permissions", "RELAY_CONFIG") from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the file is not UTF-8 text; save it as UTF-8", "RELAY_CONFIG") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}: fix the TOML syntax on that line (see relay.example.toml)",
                          "RELAY_CONFIG") from None
    where = _TomlLines(path, text)
    unknown = sorted(set(data) - set(TOML_SETTINGS))
    if unknown:
        raise ConfigError(f"{where.at(unknown[0])}: unknown setting {unknown[0]!r}; known settings: "
                          f"{', '.join(sorted(TOML_SETTINGS))}", unknown[0])
    entries = data.get("upstreams")
    if not isinstance(entries, list) or not entries or not all(isinstance(entry, dict) for entry in entries):
        raise ConfigError(f"{where.at('upstreams')}: add at least one [[upstreams]] table with name and url "
                          "(see relay.example.toml)", "upstreams")
    upstreams = [_toml_upstream(where, index, entry, environ) for index, entry in enumerate(entries)]
    _check_upstream_names(where, upstreams)
    values = {setting.field: _from_toml(where, setting, data[setting.toml])
              for setting in SETTINGS if setting.toml in data and setting.field != "upstreams"}
    return upstreams, values


def _from_toml(where, setting, value, index=None, label=""):
    """``setting``'s value from relay.toml (in [[upstreams]] number ``index`` when given), or a ConfigError."""
    try:
        return setting.kind.from_toml(value)
    except Invalid as problem:
        if problem.entry is not None:
            at = where.at(problem.entry, setting.toml)
        else:
            at = where.at(setting.toml, None if index is None else "upstreams", index)
        raise ConfigError(f"{at}: {label}{problem.message or setting.toml_problem(value)}", setting.name) from None


def _toml_upstream(where, index, entry, environ):
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where.at('name', 'upstreams', index)}: upstream #{index + 1} needs a name, "
                          "e.g. name = \"google\"", "name")
    label = f"upstream {name!r}: "
    unknown = sorted(set(entry) - set(UPSTREAM_TOML))
    if unknown:
        raise ConfigError(f"{where.at(unknown[0], 'upstreams', index)}: {label}unknown field {unknown[0]!r}; "
                          f"known fields: {', '.join(sorted(UPSTREAM_TOML))}", unknown[0])
    values = {field.field: _from_toml(where, field, entry[field.toml], index, label)
              for field in UPSTREAM_FIELDS if field.field and field.toml in entry}
    if "keys_env" in entry:
        variable = _from_toml(where, UPSTREAM_TOML["keys_env"], entry["keys_env"], index, label)
        more = UPSTREAM_TOML["keys"].kind.from_text(environ.get(variable, ""))
        if not more:
            raise ConfigError(f"{where.at('keys_env', 'upstreams', index)}: {label}keys_env = {variable!r} but that "
                              f"environment variable is unset or empty; export {variable}=key1,key2 or remove "
                              "keys_env", variable)
        values["keys"] = tuple(dict.fromkeys((*values.get("keys", ()), *more)))
    return Upstream(**values)


def _check_upstream_names(where, upstreams):
    seen = set()
    for index, upstream in enumerate(upstreams):
        if upstream.name in seen:
            raise ConfigError(f"{where.at('name', 'upstreams', index)}: upstream name {upstream.name!r} is used twice; "
                              "give every [[upstreams]] its own name", "name")
        seen.add(upstream.name)
    with_keys = [upstream for upstream in upstreams if upstream.keys]
    if with_keys and len(with_keys) != len(upstreams):
        index, empty = next((index, upstream) for index, upstream in enumerate(upstreams) if not upstream.keys)
        raise ConfigError(f"{where.at('name', 'upstreams', index)}: upstream {empty.name!r} has no keys while others "
                          "do; give it keys = [...] or keys_env = \"VARIABLE\" (or remove keys everywhere, for "
                          "passthrough)", "keys")


# --- what the settings mean, for people -------------------------------------------------------------


def summary(settings):
    """What relay will do with these settings, for the start-up line: never a key, a token or a password."""
    if settings.redis_url:
        parts = urlsplit(settings.redis_url)
        store = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"
    else:
        store = f"sqlite:{os.path.abspath(settings.db_path)}"
    return {
        "mode": "managed" if settings.managed else "passthrough",
        "upstreams": [{"name": upstream.name, "url": _without_credentials(upstream.url), "keys": len(upstream.keys)}
                      for upstream in settings.upstreams],
        "store": store,
        "admin_views": "on" if settings.admin_token else "off",
    }


def _without_credentials(url):
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _cell(text):
    return f"`{text}`" if text else "—"


def _default_cell(setting):
    if setting.default_text:
        return setting.default_text
    if setting.default in (None, (), {}):
        return "—"
    return _cell(setting.kind.as_text(setting.default))


def markdown():
    """The README's settings tables, generated from the declarations in :mod:`relay.settings`."""
    lines = ["| variable | relay.toml | default | value | meaning |", "|---|---|---|---|---|"]
    for setting in SETTINGS:
        lines.append(f"| {_cell(setting.env)} | {_cell(setting.toml)} | {_default_cell(setting)} | "
                     f"{setting.kind.requirement} | {setting.help} |")
        if setting.field == "upstreams":
            lines.extend(f"| {_cell(field.env)} | {_cell(field.toml)} of the first `[[upstreams]]` | "
                         f"{_default_cell(field)} | {field.kind.requirement} | {field.help} |"
                         for field in UPSTREAM_FIELDS if field.env)
    lines += ["", "Each `[[upstreams]]` table in relay.toml:", "",
              "| field | default | value | meaning |", "|---|---|---|---|"]
    lines.extend(f"| {_cell(field.toml)} | {'required' if field.required else _default_cell(field)} | "
                 f"{field.kind.requirement} | {field.help} |" for field in UPSTREAM_FIELDS)
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m relay.config",
        description="Check relay's settings in this environment the way start-up does, and print what relay "
                    "would do (no key, token or password is printed).")
    parser.add_argument("--markdown", action="store_true", help="print the README's settings tables instead")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
        return 0
    try:
        settings = load_settings()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    print(json.dumps(summary(settings), indent=2))
    return 0


class _TomlLines:
    """Where each table and each key of a relay.toml starts, so that errors can name the line.

    A light scan, not a second parser: it follows ``[table]`` and ``[[array]]`` headers and ``key =``
    lines, which is all relay.toml uses; anything it cannot place is reported without a line number.
    """

    HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_-]+)\s*\]\]?")
    ASSIGNMENT = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")

    def __init__(self, path, text):
        self.path = path
        self.tables = {}  # (table, index) -> header line; index counts [[array]] tables, None for [table]
        self.keys = {}  # (table, index, key) -> line; table None is the top level
        arrays = {}
        table = (None, None)
        for number, line in enumerate(text.splitlines(), start=1):
            header = self.HEADER.match(line)
            if header:
                brackets, name = header.groups()
                index = None
                if brackets == "[[":
                    index = arrays[name] = arrays.get(name, -1) + 1
                table = (name, index)
                self.tables.setdefault(table, number)
                continue
            assignment = self.ASSIGNMENT.match(line)
            if assignment:
                key = assignment.group(1)
                key = key[1:-1] if key[:1] in "\"'" else key
                self.keys.setdefault((*table, key), number)

    def line(self, key, table=None, index=None):
        """The line of ``key`` in a table (else the table's header), or of a top-level key or table; or None."""
        found = self.keys.get((table, index, key))
        if found is None and table is not None:
            found = self.tables.get((table, index)) or self.keys.get((None, None, table))
        if found is None and table is None:
            found = self.tables.get((key, None)) or self.tables.get((key, 0))
        return found

    def at(self, key, table=None, index=None):
        """``path:line`` for an error message (just ``path`` when the line is unknown)."""
        number = self.line(key, table, index)
        return f"{self.path}:{number}" if number else self.path


if __name__ == "__main__":
    raise SystemExit(main())
