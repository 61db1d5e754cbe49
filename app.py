"""The WSGI entry point: ``gunicorn -c gunicorn.conf.py app:app`` (and ``flask --app app keys ...``)."""

import sys

from relay import ConfigError, create_app

try:
    app = create_app()
except ConfigError as error:
    print(error, file=sys.stderr)
    # Exit code 4 is gunicorn's "App failed to load": the arbiter stops instead of respawning workers.
    raise SystemExit(4) from None
