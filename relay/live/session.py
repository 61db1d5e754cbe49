"""This module provides one Live session, from the caller's upgrade to the last close.

The steps, top to bottom in :meth:`LiveSession.serve`: authenticate (a client key, or an ephemeral token on
``…Constrained``), read the first message (``setup``), apply the token's locks, resolve the model through
the plugins (suffixes, aliases), admit it (allowlist, RPM, the key's Live-session cap), open the upstream
with failover (:mod:`relay.live.upstream`), then relay.  Anything refused before the upstream is dialled
closes the caller with a clear code and reason, and nothing is sent upstream.

Relaying is two greenlets, one per direction, each moving whole messages as they arrive, text as text and
binary as binary.  The first side to end decides how the session ends: an upstream close reaches the
caller with its code and reason; a caller that leaves has the upstream closed at once.  The usage row and
the access-log line are written when it is over.
"""

import logging
import time
from dataclasses import dataclass

import gevent
import orjson
from gevent.event import AsyncResult, Event

from relay.clients.auth import Client, presented_key
from relay.errors import RelayError
from relay.live import observe, tokens
from relay.live.client_socket import ClientClosed, ClientSocket
from relay.live.observe import TO_CLIENT, TO_UPSTREAM, Traffic
from relay.live.protocol import (
    ABNORMAL, GOING_AWAY, INTERNAL, NO_STATUS, NORMAL, POLICY, TRY_AGAIN_LATER, LiveRefusal, UsageTotals,
    parse_close, parse_setup, refusal_for, requested_model, sendable, status_for_close, usage_in,
)
from relay.live.registry import SHUTDOWN_REASON
from relay.live.upstream import PING_SECONDS, UpstreamLost, connect
from relay.pipeline import steps
from relay.pipeline.forward import Call

log = logging.getLogger("relay.live")

FIRST_MESSAGE_SECONDS = 30.0
UNAUTHENTICATED_WAIT_SECONDS = 5.0
CLOSE_WAIT_SECONDS = 1.0  # how long a closed side may take to answer the close before its socket is cut
ABORTED = {"client_lost": "client", "upstream_lost": "upstream", "shutdown": "shutdown"}


@dataclass(frozen=True)
class Ending:
    """How a session ended: ``end`` (who ended it, see observe.ENDS), and the close code and reason."""

    end: str
    code: int
    reason: str


class LiveSession:
    def __init__(self, services, registry, request, version, rpc, request_id):
        self.id = request_id
        self.services = services
        self.registry = registry
        self.environ, self.headers, self.args = request.environ, request.headers, request.args
        self.constrained = rpc.endswith("Constrained")
        self.route = f"/ws/google.ai.generativelanguage.{{version}}.GenerativeService.{rpc}"
        self.call = Call(request_id=request_id, http_method="GET", version=version, route=self.route,
                         resource=f"ws/{rpc}", method="bidiGenerateContent", query=[], headers={}, stream="live")
        self.started = time.perf_counter()
        self.usage = UsageTotals()
        self.traffic = Traffic()
        self.grant = None
        self.established = False
        self.ending = None
        self.client_ws = self.upstream = None
        self._ended = AsyncResult()
        self._pumps = self._timers = ()
        self.done = Event()

    def serve(self):
        """Run the session on the caller's (upgraded) connection until both sides are closed."""
        self.client_ws = ClientSocket(self.environ)
        self.registry.add(self)
        observe.session_opened()
        try:
            self._run()
        except LiveRefusal as refusal:
            self._refuse(refusal)
        except ClientClosed as closed:
            self._end("client", closed.code, closed.reason)
            self._close(self._ended.get())
        except gevent.GreenletExit:
            self.stop(GOING_AWAY, SHUTDOWN_REASON)
            self._close(self._ended.get())
            raise
        except Exception:  # noqa: BLE001 - a bug: logged with its traceback, the caller told, usage still written
            log.exception("Live session %s failed", self.id)
            self._refuse(LiveRefusal(INTERNAL, f"INTERNAL: internal error; request id {self.id}.", 500))
        finally:
            self._finish()

    def stop(self, code, reason):
        """End the session from outside (the worker is shutting down): the caller gets ``code``."""
        self._end("shutdown", code, reason)
        if not self.established and self.client_ws is not None:
            self.client_ws.close(code, reason, wait=0)

    # -- establishing ------------------------------------------------------------------------------

    def _run(self):
        try:
            self._authenticate()
        except LiveRefusal:
            # Refused as the answer to its setup, as Google refuses a bad key: a client that sends setup
            # right after the upgrade then reads the close, never a write onto a closed socket.
            self.client_ws.receive(timeout=UNAUTHENTICATED_WAIT_SECONDS)
            raise
        setup = parse_setup(self._first_message(FIRST_MESSAGE_SECONDS))
        if self.grant is not None:
            setup = tokens.spend(self.services.store, self.grant, setup, time.time())
        self._resolve(setup)
        self._admit()
        self._relay(connect(self, orjson.dumps({"setup": setup}).decode()))

    def _authenticate(self):
        auth = self.services.auth
        token = tokens.presented_token(self.headers, self.args) if self.constrained else None
        if token is not None:
            if not self.services.settings.managed:
                # Passthrough: a token Google minted for the caller's own key, passed on for Google to check.
                self.call.client = Client(name=f"passthrough:…{token[-4:]}", kind="passthrough",
                                          passthrough_key=token)
                return
            self.grant = tokens.look_up(self.services.store, auth, token, time.time())
            self.call.client = self.grant.client
            return
        key = presented_key(self.headers, self.args)
        if key is not None and key.startswith(tokens.TOKEN_PREFIX):
            raise LiveRefusal(POLICY, "UNAUTHENTICATED: ephemeral tokens work only on "
                                      "BidiGenerateContentConstrained (API version v1alpha).", 401)
        try:
            self.call.client = auth.authenticate(key)
        except RelayError as error:
            raise refusal_for(error) from None

    def _first_message(self, timeout):
        message = self.client_ws.receive(timeout=timeout)
        if message is None:
            raise LiveRefusal(POLICY, f"INVALID_ARGUMENT: no setup message within {timeout:.0f} s.", 408)
        return message

    def _resolve(self, setup):
        """Resolve setup.model as REST routes resolve theirs (suffixes, aliases) and let plugins set its config."""
        model = requested_model(setup)
        ctx = steps.resolve(self.services, self.call, "bidiGenerateContent", model)
        self.services.plugins.rewrite_request(ctx, setup)
        setup["model"] = f"models/{self.call.upstream_model}"

    def _admit(self):
        client = self.call.client
        if not self.registry.acquire(client, self.id):
            raise LiveRefusal(TRY_AGAIN_LATER, f"RESOURCE_EXHAUSTED: this relay key has {client.live_sessions} "
                                               "Live sessions open, its limit; close one first.", 429)
        try:
            steps.admit(self.services, self.call)
        except RelayError as error:
            self.registry.release(self.id)
            raise refusal_for(error) from None

    # -- relaying ----------------------------------------------------------------------------------

    def _relay(self, established):
        self.upstream = established.socket
        self.established = True
        self._to_client(established.kind, established.data)
        if not self._ended.ready():
            self._pumps = (gevent.spawn(self._pump_client), gevent.spawn(self._pump_upstream))
        timers = [gevent.spawn(self._keep_alive)]
        if self.grant is not None:  # a token's session ends with the token (Google's rule for its own)
            timers.append(gevent.spawn_later(max(0.0, self.grant.spec.expire_time - time.time()), self._end,
                                             "expired", POLICY, "UNAUTHENTICATED: the token has expired."))
        self._timers = tuple(timers)
        self._close(self._ended.get())

    def _keep_alive(self):
        while not self._ended.ready():
            gevent.sleep(PING_SECONDS)
            self.upstream.ping()

    def _pump_client(self):
        """Caller → upstream, message by message, in the order they arrive."""
        try:
            while True:
                message = self.client_ws.receive()
                size = self.upstream.send(message)
                self.traffic.count(TO_UPSTREAM, "text" if isinstance(message, str) else "binary", size)
        except ClientClosed as closed:
            lost = closed.code in (NO_STATUS, ABNORMAL) and not closed.reason
            self._end("client_lost" if lost else "client", closed.code, closed.reason)
        except UpstreamLost:
            self._end("upstream_lost", INTERNAL, "UNAVAILABLE: the upstream connection was lost.")

    def _pump_upstream(self):
        """Upstream → caller, message by message; the upstream's close ends the session."""
        try:
            while True:
                kind, data = self.upstream.receive()
                if kind == "close":
                    code, reason = parse_close(data)
                    return self._end("upstream", NORMAL if code == NO_STATUS else code, reason)
                self._to_client(kind, data)
        except UpstreamLost:
            self._end("upstream_lost", INTERNAL, "UNAVAILABLE: the upstream connection was lost.")
        except ClientClosed as closed:
            self._end("client_lost", closed.code, closed.reason)

    def _to_client(self, kind, data):
        usage = usage_in(data)
        if usage is not None:
            self.usage.add(usage)
        self.client_ws.send(data.decode(errors="replace") if kind == "text" else data)
        self.traffic.count(TO_CLIENT, kind, len(data))

    def _end(self, end, code, reason):
        """Record the first ending; later ones (the other side answering the close) change nothing."""
        if not self._ended.ready():
            self._ended.set(Ending(end, code, reason))

    def _close(self, ending):
        """Close what is still open after ``ending``: the caller gets the upstream's code (or relay's own), the
        upstream the caller's (or 1001); each side gets CLOSE_WAIT_SECONDS to answer."""
        self.ending = ending
        if ending.end not in ("client", "client_lost"):
            self.client_ws.close(sendable(ending.code), ending.reason, wait=CLOSE_WAIT_SECONDS)
        if self.upstream is not None and ending.end not in ("upstream", "upstream_lost"):
            self.upstream.close(ending.code if ending.end == "client" else GOING_AWAY, ending.reason)
            if self._pumps:
                self._pumps[1].join(CLOSE_WAIT_SECONDS)
        if self.upstream is not None:
            self.upstream.shutdown()
        gevent.killall([*self._pumps, *self._timers], timeout=CLOSE_WAIT_SECONDS)

    def _refuse(self, refusal):
        self.call.status = refusal.status
        self.ending = Ending("refused", refusal.code, refusal.reason)
        self.client_ws.close(refusal.code, refusal.reason, wait=CLOSE_WAIT_SECONDS)

    # -- the end -----------------------------------------------------------------------------------

    def _finish(self):
        """Release the lease, write the usage row and the access-log line; the session is over."""
        self.registry.discard(self)
        if self.upstream is not None:
            self.upstream.shutdown()
        if self.ending is None and self._ended.ready():
            self.ending = self._ended.get()
        ending = self.ending or Ending("error", INTERNAL, "")
        call = self.call
        if call.status is None:
            call.status = status_for_close(ending.code) if ending.end in ("upstream", "upstream_lost") else 200
        call.usage = self.usage.as_usage_metadata()
        call.aborted = ABORTED.get(ending.end)
        call.latency_ms = (time.perf_counter() - self.started) * 1000
        self.services.finished(call)
        observe.write_access_line(self)
        observe.session_closed(ending.end)
        self.done.set()
