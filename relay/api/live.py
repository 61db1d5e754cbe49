"""This module provides the Live API routes: the WebSocket session endpoint and ephemeral-token minting.

``GET /ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent[Constrained]``
upgraded to a WebSocket runs one :class:`relay.live.session.LiveSession`; ``POST /{version}/auth_tokens``
mints a relay token for browser apps.  Both are registered at ``/`` and under the ``/v1`` prefix, like the
Gemini routes.  A Live session needs gunicorn's gevent worker: the WebSocket runs on gunicorn's socket.
"""

import time

from flask import Blueprint, Response, current_app, g, request

from relay.api.lifecycle import respond
from relay.api.routing import VERSION
from relay.clients.auth import hash_key, presented_key
from relay.errors import JSON_HEADERS, InvalidArgument, RelayError, render_json
from relay.live import constraints, tokens
from relay.live.registry import LiveSessions
from relay.live.session import LiveSession
from relay.pipeline import steps
from relay.pipeline.body import parse_json, read_body
from relay.pipeline.forward import forward
from relay.pipeline.request import begin
from relay.services import current

bp = Blueprint("live", __name__)

RPC = "<any(BidiGenerateContent, BidiGenerateContentConstrained):rpc>"
LIVE_PATH = f"/ws/google.ai.generativelanguage.{VERSION}.GenerativeService.{RPC}"


class NeedsGunicorn(RelayError):
    code, status = 501, "UNIMPLEMENTED"
    message = "Live sessions need relay to run under gunicorn's gevent worker (gunicorn -c gunicorn.conf.py app:app)."


class Upgraded(Response):
    """What a view returns once its WebSocket is over: nothing is left to send on the connection.

    gunicorn treats a StopIteration from the app as "close this connection" (the socket was the
    WebSocket's, so no HTTP response may follow); raised when the server calls the response.
    """

    def __call__(self, environ, start_response):
        raise StopIteration()


@bp.route(LIVE_PATH, websocket=True)
def live_session(version, rpc):
    if "gunicorn.socket" not in request.environ:
        raise NeedsGunicorn()
    session = LiveSession(current(), current_app.extensions["relay_live"], request, version, rpc, g.request_id)
    session.serve()
    return Upgraded()


@bp.get(LIVE_PATH)
def live_without_upgrade(version, rpc):
    raise InvalidArgument("This is the Live API: open it as a WebSocket (a GET with Upgrade: websocket).")


@bp.post(f"/{VERSION}/auth_tokens")
def create_auth_token(version):
    services, call = begin(version, "auth_tokens.create", resource="auth_tokens")
    raw = read_body()
    if not services.settings.managed:
        call.body = raw  # passthrough: Google mints the token, with the caller's own key
        return respond(forward(call, services))
    spec = constraints.token_request(parse_json(raw) if raw.strip() else {}, time.time())
    model = constraints.locked_model(spec)
    if model is not None:
        # The key must be allowed the model it locks its tokens to. A token without a model costs nothing
        # upstream: each session it opens is admitted (allowlist, RPM, caps) as the minting key's own.
        steps.resolve(services, call, "bidiGenerateContent", model)
        steps.admit(services, call)
    minting_key = hash_key(presented_key(request.headers, request.args))
    body = tokens.mint(services.store, minting_key, spec, time.time())
    call.status = 200
    return render_json(body), 200, JSON_HEADERS


def init_app(app):
    """Register the Live routes, the worker's session register and ``app.relay_close_live`` (for the worker's
    shutdown: ``app.relay_close_live(code=1001, reason=..., wait=2.0)`` closes every open session)."""
    registry = LiveSessions(app.extensions["relay"].store)
    app.extensions["relay_live"] = registry
    app.relay_close_live = registry.close_all
    app.extensions["relay"].at_shutdown(registry.release_all)
    app.register_blueprint(bp)
    app.register_blueprint(bp, url_prefix="/v1", name="live_v1_prefix")

