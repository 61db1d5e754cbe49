"""Unit tests of settings: environment-only setups, relay.toml, the environment overriding the file, and
error messages that name the line and the fix."""

import textwrap
from pathlib import Path

import pytest

from relay.config import GOOGLE_URL, ConfigError, Settings, Upstream, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "relay.example.toml"


def write_toml(tmp_path, text):
    path = tmp_path / "relay.toml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def config_error(environ):
    with pytest.raises(ConfigError) as raised:
        load_settings(environ)
    return str(raised.value)


FULL = """
    # relay.toml used by the tests
    max_attempts = 4
    retry_deadline = 30
    cooldown_seconds = 2.5
    reprobe_seconds = 120
    read_timeout = 200
    thinking_variants = false

    [[upstreams]]
    name = "google"
    url = "https://generativelanguage.googleapis.com/"
    keys = ["key-google-1", "key-google-2"]
    models = ["gemini-*"]
    priority = 0
    weight = 3
    read_timeout = 120

    [[upstreams]]
    name = "backup"
    kind = "gemini"
    url = "http://backup.internal:8080"
    keys_env = "BACKUP_KEYS"
    priority = 10
    connect_timeout = 2

    [aliases]
    fast = "gemini-2.5-flash"
    smart = "models/gemini-2.5-pro"

    [model_timeouts]
    "*-image*" = 900
"""


# --- environment only ---------------------------------------------------------------------------------------------


def test_defaults_are_one_google_upstream_in_passthrough():
    settings = load_settings({})
    assert settings.upstreams == (Upstream(name="google", url=GOOGLE_URL),)
    assert not settings.managed
    assert (settings.max_attempts, settings.retry_deadline, settings.db_path) == (3, 60.0, "relay.db")


def test_upstream_keys_from_the_environment():
    settings = load_settings({"RELAY_UPSTREAM_KEYS": " k1, k2 ,,k3,k1", "RELAY_UPSTREAM_URL": "http://127.0.0.1:9/",
                              "RELAY_MAX_ATTEMPTS": "5", "RELAY_RETRY_DEADLINE": "12.5", "REDIS_URL": "redis://r:6379/0",
                              "RELAY_DB": "/tmp/x.db", "RELAY_COOLDOWN_SECONDS": "3", "RELAY_REPROBE_SECONDS": "90"})
    [upstream] = settings.upstreams
    assert upstream.keys == ("k1", "k2", "k3") and upstream.url == "http://127.0.0.1:9"
    assert settings.managed
    assert (settings.max_attempts, settings.retry_deadline, settings.redis_url, settings.db_path) == (
        5, 12.5, "redis://r:6379/0", "/tmp/x.db")
    assert (settings.cooldown_base, settings.reprobe_interval) == (3.0, 90.0)


def test_gemini_api_key_is_the_fallback_key():
    assert load_settings({"GEMINI_API_KEY": "gem-key"}).upstreams[0].keys == ("gem-key",)
    assert load_settings({"GEMINI_API_KEY": "gem-key", "RELAY_UPSTREAM_KEYS": "relay-key"}).upstreams[0].keys == (
        "relay-key",)


@pytest.mark.parametrize("variable, value, named", [
    ("RELAY_MAX_ATTEMPTS", "three", "RELAY_MAX_ATTEMPTS"),
    ("RELAY_MAX_ATTEMPTS", "0", "RELAY_MAX_ATTEMPTS"),
    ("RELAY_RETRY_DEADLINE", "0", "RELAY_RETRY_DEADLINE"),
    ("RELAY_COOLDOWN_SECONDS", "-1", "RELAY_COOLDOWN_SECONDS"),
    ("RELAY_UPSTREAM_URL", "ftp://example.com", "RELAY_UPSTREAM_URL"),
    ("RELAY_MAX_UPLOAD_MB", "0", "RELAY_MAX_UPLOAD_MB"),
    ("RELAY_MAX_UPLOAD_MB", "two", "RELAY_MAX_UPLOAD_MB"),
    ("RELAY_PUBLIC_URL", "relay.example.com", "RELAY_PUBLIC_URL"),
    ("RELAY_PUBLIC_URL", "https://relay.example.com/?x=1", "RELAY_PUBLIC_URL"),
])
def test_bad_environment_values_name_the_variable(variable, value, named):
    assert named in config_error({variable: value})


def test_upload_settings():
    assert (Settings(upstreams=()).max_upload_bytes, Settings(upstreams=()).public_url) == (2048 * 1024 * 1024, None)
    settings = load_settings({"RELAY_MAX_UPLOAD_MB": "1.5", "RELAY_PUBLIC_URL": "https://relay.example.com/gemini/"})
    assert settings.max_upload_bytes == 1572864 and settings.public_url == "https://relay.example.com/gemini"


def test_overrides_win_over_everything():
    settings = load_settings({"RELAY_MAX_ATTEMPTS": "5"}, overrides={"max_attempts": 2})
    assert settings.max_attempts == 2


# --- relay.toml ---------------------------------------------------------------------------------------------------


def test_full_file(tmp_path):
    path = write_toml(tmp_path, FULL)
    settings = load_settings({"RELAY_CONFIG": path, "BACKUP_KEYS": "key-backup-1,key-backup-2"})
    google, backup = settings.upstreams
    assert google == Upstream(name="google", url=GOOGLE_URL, keys=("key-google-1", "key-google-2"),
                              models=("gemini-*",), priority=0, weight=3, read_timeout=120.0)
    assert backup == Upstream(name="backup", url="http://backup.internal:8080", keys=("key-backup-1", "key-backup-2"),
                              priority=10, connect_timeout=2.0)
    assert settings.aliases == {"fast": "gemini-2.5-flash", "smart": "gemini-2.5-pro"}
    assert settings.model_read_timeouts == (("*-image*", 900.0),)
    assert (settings.max_attempts, settings.retry_deadline, settings.cooldown_base, settings.reprobe_interval) == (
        4, 30.0, 2.5, 120.0)
    assert settings.read_timeout == 200.0 and settings.thinking_variants is False
    assert settings.managed


def test_keys_env_adds_to_listed_keys(tmp_path):
    path = write_toml(tmp_path, """
        [[upstreams]]
        name = "google"
        keys = ["listed-key"]
        keys_env = "MORE_KEYS"
    """)
    settings = load_settings({"RELAY_CONFIG": path, "MORE_KEYS": "env-key-1, env-key-2"})
    assert settings.upstreams[0].keys == ("listed-key", "env-key-1", "env-key-2")


def test_environment_overrides_the_file(tmp_path):
    path = write_toml(tmp_path, FULL)
    settings = load_settings({
        "RELAY_CONFIG": path, "BACKUP_KEYS": "key-backup-1", "RELAY_MAX_ATTEMPTS": "2", "RELAY_READ_TIMEOUT": "50",
        "RELAY_UPSTREAM_URL": "http://127.0.0.1:5555", "RELAY_UPSTREAM_KEYS": "env-key-a,env-key-b",
    })
    google, backup = settings.upstreams
    # RELAY_UPSTREAM_URL / RELAY_UPSTREAM_KEYS replace the first upstream's url and keys; the rest stays.
    assert google.url == "http://127.0.0.1:5555" and google.keys == ("env-key-a", "env-key-b")
    assert google.models == ("gemini-*",) and google.weight == 3
    assert backup.url == "http://backup.internal:8080" and backup.keys == ("key-backup-1",)
    assert settings.max_attempts == 2 and settings.read_timeout == 50.0


def test_gemini_api_key_does_not_override_the_file(tmp_path):
    path = write_toml(tmp_path, FULL)
    settings = load_settings({"RELAY_CONFIG": path, "BACKUP_KEYS": "key-backup-1", "GEMINI_API_KEY": "ambient-key"})
    assert settings.upstreams[0].keys == ("key-google-1", "key-google-2")


def test_passthrough_file_without_keys(tmp_path):
    path = write_toml(tmp_path, """
        [[upstreams]]
        name = "google"
    """)
    settings = load_settings({"RELAY_CONFIG": path})
    assert settings.upstreams == (Upstream(name="google", url=GOOGLE_URL),)
    assert not settings.managed


def test_example_file_is_valid(tmp_path):
    settings = load_settings({"RELAY_CONFIG": str(EXAMPLE), "GEMINI_KEYS": "main-key-1,main-key-2",
                              "GEMINI_BACKUP_KEYS": "backup-key-1"})
    google, backup = settings.upstreams
    assert google.keys == ("main-key-1", "main-key-2") and backup.keys == ("backup-key-1",)
    assert google.priority < backup.priority
    assert settings.aliases == {"fast": "gemini-2.5-flash", "smart": "gemini-2.5-pro"}
    assert isinstance(settings, Settings)


# --- errors name the line and the fix -----------------------------------------------------------------------------


def test_missing_file():
    message = config_error({"RELAY_CONFIG": "/nonexistent/relay.toml"})
    assert "RELAY_CONFIG" in message and "/nonexistent/relay.toml" in message and "no such file" in message


def test_syntax_error_names_the_line(tmp_path):
    path = write_toml(tmp_path, """
        [[upstreams]]
        name = "google"
        keys = ["a", "b"
        priority = 1
    """)
    message = config_error({"RELAY_CONFIG": path})
    assert message.startswith(path) and "line 4" in message and "fix the TOML syntax" in message


@pytest.mark.parametrize("text, line, words", [
    (  # unknown top-level setting
        """
        max_attempts = 3
        retries = 5
        [[upstreams]]
        name = "google"
        """, 2, ["unknown setting 'retries'", "max_attempts"]),
    (  # unknown upstream field, in the second upstream
        """
        [[upstreams]]
        name = "google"
        keys = ["k1"]

        [[upstreams]]
        name = "backup"
        keys = ["k2"]
        prioritty = 3
        """, 8, ["upstream 'backup'", "unknown field 'prioritty'", "priority"]),
    (  # unsupported kind
        """
        [[upstreams]]
        name = "openai"
        kind = "openai"
        """, 3, ["kind = 'openai'", "kind = \"gemini\""]),
    (  # wrong type: priority as a string
        """
        [[upstreams]]
        name = "google"
        priority = "high"
        """, 3, ["priority = 'high'", "whole number"]),
    (  # zero weight
        """
        [[upstreams]]
        name = "google"

        [[upstreams]]
        name = "backup"
        weight = 0
        """, 6, ["upstream 'backup'", "weight = 0", "positive"]),
    (  # bad url
        """
        [[upstreams]]
        name = "google"
        url = "generativelanguage.googleapis.com"
        """, 3, ["url = 'generativelanguage.googleapis.com'", "http(s)"]),
    (  # keys of the wrong type
        """
        [[upstreams]]
        name = "google"
        keys = [1, 2]
        """, 3, ["keys must be a list of strings"]),
    (  # keys_env naming a variable that is not set
        """
        [[upstreams]]
        name = "google"
        keys_env = "NOT_SET_ANYWHERE"
        """, 3, ["NOT_SET_ANYWHERE", "export NOT_SET_ANYWHERE="]),
    (  # missing name
        """
        [[upstreams]]
        url = "https://example.com"
        """, 1, ["needs a name", "name = \"google\""]),
    (  # duplicate names
        """
        [[upstreams]]
        name = "google"
        keys = ["k1"]

        [[upstreams]]
        name = "google"
        keys = ["k2"]
        """, 6, ["'google' is used twice"]),
    (  # one upstream with keys, one without
        """
        [[upstreams]]
        name = "google"
        keys = ["k1"]

        [[upstreams]]
        name = "backup"
        url = "https://backup.example.com"
        """, 6, ["upstream 'backup' has no keys", "keys_env"]),
    (  # no upstreams at all
        """
        max_attempts = 3
        """, None, ["[[upstreams]]"]),
    (  # boolean given as a string
        """
        thinking_variants = "false"
        [[upstreams]]
        name = "google"
        """, 1, ["thinking_variants", "true or false"]),
    (  # max_attempts of zero
        """
        max_attempts = 0
        [[upstreams]]
        name = "google"
        """, 1, ["max_attempts = 0", "at least 1"]),
    (  # alias to something that is not a model name
        """
        [[upstreams]]
        name = "google"

        [aliases]
        fast = "gemini-2.5-flash"
        broken = ["a", "b"]
        """, 6, ["alias 'broken'", "fast = \"gemini-2.5-flash\""]),
    (  # model timeouts that are not numbers
        """
        [[upstreams]]
        name = "google"

        [model_timeouts]
        "*-image*" = "long"
        """, 5, ["'*-image*'", "positive number of seconds"]),
])
def test_file_errors_name_the_line_and_the_fix(tmp_path, text, line, words):
    path = write_toml(tmp_path, text)
    message = config_error({"RELAY_CONFIG": path})
    expected_prefix = f"{path}:{line}: " if line else f"{path}: "
    assert message.startswith(expected_prefix), message
    for word in words:
        assert word in message, message


def test_a_setting_written_below_a_table_belongs_to_that_table(tmp_path):
    # A common slip: in TOML, max_attempts after [aliases] is an alias; the message points at it.
    path = write_toml(tmp_path, """
        [[upstreams]]
        name = "google"

        [aliases]
        fast = "gemini-2.5-flash"
        max_attempts = 5
    """)
    message = config_error({"RELAY_CONFIG": path})
    assert message.startswith(f"{path}:6: alias 'max_attempts' = 5"), message


def test_a_bad_file_fails_app_start_up(tmp_path):
    from relay import create_app

    path = write_toml(tmp_path, """
        [[upstreams]]
        name = "google"
        weight = -2
    """)
    with pytest.raises(ConfigError, match=r"relay\.toml:3: upstream 'google': weight = -2"):
        # direct create_app: its own start-up is the subject (no app comes out for the factory to keep)
        create_app(environ={"RELAY_CONFIG": path, "RELAY_DB": str(tmp_path / "relay.db")}, check_open=False)
