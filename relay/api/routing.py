"""This module provides how relay reads a request path before routing: the converters the Gemini routes share,
repeated slashes collapsed, and never a redirect.

werkzeug's defaults answer ``/v1beta//models`` and ``/relay`` with a 308 to ``http://<Host>/…?<query>``:
a Location built from a header the caller chose, carrying the caller's ``?key=``.  create_app turns the
URL map's ``merge_slashes`` and ``strict_slashes`` off (no rule redirects), and :class:`CollapseSlashes`
serves ``//v1beta/models`` as ``/v1beta/models`` (clients that join a base URL ending in ``/`` with a
path starting with one send such paths; WebSocket clients send ``//ws/…``).  Only the path used for
routing changes: relay builds every upstream URL from the parts it matched, never from the raw path.
"""

import re

# Route converters the Gemini blueprints share: the API version kept upstream, and the model collections.
VERSION = "<any(v1beta, v1, v1alpha):version>"
COLLECTION = "<any(models, tunedModels):collection>"
_REPEATED_SLASHES = re.compile(r"/{2,}")


class CollapseSlashes:
    """WSGI middleware: ``PATH_INFO`` with runs of ``/`` collapsed to one, before Flask routes it."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            environ["PATH_INFO"] = _REPEATED_SLASHES.sub("/", path)
        return self.wsgi_app(environ, start_response)
