"""This module provides the Gemini-native routes; each view reads top to bottom: parse, plan, forward.

Registered twice, at ``/`` and under a ``/v1`` prefix (``/v1/v1beta/models/...``), for clients whose base
URL already ends in ``/v1``.  Only these upstream paths can ever be called: the version, collection and
method come from fixed lists and model ids are checked against ``[A-Za-z0-9._-]``.
"""

import re

import orjson
from flask import Blueprint, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from relay import ownership
from relay.clients.auth import presented_key
from relay.errors import MethodNotAllowed, NotFound, bad_request, render_json
from relay.plugins import PluginContext
from relay.pipeline.forward import FORWARD_REQUEST_HEADERS, Call, forward
from relay.schemas import validate_body
from relay.services import current

bp = Blueprint("gemini", __name__)

VERSION = "<any(v1beta, v1, v1alpha):version>"
COLLECTION = "<any(models, tunedModels):collection>"
# (header name, WSGI environ key): read straight from the environ, once per header, on every request.
FORWARD_ENVIRON_KEYS = tuple(
    (name, "CONTENT_TYPE" if name == "Content-Type" else "HTTP_" + name.upper().replace("-", "_"))
    for name in FORWARD_REQUEST_HEADERS
)
MODEL_METHODS = ("generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents")
MODEL_ID = re.compile(r"[A-Za-z0-9._-]{1,256}")
CACHE_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")


@bp.post(f"/{VERSION}/{COLLECTION}/<target>")
def model_action(version, collection, target):
    model, colon, method = target.rpartition(":")
    if not colon or method not in MODEL_METHODS:
        raise NotFound(f"Method {method or target!r} is not supported. Use one of {', '.join(MODEL_METHODS)}.")
    stream = None
    if method == "streamGenerateContent":
        stream = "sse" if "sse" in (request.args.get("alt"), request.args.get("$alt")) else "array"
    services, call = begin(version, method, requested_model=model, stream=stream)
    checked_id(model, "model", MODEL_ID)
    raw = read_body()
    body = parse_json(raw)
    validate_body(method, body, extra_violations=body_model_violations(body, collection, model, method))
    changed = drop_body_model(body, method)
    ctx = PluginContext(method=method, requested_model=model)
    call.upstream_model = ctx.upstream_model = services.plugins.resolve_model(ctx, model)
    services.limits.admit(call)
    changed = retarget_body_models(body, collection, model, call.upstream_model, method) or changed
    changed = services.plugins.rewrite_request(ctx, body) or changed
    cache_name = services.plugins.pinned_cache(ctx, body)
    if cache_name:
        ownership.pin_to_owner(services, call, cache_name)
    call.read_timeout = services.plugins.read_timeout(ctx)
    call.resource = f"{collection}/{call.upstream_model}:{method}"
    call.body = orjson.dumps(body) if changed else raw
    return forward(call, services)


@bp.get(f"/{VERSION}/{COLLECTION}")
def list_models(version, collection):
    services, call = begin(version, f"{collection}.list", resource=collection)
    if services.plugins.wants("list_models"):
        ctx = PluginContext(method=call.method)
        call.inspect = lambda call, body: rewrite_models(services, ctx, call, body)
    return forward(call, services)


@bp.get(f"/{VERSION}/{COLLECTION}/<model>")
def get_model(version, collection, model):
    method = model.rpartition(":")[2]
    if method in MODEL_METHODS:
        raise MethodNotAllowed(f"Method GET is not allowed for {method}; it takes POST.", headers={"Allow": "POST"})
    model = checked_id(model, "model", MODEL_ID)
    services, call = begin(version, f"{collection}.get", requested_model=model)
    ctx = PluginContext(method=call.method, requested_model=model)
    call.upstream_model = ctx.upstream_model = services.plugins.resolve_model(ctx, model)
    call.resource = f"{collection}/{call.upstream_model}"
    if call.upstream_model != model:
        call.inspect = lambda call, body: rewrite_models(services, ctx, call, body)
    return forward(call, services)


@bp.route(f"/{VERSION}/cachedContents", methods=["GET", "POST"])
def cached_contents(version):
    if request.method == "GET":
        services, call = begin(version, "cachedContents.list", resource="cachedContents")
        if services.settings.managed:
            return ownership.listing(services, call), 200, {"Content-Type": "application/json; charset=UTF-8"}
        return forward(call, services)
    services, call = begin(version, "cachedContents.create", resource="cachedContents")
    raw = read_body()
    body = parse_json(raw)
    validate_body("cachedContents.create", body)
    model = str(body.get("model", "")).removeprefix("models/")
    ctx = PluginContext(method=call.method, requested_model=model)
    call.requested_model = model
    call.upstream_model = ctx.upstream_model = services.plugins.resolve_model(ctx, model)
    services.limits.admit(call)  # a cache costs tokens: the key's allowlist and request limits apply
    changed = call.upstream_model != model
    if changed:
        body["model"] = f"models/{call.upstream_model}"
    call.body = orjson.dumps(body) if changed else raw
    call.inspect = lambda call, body: ownership.record_owner(services, call, body)
    return forward(call, services)


@bp.route(f"/{VERSION}/cachedContents/<cache_id>", methods=["GET", "PATCH", "DELETE"])
def cached_content(version, cache_id):
    cache_id = checked_id(cache_id, "name", CACHE_ID)
    action = {"GET": "get", "PATCH": "patch", "DELETE": "delete"}[request.method]
    services, call = begin(version, f"cachedContents.{action}", resource=f"cachedContents/{cache_id}")
    call.scratch["cache_name"] = f"cachedContents/{cache_id}"
    ownership.pin_to_owner(services, call, call.scratch["cache_name"])
    if request.method == "PATCH":
        raw = read_body()
        parse_json(raw)
        call.body = raw
        call.inspect = lambda call, body: ownership.record_owner(services, call, body)
    elif request.method == "DELETE":
        call.inspect = lambda call, body: ownership.forget(services, call, body)
    return forward(call, services)


# -- steps ----------------------------------------------------------------------------------------


def begin(version, method, requested_model=None, resource="", stream=None):
    """Start the Call every view fills in (the access log reads it too) and authenticate the caller."""
    services = current()
    headers = forwarded_headers(request.environ)
    query = [(name, value) for name, value in request.args.items(multi=True) if name != "key"]
    call = Call(
        request_id=g.request_id, http_method=request.method, version=version, route=request.url_rule.rule,
        resource=resource, method=method, query=query, headers=headers, requested_model=requested_model, stream=stream,
        client_socket=request.environ.get("gunicorn.socket"),
    )
    g.call = call
    call.client = services.auth.authenticate(presented_key(request.headers, request.args))
    return services, call


def forwarded_headers(environ):
    """The caller's headers worth passing on, trimmed; a value HTTP cannot carry on is dropped, not fatal."""
    headers = {}
    for name, key in FORWARD_ENVIRON_KEYS:
        value = environ.get(key)
        if value is not None:
            value = value.strip()  # also U+00A0 / U+0085, which requests refuses at the start of a value
            if value and value.isprintable():
                headers[name] = value
    return headers


def checked_id(value, field, pattern):
    if not pattern.fullmatch(value) or ".." in value or not value.strip("."):
        raise bad_request([(field, f"{value[:80]!r} is not a valid resource id (letters, digits, '.', '_', '-').")])
    return value


def read_body():
    mimetype = request.mimetype
    if request.content_type and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise bad_request([("Content-Type", f"Expected application/json, got {mimetype!r}.")])
    body = request.get_data(cache=False)
    if request.content_length is None and len(body) >= current().settings.max_body_bytes and request.stream.read(1):
        # A chunked body has no length to check up front: werkzeug stops reading at the limit, so a byte
        # beyond it means the body was too large (not a truncated, "invalid" JSON document).
        raise RequestEntityTooLarge()  # rendered by lifecycle.HTTP_ERRORS, like werkzeug's own 413
    return body


def parse_json(raw):
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request([("body", f"Invalid JSON payload received. {exc.msg}.")]) from None
    if not isinstance(body, dict):
        raise bad_request([("body", "Invalid JSON payload received. Expected a JSON object.")])
    return body


def _same_model(value, collection, model):
    return isinstance(value, str) and value in (model, f"{collection}/{model}")


def body_model_violations(body, collection, model, method):
    """A body ``model`` must name the path's model (with or without its collection prefix)."""
    if method == "batchEmbedContents" or "model" not in body or _same_model(body["model"], collection, model):
        return []
    return [("model", f"The body names model {str(body['model'])[:80]!r} but the URL names {collection}/{model}.")]


def drop_body_model(body, method):
    """Drop a (checked) body ``model``: the path carries the model.  True if the body changed."""
    if method == "batchEmbedContents" or "model" not in body:
        return False
    del body["model"]
    return True


def retarget_body_models(body, collection, model, upstream_model, method):
    """Models that stay in the body (batch items, legacy countTokens) must name the path's model; rename them
    to the upstream model when a suffix or alias changed it.  True if the body changed."""
    changed = False
    if method == "batchEmbedContents":
        violations = []
        for index, item in enumerate(body["requests"]):
            if not _same_model(item.get("model"), collection, model):
                violations.append((f"requests[{index}].model", f"Must be {collection}/{model}, as in the URL."))
            elif upstream_model != model:
                item["model"] = f"{collection}/{upstream_model}"
                changed = True
        if violations:
            raise bad_request(violations)
    elif method == "countTokens":
        inner = body.get("generateContentRequest") or body.get("generate_content_request")
        if isinstance(inner, dict) and "model" in inner:
            if not _same_model(inner["model"], collection, model):
                raise bad_request([("generateContentRequest.model", f"Must be {collection}/{model}, as in the URL.")])
            if upstream_model != model:
                inner["model"] = f"{collection}/{upstream_model}"
                changed = True
    return changed


def rewrite_models(services, ctx, call, body):
    """Let plugins adjust a models.list/get answer (e.g. list thinking variants); None keeps the bytes."""
    if call.status != 200:
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or not services.plugins.list_models(ctx, parsed):
        return None
    return render_json(parsed)
