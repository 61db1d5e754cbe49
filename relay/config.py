"""This module provides relay's settings: defaults < relay.toml (RELAY_CONFIG) < environment < overrides.

It is the only module that reads ``os.environ``.  Every problem is a :class:`ConfigError` whose message
names the setting (and, for the TOML file, the line) and says how to fix it.
"""

import os
import re
import tomllib
from dataclasses import dataclass, field, replace

GOOGLE_URL = "https://generativelanguage.googleapis.com"
UPSTREAM_KINDS = ("gemini",)  # "openai" will join when relay learns to translate
URL_PATTERN = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,256}$")


class ConfigError(Exception):
    """Relay cannot start with these settings; the message says what to change."""


@dataclass(frozen=True)
class Upstream:
    name: str
    url: str
    keys: tuple = ()
    kind: str = "gemini"
    models: tuple = ("*",)
    priority: int = 0
    weight: float = 1
    connect_timeout: float | None = None
    read_timeout: float | None = None


@dataclass(frozen=True)
class Settings:
    upstreams: tuple
    client_keys: tuple = ()
    aliases: dict = field(default_factory=dict)
    max_body_bytes: int = 100 * 1024 * 1024
    max_upload_bytes: int = 2048 * 1024 * 1024
    public_url: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    model_read_timeouts: tuple = (("*-image*", 600.0),)
    admin_token: str | None = None
    db_path: str = "relay.db"
    redis_url: str | None = None
    max_attempts: int = 3
    retry_deadline: float = 60.0
    cooldown_base: float = 5.0
    reprobe_interval: float = 600.0
    thinking_variants: bool = True

    @property
    def managed(self):
        """Managed mode: relay holds upstream keys and callers must present a relay client key."""
        return any(upstream.keys for upstream in self.upstreams)


ENV_FIELDS = {
    # variable: (settings field, parser)
    "RELAY_MAX_BODY_MB": ("max_body_bytes", lambda text: int(float(text) * 1024 * 1024)),
    "RELAY_MAX_UPLOAD_MB": ("max_upload_bytes", lambda text: int(float(text) * 1024 * 1024)),
    "RELAY_PUBLIC_URL": ("public_url", lambda text: _parse_public_url(text)),
    "RELAY_CONNECT_TIMEOUT": ("connect_timeout", float),
    "RELAY_READ_TIMEOUT": ("read_timeout", float),
    "RELAY_ADMIN_TOKEN": ("admin_token", str),
    "RELAY_DB": ("db_path", str),
    "REDIS_URL": ("redis_url", str),
    "RELAY_MAX_ATTEMPTS": ("max_attempts", int),
    "RELAY_RETRY_DEADLINE": ("retry_deadline", float),
    "RELAY_COOLDOWN_SECONDS": ("cooldown_base", float),
    "RELAY_REPROBE_SECONDS": ("reprobe_interval", float),
    "RELAY_THINKING_VARIANTS": ("thinking_variants", lambda text: _parse_bool("RELAY_THINKING_VARIANTS", text)),
    "RELAY_MODEL_TIMEOUTS": ("model_read_timeouts", lambda text: _parse_model_timeouts(text)),
}


def load_settings(environ=None, overrides=None):
    """Build Settings from the environment (``os.environ`` by default) and an optional overrides dict."""
    environ = os.environ if environ is None else environ
    values = {}
    upstreams = None
    path = environ.get("RELAY_CONFIG")
    if path:
        upstreams, values = _load_toml(path, environ)

    for variable, (name, parse) in ENV_FIELDS.items():
        text = environ.get(variable, "").strip()
        if text:
            try:
                values[name] = parse(text)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{variable}={text!r} is not valid ({exc}); unset it or give a number/value as the README says") from None

    env_keys = _split(environ.get("RELAY_UPSTREAM_KEYS", ""))
    if not env_keys and upstreams is None:
        # GEMINI_API_KEY is a convenience for the one-upstream setup; it never overrides relay.toml's keys.
        env_keys = _split(environ.get("GEMINI_API_KEY", ""))
    env_url = environ.get("RELAY_UPSTREAM_URL", "").strip()
    if upstreams is None or env_keys or env_url:
        upstreams = _env_upstreams(upstreams, env_url, env_keys)
    values["upstreams"] = tuple(upstreams)

    static_keys = _split(environ.get("RELAY_API_KEYS", ""))
    if static_keys:
        values["client_keys"] = tuple(static_keys)

    settings = replace(Settings(upstreams=()), **values)
    if overrides:
        settings = replace(settings, **overrides)
    _check(settings)
    return settings


def _env_upstreams(file_upstreams, env_url, env_keys):
    """Environment overrides the file: RELAY_UPSTREAM_URL/KEYS replace the first upstream's url/keys."""
    if not file_upstreams:
        return [Upstream(name="google", url=_check_url("RELAY_UPSTREAM_URL", env_url or GOOGLE_URL),
                         keys=tuple(dict.fromkeys(env_keys)))]
    first = file_upstreams[0]
    changes = {}
    if env_url:
        changes["url"] = _check_url("RELAY_UPSTREAM_URL", env_url)
    if env_keys:
        changes["keys"] = tuple(dict.fromkeys(env_keys))
    return [replace(first, **changes), *file_upstreams[1:]]


def _check(settings):
    if settings.max_body_bytes <= 0:
        raise ConfigError("RELAY_MAX_BODY_MB must be positive")
    if settings.max_upload_bytes <= 0:
        raise ConfigError("RELAY_MAX_UPLOAD_MB must be positive (default 2048, Google's 2 GB per file)")
    if settings.max_attempts < 1:
        raise ConfigError("RELAY_MAX_ATTEMPTS must be at least 1")
    if settings.connect_timeout <= 0 or settings.read_timeout <= 0:
        raise ConfigError("RELAY_CONNECT_TIMEOUT and RELAY_READ_TIMEOUT must be positive numbers of seconds")
    if settings.retry_deadline <= 0:
        raise ConfigError("RELAY_RETRY_DEADLINE must be a positive number of seconds (default 60)")
    if settings.cooldown_base <= 0 or settings.reprobe_interval <= 0:
        raise ConfigError("RELAY_COOLDOWN_SECONDS and RELAY_REPROBE_SECONDS must be positive numbers of seconds")
    names = [upstream.name for upstream in settings.upstreams]
    if len(set(names)) != len(names):
        raise ConfigError(f"upstream names must be unique, got {names}")
    if settings.managed and not all(upstream.keys for upstream in settings.upstreams):
        empty = [upstream.name for upstream in settings.upstreams if not upstream.keys]
        raise ConfigError(f"upstreams {empty} have no keys while others do; give every upstream keys (or none, for passthrough)")


def _split(text):
    return [part.strip() for part in text.split(",") if part.strip()]


def _parse_bool(variable, text):
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{variable} must be true or false")


def _parse_model_timeouts(text):
    """``"*-image*=600,gemini-3*-pro*=900"`` → ((pattern, seconds), ...)."""
    pairs = []
    for item in _split(text):
        pattern, sep, seconds = item.partition("=")
        if not sep or not pattern.strip():
            raise ValueError(f"expected pattern=seconds, got {item!r}")
        pairs.append((pattern.strip(), float(seconds)))
    return tuple(pairs)


def _parse_public_url(text):
    """relay's own base URL as callers reach it (upload URLs are built on it): http(s), no query."""
    if not URL_PATTERN.match(text):
        raise ValueError("expected the http(s) URL callers reach relay at, e.g. https://relay.example.com")
    return text.rstrip("/")


def _check_url(where, url):
    if not URL_PATTERN.match(url):
        raise ConfigError(f"{where}={url!r} is not an http(s) base URL such as {GOOGLE_URL}")
    return url.rstrip("/")


# --- relay.toml -----------------------------------------------------------------------------------

UPSTREAM_FIELDS = {"name", "kind", "url", "keys", "keys_env", "models", "priority", "weight", "connect_timeout", "read_timeout"}
TOP_LEVEL = {
    "upstreams", "aliases", "model_timeouts", "max_body_mb", "connect_timeout", "read_timeout",
    "max_attempts", "retry_deadline", "cooldown_seconds", "reprobe_seconds", "thinking_variants",
}
# file setting: (Settings field, kind of value, example for the error message)
FILE_FIELDS = {
    "connect_timeout": ("connect_timeout", "seconds", "connect_timeout = 10"),
    "read_timeout": ("read_timeout", "seconds", "read_timeout = 300"),
    "max_attempts": ("max_attempts", "count", "max_attempts = 3"),
    "retry_deadline": ("retry_deadline", "seconds", "retry_deadline = 60"),
    "cooldown_seconds": ("cooldown_base", "seconds", "cooldown_seconds = 5"),
    "reprobe_seconds": ("reprobe_interval", "seconds", "reprobe_seconds = 600"),
    "max_body_mb": ("max_body_bytes", "megabytes", "max_body_mb = 100"),
    "thinking_variants": ("thinking_variants", "boolean", "thinking_variants = true"),
}


def _load_toml(path, environ):
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"RELAY_CONFIG={path!r}: no such file; point RELAY_CONFIG at your relay.toml") from None
    except OSError as exc:
        raise ConfigError(f"RELAY_CONFIG={path!r} cannot be read ({exc.strerror}); check the path and its permissions") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the file is not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}: fix the TOML syntax on that line (see relay.example.toml)") from None

    where = _TomlLines(path, raw.decode("utf-8"))
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        raise ConfigError(f"{where.at(unknown[0])}: unknown setting {unknown[0]!r}; known settings: {', '.join(sorted(TOP_LEVEL))}")

    entries = data.get("upstreams")
    if not isinstance(entries, list) or not entries or not all(isinstance(entry, dict) for entry in entries):
        raise ConfigError(f"{where.at('upstreams')}: add at least one [[upstreams]] table with name and url (see relay.example.toml)")
    upstreams = [_toml_upstream(where, index, entry, environ) for index, entry in enumerate(entries)]
    _check_upstream_names(where, upstreams)

    values = {}
    for key, (name, kind, example) in FILE_FIELDS.items():
        if key in data:
            values[name] = _file_value(where.at(key), key, data[key], kind, example)
    values["aliases"] = _toml_aliases(where, data.get("aliases", {}))
    if "model_timeouts" in data:
        values["model_read_timeouts"] = _toml_model_timeouts(where, data["model_timeouts"])
    return upstreams, values


def _file_value(at, key, value, kind, example):
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ConfigError(f"{at}: {key} = {value!r} must be true or false, e.g. {example}")
        return value
    if kind == "count":
        if not _is_integer(value) or value < 1:
            raise ConfigError(f"{at}: {key} = {value!r} must be a whole number of at least 1, e.g. {example}")
        return value
    if not _is_number(value) or value <= 0:
        raise ConfigError(f"{at}: {key} = {value!r} must be a positive number of {kind}, e.g. {example}")
    return int(value * 1024 * 1024) if kind == "megabytes" else float(value)


def _toml_upstream(where, index, entry, environ):
    name = entry.get("name")
    at = where.at("name", "upstreams", index)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{at}: upstream #{index + 1} needs a name, e.g. name = \"google\"")
    label = f"upstream {name!r}"

    def fail(field, problem):
        raise ConfigError(f"{where.at(field, 'upstreams', index)}: {label}: {problem}")

    unknown = sorted(set(entry) - UPSTREAM_FIELDS)
    if unknown:
        fail(unknown[0], f"unknown field {unknown[0]!r}; known fields: {', '.join(sorted(UPSTREAM_FIELDS))}")
    kind = entry.get("kind", "gemini")
    if kind not in UPSTREAM_KINDS:
        fail("kind", f"kind = {kind!r} is not supported (yet); use kind = \"gemini\"")
    url = entry.get("url", GOOGLE_URL)
    if not isinstance(url, str) or not URL_PATTERN.match(url):
        fail("url", f"url = {url!r} is not an http(s) base URL; use e.g. url = \"{GOOGLE_URL}\"")
    keys = _string_list(entry.get("keys", []), split=True)
    if keys is None:
        fail("keys", "keys must be a list of strings, e.g. keys = [\"AIza...\", \"AIza...\"]")
    if "keys_env" in entry:
        variable = entry["keys_env"]
        if not isinstance(variable, str) or not variable:
            fail("keys_env", "keys_env names an environment variable, e.g. keys_env = \"GOOGLE_KEYS\"")
        if not _split(environ.get(variable, "")):
            fail("keys_env", f"keys_env = {variable!r} but that environment variable is unset or empty; "
                             f"export {variable}=key1,key2 or remove keys_env")
        keys = [*keys, *_split(environ[variable])]
    models = _string_list(entry.get("models", ["*"]), split=False)
    if not models:
        fail("models", "models must be a non-empty list of model name patterns, e.g. models = [\"gemini-2.5-*\"]")
    priority = entry.get("priority", 0)
    if not _is_integer(priority):
        fail("priority", f"priority = {priority!r} must be a whole number (lower is tried first), e.g. priority = 0")
    weight = entry.get("weight", 1)
    if not _is_number(weight) or weight <= 0:
        fail("weight", f"weight = {weight!r} must be a positive number, e.g. weight = 1")
    timeouts = {}
    for field_name in ("connect_timeout", "read_timeout"):
        value = entry.get(field_name)
        if value is not None and (not _is_number(value) or value <= 0):
            fail(field_name, f"{field_name} = {value!r} must be a positive number of seconds, e.g. {field_name} = 30")
        timeouts[field_name] = None if value is None else float(value)
    return Upstream(name=name, kind=kind, url=url.rstrip("/"), keys=tuple(dict.fromkeys(keys)), models=tuple(models),
                    priority=priority, weight=weight, **timeouts)


def _check_upstream_names(where, upstreams):
    seen = set()
    for index, upstream in enumerate(upstreams):
        if upstream.name in seen:
            raise ConfigError(f"{where.at('name', 'upstreams', index)}: upstream name {upstream.name!r} is used twice; "
                              "give every [[upstreams]] its own name")
        seen.add(upstream.name)
    with_keys = [upstream for upstream in upstreams if upstream.keys]
    if with_keys and len(with_keys) != len(upstreams):
        index, empty = next((index, upstream) for index, upstream in enumerate(upstreams) if not upstream.keys)
        raise ConfigError(f"{where.at('name', 'upstreams', index)}: upstream {empty.name!r} has no keys while others do; "
                          "give it keys = [...] or keys_env = \"VARIABLE\" (or remove keys everywhere, for passthrough)")


def _toml_aliases(where, aliases):
    if not isinstance(aliases, dict):
        raise ConfigError(f"{where.at('aliases')}: aliases must be a table: [aliases] then lines like fast = \"gemini-2.5-flash\"")
    resolved = {}
    for public_name, upstream_model in aliases.items():
        if not isinstance(upstream_model, str) or not MODEL_NAME.match(upstream_model.removeprefix("models/")):
            raise ConfigError(f"{where.at(public_name, 'aliases')}: alias {public_name!r} = {upstream_model!r} must name one "
                              "upstream model, e.g. fast = \"gemini-2.5-flash\"")
        resolved[public_name] = upstream_model.removeprefix("models/")
    return resolved


def _toml_model_timeouts(where, timeouts):
    if not isinstance(timeouts, dict):
        raise ConfigError(f"{where.at('model_timeouts')}: model_timeouts must be a table: [model_timeouts] then lines like "
                          "\"*-image*\" = 600")
    pairs = []
    for pattern, seconds in timeouts.items():
        if not _is_number(seconds) or seconds <= 0:
            raise ConfigError(f"{where.at(pattern, 'model_timeouts')}: model_timeouts {pattern!r} = {seconds!r} must be a "
                              "positive number of seconds, e.g. \"*-image*\" = 600")
        pairs.append((pattern, float(seconds)))
    return tuple(pairs)


def _is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _string_list(value, split):
    """A list of non-empty strings from a TOML string or array; None when it is anything else."""
    if isinstance(value, str):
        return _split(value) if split else [value.strip()] if value.strip() else []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value if item.strip()]
    return None


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
