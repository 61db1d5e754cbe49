"""This module provides every relay setting, declared once: environment variable, relay.toml key, type and
check, default and help text.

:mod:`relay.config` reads the environment and relay.toml through these declarations, gunicorn.conf.py
takes its values from them, and the README's settings tables are generated from them
(``python -m relay.config --markdown``; a test keeps the README in step).  Standard library only:
gunicorn's master imports it before gevent has patched anything.
"""

import dataclasses
import functools
import math
import os
import re

GOOGLE_URL = "https://generativelanguage.googleapis.com"
UPSTREAM_KINDS = ("gemini",)  # "openai" will join when relay learns to translate
URL_PATTERN = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")
# A model id as Google spells it, without the "models/" prefix: what aliases may name and routes accept.
MODEL_ID = re.compile(r"[A-Za-z0-9._-]{1,256}")  # use with fullmatch
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(Exception):
    """Relay cannot start with these settings; the message says what to change, ``setting`` names it."""

    def __init__(self, message, setting=None):
        super().__init__(message)
        self.setting = setting


class Invalid(ValueError):
    """A value a kind refuses: ``message`` replaces the standard one, ``entry`` names the table entry at fault."""

    def __init__(self, message=None, entry=None):
        super().__init__(message or "")
        self.message = message
        self.entry = entry


# --- kinds of value: how environment text and relay.toml values are read and checked ----------------


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _split(text):
    return [part.strip() for part in text.split(",") if part.strip()]


def _plain(value):
    """A value as the environment spells it: ``10`` for 10.0, ``true`` for True."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Kind:
    """A type of setting: non-empty text unless a subclass says otherwise.

    ``requirement`` completes "must be …" in messages and fills the README's value column.
    """

    def __init__(self, requirement="text", echo=True):
        self.requirement = requirement
        self.echo = echo  # False: an error message never repeats the value (it may be a key)

    def from_text(self, text):
        """The value of an environment variable's (stripped, non-empty) text."""
        return self.from_toml(text)

    def from_toml(self, value):
        if not isinstance(value, str) or not value.strip():
            raise Invalid()
        return value.strip()

    def as_text(self, value):
        """``value`` written the way the environment spells it (README defaults, examples)."""
        return _plain(value)


class Number(Kind):
    """A number above zero (``whole``: a whole number from ``minimum`` to ``maximum``), times ``scale``."""

    def __init__(self, requirement, whole=False, minimum=None, maximum=None, scale=None):
        super().__init__(requirement)
        self.whole, self.scale = whole, scale
        self.minimum, self.maximum = minimum, maximum

    def from_text(self, text):
        try:
            return self.from_toml(int(text) if self.whole else float(text))
        except ValueError:
            raise Invalid() from None

    def from_toml(self, value):
        if not _number(value) or (self.whole and not isinstance(value, int)) or not math.isfinite(value):
            raise Invalid()
        if (self.minimum is None and value <= 0) or (self.minimum is not None and value < self.minimum) \
                or (self.maximum is not None and value > self.maximum):
            raise Invalid()
        if self.scale:
            return int(value * self.scale)
        return value if self.whole else float(value)


class Integer(Number):
    """Any whole number (an upstream's priority)."""

    def __init__(self, requirement):
        super().__init__(requirement, whole=True)

    def from_toml(self, value):
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid()
        return value


class Flag(Kind):
    """A boolean: true/false in relay.toml, also 1/0, yes/no, on/off in the environment."""

    WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}

    def __init__(self):
        super().__init__("true or false")

    def from_text(self, text):
        if text.lower() not in self.WORDS:
            raise Invalid()
        return self.WORDS[text.lower()]

    def from_toml(self, value):
        if not isinstance(value, bool):
            raise Invalid()
        return value


class Choice(Kind):
    """One of a few words, in any case."""

    def __init__(self, options):
        super().__init__("one of " + ", ".join(options))
        self.options = options

    def from_toml(self, value):
        if not isinstance(value, str) or value.strip().lower() not in self.options:
            raise Invalid()
        return value.strip().lower()


class Checked(Kind):
    """Text that ``accepts`` (a test) allows, turned into the value by ``convert``."""

    def __init__(self, requirement, accepts, convert=str):
        super().__init__(requirement)
        self.accepts, self.convert = accepts, convert

    def from_toml(self, value):
        if not isinstance(value, str) or not self.accepts(value):
            raise Invalid()
        return self.convert(value)


class Strings(Kind):
    """A list of strings: comma-separated in the environment; a TOML array (or, with ``split``, a string)."""

    def __init__(self, requirement, split=True, unique=True, required=False):
        super().__init__(requirement, echo=False)
        self.split, self.unique, self.required = split, unique, required

    def from_text(self, text):
        return self.from_toml(text if self.split else _split(text))

    def from_toml(self, value):
        if isinstance(value, str):
            items = _split(value) if self.split else [value.strip()] if value.strip() else []
        elif isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
            items = [item.strip() for item in value if item.strip()]
        else:
            raise Invalid()
        if self.required and not items:
            raise Invalid()
        return tuple(dict.fromkeys(items) if self.unique else items)

    def as_text(self, value):
        return ",".join(value)


class ModelTimeouts(Kind):
    """Read timeouts per model pattern: ``"*-image*=600,gemini-3*-pro*=900"``, or a TOML table."""

    EXAMPLE = 'e.g. "*-image*" = 600'

    def __init__(self):
        super().__init__("pattern=seconds pairs")

    def from_text(self, text):
        pairs = {}
        for item in _split(text):
            pattern, sep, seconds = item.partition("=")
            if not sep or not pattern.strip():
                raise Invalid()
            try:
                pairs[pattern.strip()] = float(seconds)
            except ValueError:
                raise Invalid() from None
        return self.from_toml(pairs)

    def from_toml(self, value):
        if not isinstance(value, dict):
            raise Invalid("model_timeouts must be a table: [model_timeouts] then lines like \"*-image*\" = 600")
        for pattern, seconds in value.items():
            if not _number(seconds) or seconds <= 0:
                raise Invalid(f"model_timeouts {pattern!r} = {seconds!r} must be a positive number of seconds, "
                              f"{self.EXAMPLE}", entry=pattern)
        return tuple((pattern, float(seconds)) for pattern, seconds in value.items())

    def as_text(self, value):
        pairs = value.items() if isinstance(value, dict) else value
        return ",".join(f"{pattern}={_plain(seconds)}" for pattern, seconds in pairs)


class Aliases(Kind):
    """Public model names for upstream models: a TOML table ``fast = "gemini-2.5-flash"``."""

    def __init__(self):
        super().__init__("a table of name = \"model id\"")

    def from_toml(self, value):
        if not isinstance(value, dict):
            raise Invalid("aliases must be a table: [aliases] then lines like fast = \"gemini-2.5-flash\"")
        resolved = {}
        for public_name, upstream_model in value.items():
            if not isinstance(upstream_model, str) or not MODEL_ID.fullmatch(upstream_model.removeprefix("models/")):
                raise Invalid(f"alias {public_name!r} = {upstream_model!r} must name one upstream model, "
                              "e.g. fast = \"gemini-2.5-flash\"", entry=public_name)
            resolved[public_name] = upstream_model.removeprefix("models/")
        return resolved


def _toml_literal(value):
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_literal(item) for item in value) + "]"
    return _plain(value)


# --- the declarations ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting.  ``default`` and ``example`` are written as an operator writes them (100 MB, not bytes)."""

    field: str | None  # the Settings (or Upstream) attribute; None for a variable only read to find others
    kind: Kind
    default: object
    help: str
    env: str | None = None  # environment variable
    toml: str | None = None  # relay.toml key (top level, or in each [[upstreams]] table)
    example: object = None  # for error messages, when the default makes a poor one
    default_text: str | None = None  # the README's default cell, when the default needs words
    required: bool = False

    @property
    def name(self):
        return self.env or self.toml

    def value(self):
        """The default as relay uses it (bytes, floats, tuples)."""
        return None if self.default is None else self.kind.from_toml(self.default)

    def env_problem(self, text):
        example = self.kind.as_text(self.default if self.example is None else self.example)
        shown = f"{self.env}={text!r}" if self.kind.echo else self.env
        return f"{shown} is not valid: use {self.kind.requirement}, e.g. {self.env}={example}"

    def toml_problem(self, value):
        example = _toml_literal(self.default if self.example is None else self.example)
        shown = f"{self.toml} = {value!r}" if self.kind.echo else self.toml
        return f"{shown} must be {self.kind.requirement}, e.g. {self.toml} = {example}"


SECONDS = Number("a positive number of seconds")
COUNT = Number("a whole number of at least 1", whole=True, minimum=1)
WHOLE_SECONDS = Number("a whole number of seconds, at least 1", whole=True, minimum=1)
URL = Checked("an http(s) base URL", URL_PATTERN.match, lambda url: url.rstrip("/"))
REDIS_URL = Checked("a redis://, rediss:// or unix:// URL",
                    lambda url: url.startswith(("redis://", "rediss://", "unix://")))
PUBLIC_URL = Checked("an http(s) URL without a query, e.g. https://relay.example.com", URL_PATTERN.match,
                     lambda url: url.rstrip("/"))
DIRECTORY = Checked("an existing directory", os.path.isdir)
PEM_FILE = Checked("a readable PEM file", lambda path: os.path.isfile(path) and os.access(path, os.R_OK))

SETTINGS = (
    # gunicorn reads these (gunicorn.conf.py)
    Setting("port", Number("a port number from 1 to 65535", whole=True, minimum=1, maximum=65535), 8080,
            "port gunicorn binds on `0.0.0.0`", env="PORT"),
    Setting("workers", COUNT, 2, "gunicorn worker processes (gevent: one per core is plenty)", env="WEB_CONCURRENCY"),
    Setting("worker_connections", COUNT, 10000, "concurrent connections per worker (open streams count)",
            env="RELAY_WORKER_CONNECTIONS"),
    Setting("worker_timeout", WHOLE_SECONDS, 60, "gunicorn's stuck-worker timeout", env="RELAY_WORKER_TIMEOUT"),
    Setting("graceful_timeout", WHOLE_SECONDS, 30, "seconds in-flight requests get after SIGTERM",
            env="RELAY_GRACEFUL_TIMEOUT"),
    Setting("log_level", Choice(LOG_LEVELS), "info", "least level of gunicorn's and relay's log lines (the access "
            "log is always written)", env="RELAY_LOG_LEVEL"),
    Setting("metrics_dir", DIRECTORY, None, "where workers keep Prometheus samples for `/metrics`",
            env="PROMETHEUS_MULTIPROC_DIR", example="/run/relay-metrics",
            default_text="a fresh temporary directory, removed at exit"),
    Setting("tls_cert", PEM_FILE, None, "PEM certificate: relay serves HTTPS and `wss://` itself (gunicorn's "
            "`certfile`), which google-genai's Live API needs when no TLS-terminating proxy is in front; set with "
            "`RELAY_TLS_KEY`", env="RELAY_TLS_CERT", example="/etc/relay/cert.pem"),
    Setting("tls_key", PEM_FILE, None, "PEM private key of `RELAY_TLS_CERT` (set both or neither)",
            env="RELAY_TLS_KEY", example="/etc/relay/key.pem"),
    # where requests go
    Setting(None, Kind("a file path"), None, "path to a `relay.toml` with several upstreams (see "
            "`relay.example.toml`)", env="RELAY_CONFIG"),
    Setting("upstreams", Kind("`[[upstreams]]` tables"), None, "the upstreams and their keys: see the "
            "`[[upstreams]]` table below", toml="upstreams", default_text="one: Google", required=True),
    Setting(None, Strings("comma-separated keys"), None, "Google keys, used when `RELAY_UPSTREAM_KEYS` is unset "
            "and no `RELAY_CONFIG` is given", env="GEMINI_API_KEY", example=("AIza...",)),
    Setting("client_keys", Strings("comma-separated keys", unique=False), (), "comma-separated static client keys "
            "relay accepts (no limits)", env="RELAY_API_KEYS", example=("sk-relay-choose-one",)),
    Setting("aliases", Aliases(), {}, "public model names for upstream models, e.g. `fast = \"gemini-2.5-flash\"`",
            toml="aliases", default_text="none"),
    Setting("max_body_bytes", Number("a positive number of megabytes", scale=1024 * 1024), 100,
            "request body limit (Google's inline-data limit)", env="RELAY_MAX_BODY_MB", toml="max_body_mb"),
    Setting("max_upload_bytes", Number("a positive number of megabytes", scale=1024 * 1024), 2048,
            "Files API upload limit per file (Google's 2 GB); uploads are streamed, never held",
            env="RELAY_MAX_UPLOAD_MB", toml="max_upload_mb"),
    Setting("public_url", PUBLIC_URL, None, "the URL callers reach relay at: upload URLs are built on it (set it "
            "behind any proxy or TLS terminator; unset, relay uses the address the connection arrived at, never "
            "the caller's Host header)", env="RELAY_PUBLIC_URL", example="https://relay.example.com"),
    Setting("connect_timeout", SECONDS, 10, "seconds to connect upstream", env="RELAY_CONNECT_TIMEOUT",
            toml="connect_timeout"),
    Setting("read_timeout", SECONDS, 300, "seconds of silence allowed between upstream bytes",
            env="RELAY_READ_TIMEOUT", toml="read_timeout"),
    Setting("model_read_timeouts", ModelTimeouts(), {"*-image*": 600}, "read timeouts per model pattern, e.g. "
            "`*-image*=600,gemini-3-pro*=900`", env="RELAY_MODEL_TIMEOUTS", toml="model_timeouts"),
    Setting("max_attempts", COUNT, 3, "upstream attempts per request (different key or upstream each time)",
            env="RELAY_MAX_ATTEMPTS", toml="max_attempts"),
    Setting("retry_deadline", SECONDS, 60, "no new attempt starts after this many seconds",
            env="RELAY_RETRY_DEADLINE", toml="retry_deadline"),
    Setting("cooldown_base", SECONDS, 5, "first backoff for a key that got 429 without `RetryInfo` (doubles, max 300)",
            env="RELAY_COOLDOWN_SECONDS", toml="cooldown_seconds"),
    Setting("reprobe_interval", SECONDS, 600, "how long a key Google rejected as invalid/revoked stays disabled",
            env="RELAY_REPROBE_SECONDS", toml="reprobe_seconds"),
    Setting("thinking_variants", Flag(), True, "list `-thinking`/`-nothinking` variants in `GET models`",
            env="RELAY_THINKING_VARIANTS", toml="thinking_variants"),
    # state and access
    Setting("db_path", Kind("a file path"), "relay.db", "SQLite file for shared state (one box, all workers); a "
            "relative path is taken from the directory relay starts in: run `flask --app app keys` there too",
            env="RELAY_DB"),
    Setting("redis_url", REDIS_URL, None, "use Redis for shared state instead (several instances)", env="REDIS_URL",
            example="redis://localhost:6379/0"),
    Setting("admin_token", Kind("a secret string", echo=False), None, "Bearer token for the admin surfaces: "
            "`/relay/*` views, `/metrics`, `/debug/runtime`; all are off without it", env="RELAY_ADMIN_TOKEN", example="a-long-random-string"),
)

UPSTREAM_FIELDS = (
    Setting("name", Kind("a name"), None, "shown in logs, metrics and `/relay/upstreams`; unique", toml="name",
            required=True, example="google"),
    Setting("kind", Choice(UPSTREAM_KINDS), "gemini", "the API the upstream speaks", toml="kind"),
    Setting("url", URL, GOOGLE_URL, "upstream base URL (the variable sets the first upstream's)",
            env="RELAY_UPSTREAM_URL", toml="url"),
    Setting("keys", Strings("a list of strings"), (), "upstream API keys; no keys on any upstream means passthrough "
            "(the variable sets the first upstream's, comma-separated)", env="RELAY_UPSTREAM_KEYS", toml="keys",
            example=("AIza...", "AIza...")),
    Setting(None, Kind("an environment variable name"), None, "an environment variable holding more keys, "
            "comma-separated", toml="keys_env", example="GOOGLE_KEYS"),
    Setting("models", Strings("a non-empty list of model name patterns", split=False, unique=False, required=True),
            ("*",), "model name patterns this upstream serves", toml="models", example=("gemini-2.5-*",)),
    Setting("priority", Integer("a whole number"), 0, "lower is tried first", toml="priority"),
    Setting("weight", Number("a positive number"), 1, "share of traffic among upstreams of one priority",
            toml="weight"),
    Setting("connect_timeout", SECONDS, None, "`connect_timeout` for this upstream", toml="connect_timeout",
            example=30),
    Setting("read_timeout", SECONDS, None, "`read_timeout` for this upstream", toml="read_timeout", example=30),
)


def _settings_class(name, declarations, doc, namespace=None):
    """A frozen dataclass with one field per declared setting, defaulting to the declared default."""
    fields = []
    for setting in sorted((setting for setting in declarations if setting.field), key=lambda s: not s.required):
        if setting.required:
            fields.append((setting.field, object))
            continue
        value = setting.value()
        default = dataclasses.field(default_factory=setting.value) if isinstance(value, dict) else \
            dataclasses.field(default=value)
        fields.append((setting.field, object, default))
    made = dataclasses.make_dataclass(name, fields, frozen=True, namespace=namespace)
    made.__module__, made.__doc__ = __name__, doc
    return made


def _managed(settings):
    """Managed mode: relay holds upstream keys and callers must present a relay client key."""
    return any(upstream.keys for upstream in settings.upstreams)


Upstream = _settings_class("Upstream", UPSTREAM_FIELDS, "One upstream, as UPSTREAM_FIELDS declares it.")
Settings = _settings_class("Settings", SETTINGS, "Relay's settings, as SETTINGS declares them.",
                           namespace={"managed": functools.cached_property(_managed)})
