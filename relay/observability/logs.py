"""This module provides relay's log format: one JSON object per line, a traceback as one field, keys scrubbed.

gunicorn's own lines (through ``relay_worker.RelayLogger``), relay's ``relay.*`` loggers, Python warnings and
any library's warning that has no handler of its own all leave through :class:`JsonFormatter`::

    {"ts": 1767225600.123, "level": "WARNING", "logger": "relay.upstream", "pid": 4242,
     "message": "upstream http://10.0.0.7:8080 unreachable: connection refused", "cause": "refused", ...}

Fields passed with ``extra={...}`` become fields of the line.  Standard library only: gunicorn's master
uses it before gevent patches anything.
"""

import json
import logging
import re
import sys

# Start-up refused: gunicorn's own "App failed to load" status, so its arbiter stops instead of respawning.
REFUSED = 4
# What a key looks like in a URL, a header dump or an Authorization value; it stops at JSON's quote and escape.
SECRETS = re.compile(r"(?i)((?:[?&;]|%3F|%26)key=|x-goog-api-key[:=]\s*|bearer\s+)[^&\s'\"\\]+")
# LogRecord's own attributes: everything else on a record came from ``extra``.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def scrub(text):
    """``text`` with every key-looking value replaced by ``[redacted]``."""
    return SECRETS.sub(r"\1[redacted]", text)


class JsonFormatter(logging.Formatter):
    """A record as one JSON line: ts, level, logger, pid, message, the ``extra`` fields, then a traceback."""

    def format(self, record):
        line = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                "pid": record.process, "message": record.getMessage()}
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS and not name.startswith("_"):
                line.setdefault(name, value)
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["traceback"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return scrub(json.dumps(line, default=str, ensure_ascii=False))


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a line is written (tests swap it)."""

    relay_json = True  # marks the handlers install() put in place, so a second call adds none

    def __init__(self):
        logging.Handler.__init__(self)
        self.setFormatter(JsonFormatter())

    @property
    def stream(self):
        return sys.stderr


def install(level="info"):
    """JSON lines on stderr for the ``relay`` loggers at ``level``, Python warnings, and any library's warnings.

    Idempotent; the access log (``relay.access``) keeps its own handler and format.
    """
    for name in ("relay", "py.warnings"):
        logger = logging.getLogger(name)
        if not any(getattr(handler, "relay_json", False) for handler in logger.handlers):
            logger.addHandler(_Stderr())
    logging.getLogger("relay").setLevel(level.upper())
    logging.captureWarnings(True)
    # A logger with no handler anywhere up its tree (urllib3's, gevent's) falls back to lastResort.
    if not getattr(logging.lastResort, "relay_json", False):
        logging.lastResort = _Stderr()
        logging.lastResort.setLevel(logging.WARNING)


def refuse(error):
    """Stop start-up over a ConfigError: one JSON line naming the setting and the fix, exit status REFUSED."""
    install()
    logging.getLogger("relay.startup").error(str(error), extra={"setting": error.setting})
    raise SystemExit(REFUSED)
