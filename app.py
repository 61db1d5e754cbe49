"""The WSGI entry point: ``gunicorn -c gunicorn.conf.py app:app`` (and ``flask --app app keys ...``)."""

from relay import ConfigError, create_app
from relay.observability import logs

try:
    app = create_app()
except ConfigError as error:
    # Under gunicorn the master has checked the settings already; this is for what changed since, and for
    # other WSGI servers and the flask CLI.
    logs.refuse(error)
