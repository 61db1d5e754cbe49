"""This module provides relay's settings: defaults < relay.toml (RELAY_CONFIG) < environment < overrides.

It is the only module that reads ``os.environ``.  Every problem is a :class:`ConfigError` whose message
names the setting (and, for the TOML file, the line) and says how to fix it.
"""

import os
import re
import tomllib
from dataclasses import dataclass, field, replace

GOOGLE_URL = "https://generativelanguage.googleapis.com"
UPSTREAM_KINDS = ("gemini",)


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
    weight: int = 1
    connect_timeout: float | None = None
    read_timeout: float | None = None


@dataclass(frozen=True)
class Settings:
    upstreams: tuple
    client_keys: tuple = ()
    aliases: dict = field(default_factory=dict)
    max_body_bytes: int = 100 * 1024 * 1024
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

    env_keys = _split(environ.get("RELAY_UPSTREAM_KEYS") or environ.get("GEMINI_API_KEY", ""))
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
        return [Upstream(name="google", url=_check_url("RELAY_UPSTREAM_URL", env_url or GOOGLE_URL), keys=tuple(env_keys))]
    first = file_upstreams[0]
    changes = {}
    if env_url:
        changes["url"] = _check_url("RELAY_UPSTREAM_URL", env_url)
    if env_keys:
        changes["keys"] = tuple(env_keys)
    return [replace(first, **changes), *file_upstreams[1:]]


def _check(settings):
    if settings.max_body_bytes <= 0:
        raise ConfigError("RELAY_MAX_BODY_MB must be positive")
    if settings.max_attempts < 1:
        raise ConfigError("RELAY_MAX_ATTEMPTS must be at least 1")
    if settings.connect_timeout <= 0 or settings.read_timeout <= 0:
        raise ConfigError("RELAY_CONNECT_TIMEOUT and RELAY_READ_TIMEOUT must be positive numbers of seconds")
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


def _check_url(where, url):
    if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", url):
        raise ConfigError(f"{where}={url!r} is not an http(s) base URL such as {GOOGLE_URL}")
    return url.rstrip("/")


# --- relay.toml -----------------------------------------------------------------------------------

UPSTREAM_FIELDS = {"name", "kind", "url", "keys", "keys_env", "models", "priority", "weight", "connect_timeout", "read_timeout"}
TOP_LEVEL = {
    "upstreams", "aliases", "model_timeouts", "max_body_mb", "connect_timeout", "read_timeout",
    "max_attempts", "retry_deadline", "cooldown_seconds", "reprobe_seconds", "thinking_variants",
}


def _load_toml(path, environ):
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"RELAY_CONFIG={path!r}: no such file; point RELAY_CONFIG at your relay.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc} — fix the TOML syntax on that line (see relay.example.toml)") from None

    where = _LineFinder(path)
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        raise ConfigError(f"{path}:{where.line(unknown[0])}: unknown setting {unknown[0]!r}; known: {', '.join(sorted(TOP_LEVEL))}")

    entries = data.get("upstreams", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: add at least one [[upstreams]] table with name and url (see relay.example.toml)")
    upstreams = [_toml_upstream(path, where, entry, environ) for entry in entries]

    values = {}
    simple = {
        "connect_timeout": ("connect_timeout", float), "read_timeout": ("read_timeout", float),
        "max_attempts": ("max_attempts", int), "retry_deadline": ("retry_deadline", float),
        "cooldown_seconds": ("cooldown_base", float), "reprobe_seconds": ("reprobe_interval", float),
        "thinking_variants": ("thinking_variants", bool),
        "max_body_mb": ("max_body_bytes", lambda mb: int(float(mb) * 1024 * 1024)),
    }
    for key, (name, parse) in simple.items():
        if key in data:
            try:
                values[name] = parse(data[key])
            except (TypeError, ValueError):
                raise ConfigError(f"{path}:{where.line(key)}: {key} = {data[key]!r} has the wrong type") from None
    aliases = data.get("aliases", {})
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise ConfigError(f"{path}:{where.line('aliases')}: [aliases] maps public names to upstream model names (strings)")
    values["aliases"] = dict(aliases)
    if "model_timeouts" in data:
        timeouts = data["model_timeouts"]
        if not isinstance(timeouts, dict):
            raise ConfigError(f"{path}:{where.line('model_timeouts')}: [model_timeouts] maps model patterns to seconds")
        try:
            values["model_read_timeouts"] = tuple((pattern, float(seconds)) for pattern, seconds in timeouts.items())
        except (TypeError, ValueError):
            raise ConfigError(f"{path}:{where.line('model_timeouts')}: [model_timeouts] values must be seconds") from None
    return upstreams, values


def _toml_upstream(path, where, entry, environ):
    name = entry.get("name")
    at = f"{path}:{where.line(name or 'upstreams')}"
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{at}: every [[upstreams]] needs name = \"...\"")
    unknown = sorted(set(entry) - UPSTREAM_FIELDS)
    if unknown:
        raise ConfigError(f"{path}:{where.line(unknown[0])}: upstream {name!r}: unknown field {unknown[0]!r}; known: {', '.join(sorted(UPSTREAM_FIELDS))}")
    kind = entry.get("kind", "gemini")
    if kind not in UPSTREAM_KINDS:
        raise ConfigError(f"{at}: upstream {name!r}: kind = {kind!r} is not supported yet; use \"gemini\"")
    keys = entry.get("keys", [])
    if isinstance(keys, str):
        keys = _split(keys)
    if "keys_env" in entry:
        variable = entry["keys_env"]
        if variable not in environ:
            raise ConfigError(f"{at}: upstream {name!r}: keys_env = {variable!r} but that environment variable is not set")
        keys = [*keys, *_split(environ[variable])]
    models = entry.get("models", ["*"])
    if isinstance(models, str):
        models = [models]
    try:
        return Upstream(
            name=name, kind=kind, url=_check_url(at, entry.get("url", GOOGLE_URL)), keys=tuple(keys),
            models=tuple(models), priority=int(entry.get("priority", 0)), weight=max(1, int(entry.get("weight", 1))),
            connect_timeout=_optional_float(entry.get("connect_timeout")), read_timeout=_optional_float(entry.get("read_timeout")),
        )
    except (TypeError, ValueError):
        raise ConfigError(f"{at}: upstream {name!r}: priority/weight must be integers and timeouts numbers") from None


def _optional_float(value):
    return None if value is None else float(value)


class _LineFinder:
    """Finds the first line of a TOML file that mentions a key or value, for error messages."""

    def __init__(self, path):
        with open(path, encoding="utf-8", errors="replace") as handle:
            self.lines = handle.read().splitlines()

    def line(self, needle):
        for number, text in enumerate(self.lines, start=1):
            if str(needle) in text:
                return number
        return 1
