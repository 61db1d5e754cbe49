"""relay: a Gemini-native API relay.  This module provides ``create_app``, the Flask application factory."""

from flask import Flask

from relay.config import ConfigError, load_settings

__all__ = ["ConfigError", "create_app"]


def create_app(overrides=None, environ=None, store=None, check_open=None):
    """Build the app: settings → services → blueprints → error handlers.

    ``overrides`` replaces Settings fields (tests); ``environ`` replaces ``os.environ``; ``store`` injects a
    shared-state backend.  Raises ConfigError, with the fix in its message, when relay must not start —
    including managed mode with no client key at all (an open relay), except under the ``flask`` CLI
    (``check_open`` None), which must work before the first key exists.
    """
    import click

    from relay.observability import accesslog
    from relay.clients import cli
    from relay.api import admin, batches, files, gemini, lifecycle, media, ops, routing, uploads
    from relay.services import Services

    settings = load_settings(environ, overrides)
    accesslog.init_logging()
    app = Flask(__name__)
    # Never a redirect: werkzeug would build its Location from the caller's Host, with the query (?key=).
    # Set before the blueprints register, as rules take these defaults when they are added.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.wsgi_app = routing.CollapseSlashes(app.wsgi_app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    services = Services(settings, store=store)
    app.extensions["relay"] = services
    # gunicorn.conf.py's worker_exit hook calls this, so queued usage is written before a worker exits.
    app.relay_shutdown = services.shutdown

    app.register_blueprint(ops.bp)
    app.register_blueprint(admin.bp)
    for blueprint in (gemini.bp, uploads.bp, files.bp, batches.bp, media.bp):
        app.register_blueprint(blueprint)
        app.register_blueprint(blueprint, url_prefix="/v1", name=f"{blueprint.name}_v1_prefix")
    lifecycle.init_app(app)
    cli.init_app(app)
    if check_open is None:
        check_open = click.get_current_context(silent=True) is None
    if check_open:
        check_not_open(services)
    return app


def check_not_open(services):
    """Managed mode with no client key at all would be an open relay: refuse to serve."""
    if services.settings.managed and not services.auth.has_any_keys():
        raise ConfigError(
            "relay: upstream keys are configured (RELAY_UPSTREAM_KEYS / GEMINI_API_KEY / relay.toml) but no client "
            "keys exist, so anyone could spend them. Set RELAY_API_KEYS=<key>[,<key>...] or create one with "
            "`flask --app app keys create NAME`, then start relay again."
        )
