"""This module provides the steps both front doors share between reading a body and forwarding it.

A view of either door reads top to bottom: :func:`relay.pipeline.request.begin` (the Call, who is
calling), :func:`relay.pipeline.body.read_body` and ``parse_json``, then these steps — :func:`resolve`
the model through the plugins (thinking suffixes, aliases), :func:`admit` the call against its key's
allowlist and limits, :func:`prepare` the Gemini body (plugins' rewrites, the pinned cache's key, the
read timeout) — and :func:`relay.pipeline.forward.forward`.  The Gemini door runs them on the caller's
body, the OpenAI door on the body it translated, so suffixes, aliases, limits, cache pinning and usage
behave the same whichever door a call came through.
"""

import orjson

from relay import ownership
from relay.errors import Unavailable
from relay.pipeline.forward import forward
from relay.plugins import PluginContext


def resolve(services, call, method, model):
    """The plugins' upstream model for ``model`` (suffixes stripped, aliases followed), set on the call;
    returns the PluginContext the later steps share."""
    ctx = PluginContext(method=method, requested_model=model)
    call.requested_model = model
    call.upstream_model = ctx.upstream_model = services.plugins.resolve_model(ctx, model)
    return ctx


def admit(services, call):
    """Refuse the call (403 allowlist, 429 limits) if its client key may not make it now; count it otherwise."""
    services.limits.admit(call)


def prepare(services, call, ctx, body, rewrite=None):
    """Let the plugins rewrite the Gemini ``body`` (in place), then the view's own ``rewrite(body)`` if any (a
    batch carries the plugins' changes into each of its requests), pin the call to the upstream key that owns
    the resources it names (caches, files), and take the plugins' read timeout.  True if the body changed.

    Pinning checks ownership: in managed mode a resource another client created answers 403, resources on
    different keys 400 FAILED_PRECONDITION.
    """
    changed = services.plugins.rewrite_request(ctx, body)
    if rewrite is not None:
        changed = rewrite(body) or changed
    ownership.pin(services, call, services.plugins.pinned_resources(ctx, body))
    call.read_timeout = services.plugins.read_timeout(ctx)
    return changed


# -- one request, several upstream calls (the OpenAI door's embeddings and model list) -------------------


def forward_each(services, call, ctx, bodies):
    """Forward ``bodies`` one after the other as parts of one call (each prepared, each with failover):
    ``(parsed answers, None)`` with the usage summed on the call, or ``(None, the first error Reply)``."""
    answers, usage = [], {}
    for body in bodies:
        prepare(services, call, ctx, body)
        call.body = orjson.dumps(body)
        reply = forward(call, services)
        if reply.status >= 400:
            return None, reply
        answers.append(parsed_answer(reply.body))
        for name, count in (call.usage or {}).items():
            if isinstance(count, int) and not isinstance(count, bool):
                usage[name] = usage.get(name, 0) + count
    call.usage = usage or None
    return answers, None


def forward_pages(services, call, query, max_pages):
    """Forward a listing and follow its ``nextPageToken`` (at most ``max_pages`` pages):
    ``(parsed pages, None)`` or ``(None, the first error Reply)``."""
    pages = []
    call.query = list(query)
    while True:
        reply = forward(call, services)
        if reply.status >= 400:
            return None, reply
        page = parsed_answer(reply.body)
        pages.append(page)
        token = page.get("nextPageToken")
        if not isinstance(token, str) or not token or len(pages) >= max_pages:
            return pages, None
        call.query = [*query, ("pageToken", token)]


def parsed_answer(body):
    """A complete Google answer (bytes) as a dict; a cut or garbled one is the upstream's failure (503)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise Unavailable("The upstream sent an answer that is not a JSON object.")
    return parsed
