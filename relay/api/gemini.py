"""This module provides the Gemini-native routes; each view reads top to bottom: parse, plan, forward.

Registered twice, at ``/`` and under a ``/v1`` prefix (``/v1/v1beta/models/...``), for clients whose base
URL already ends in ``/v1``.  Only these upstream paths can ever be called: the version, collection and
method come from fixed lists and model ids are checked against ``[A-Za-z0-9._-]``.
"""

import re

import orjson
from flask import Blueprint, request

from relay import ownership
from relay.api import batches, media, openai
from relay.errors import JSON_HEADERS, MethodNotAllowed, NotFound, bad_request, render_json
from relay.gemini.methods import MODEL_METHODS, generate_request, method_named
from relay.plugins import PluginContext
from relay.api.lifecycle import respond
from relay.pipeline.body import parse_json, pause_for_others, read_body
from relay.api.routing import COLLECTION, VERSION
from relay.pipeline.forward import forward
from relay.pipeline import steps
from relay.pipeline.request import begin, checked_id
from relay.settings import MODEL_ID
from relay.schemas import validate_body

bp = Blueprint("gemini", __name__)

CACHE_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")
# Model methods whose bodies (nested requests) and answers (a resource the caller now owns) relay reads
# beyond the steps every model method takes.
PREPARE_BODY = {"batchGenerateContent": batches.prepare_create, "asyncBatchEmbedContent": batches.prepare_create}
RECORD_ANSWER = {"batchGenerateContent": batches.record_created, "asyncBatchEmbedContent": batches.record_created,
                 "predictLongRunning": media.record_operation}


@bp.post(f"/{VERSION}/{COLLECTION}/<target>")
def model_action(version, collection, target):
    model, colon, method = target.rpartition(":")
    if not colon or method not in MODEL_METHODS:
        raise NotFound(f"Method {method or target!r} is not supported. Use one of {', '.join(MODEL_METHODS)}.")
    stream = None
    if method_named(method).streams:
        stream = "sse" if "sse" in (request.args.get("alt"), request.args.get("$alt")) else "array"
    services, call = begin(version, method, requested_model=model, stream=stream)
    checked_id(model, "model", MODEL_ID)
    raw = read_body()
    body = parse_json(raw)
    validate_body(method, body, extra_violations=body_model_violations(body, collection, model, method),
                  memory=services.validated, pause=pause_for_others)
    changed = drop_body_model(body, method)
    ctx = steps.resolve(services, call, method, model)
    ctx.raw_body = raw
    steps.admit(services, call)
    changed = retarget_body_models(body, collection, model, call.upstream_model, method) or changed
    extra = PREPARE_BODY.get(method)
    changed = steps.prepare(services, call, ctx, body, rewrite=extra and (
        lambda body: extra(services, ctx, body, collection, model, call.upstream_model))) or changed
    call.resource = f"{collection}/{call.upstream_model}:{method}"
    call.body = orjson.dumps(body) if changed else raw
    if method in RECORD_ANSWER:
        call.inspect = lambda call, answer: RECORD_ANSWER[method](services, call, answer)
    return respond(forward(call, services))


@bp.get(f"/{VERSION}/{COLLECTION}")
def list_models(version, collection):
    if openai.models_door() == "openai":
        return openai.list_models()
    services, call = begin(version, f"{collection}.list", resource=collection)
    if services.plugins.wants("list_models"):
        ctx = PluginContext(method=call.method)
        call.inspect = lambda call, body: rewrite_models(services, ctx, call, body)
    return respond(forward(call, services))


@bp.get(f"/{VERSION}/{COLLECTION}/<model>")
def get_model(version, collection, model):
    if openai.models_door() == "openai":
        return openai.retrieve_model(model)
    method = model.rpartition(":")[2]
    if method in MODEL_METHODS:
        raise MethodNotAllowed(f"Method GET is not allowed for {method}; it takes POST.", headers={"Allow": "POST"})
    model = checked_id(model, "model", MODEL_ID)
    services, call = begin(version, f"{collection}.get", requested_model=model)
    ctx = steps.resolve(services, call, call.method, model)
    call.resource = f"{collection}/{call.upstream_model}"
    if call.upstream_model != model:
        call.inspect = lambda call, body: rewrite_models(services, ctx, call, body)
    return respond(forward(call, services))


@bp.route(f"/{VERSION}/cachedContents", methods=["GET", "POST"])
def cached_contents(version):
    if request.method == "GET":
        services, call = begin(version, "cachedContents.list", resource="cachedContents")
        if services.settings.managed:
            return ownership.listing(services, call), 200, JSON_HEADERS
        return respond(forward(call, services))
    services, call = begin(version, "cachedContents.create", resource="cachedContents")
    raw = read_body()
    body = parse_json(raw)
    validate_body("cachedContents.create", body, memory=services.validated, pause=pause_for_others)
    model = str(body.get("model", "")).removeprefix("models/")
    ctx = steps.resolve(services, call, call.method, model)
    steps.admit(services, call)  # a cache costs tokens: the key's allowlist and request limits apply
    ownership.pin(services, call, services.plugins.pinned_resources(ctx, body))  # files it caches
    changed = call.upstream_model != model
    if changed:
        body["model"] = f"models/{call.upstream_model}"
    call.body = orjson.dumps(body) if changed else raw
    call.inspect = lambda call, body: ownership.record_owner(services, call, body)
    return respond(forward(call, services))


@bp.route(f"/{VERSION}/cachedContents/<cache_id>", methods=["GET", "PATCH", "DELETE"])
def cached_content(version, cache_id):
    cache_id = checked_id(cache_id, "name", CACHE_ID)
    action = {"GET": "get", "PATCH": "patch", "DELETE": "delete"}[request.method]
    services, call = begin(version, f"cachedContents.{action}", resource=f"cachedContents/{cache_id}")
    call.scratch["cache_name"] = f"cachedContents/{cache_id}"
    ownership.pin(services, call, [(ownership.CACHES, call.scratch["cache_name"])])
    if request.method == "PATCH":
        raw = read_body()
        parse_json(raw)
        call.body = raw
        call.inspect = lambda call, body: ownership.record_owner(services, call, body)
    elif request.method == "DELETE":
        call.inspect = lambda call, body: ownership.forget(services, call, body)
    return respond(forward(call, services))


# -- steps ----------------------------------------------------------------------------------------


def _same_model(value, collection, model):
    return isinstance(value, str) and value in (model, f"{collection}/{model}")


def body_model_violations(body, collection, model, method):
    """A body ``model`` must name the path's model (with or without its collection prefix)."""
    if method_named(method).body_model != "top" or "model" not in body or _same_model(body["model"], collection, model):
        return []
    return [("model", f"The body names model {str(body['model'])[:80]!r} but the URL names {collection}/{model}.")]


def drop_body_model(body, method):
    """Drop a (checked) body ``model``: the path carries the model.  True if the body changed."""
    if method_named(method).body_model != "top" or "model" not in body:
        return False
    del body["model"]
    return True


def retarget_body_models(body, collection, model, upstream_model, method):
    """Models that stay in the body (batch items, legacy countTokens) must name the path's model; rename them
    to the upstream model when a suffix or alias changed it.  True if the body changed."""
    changed = False
    if method_named(method).body_model == "items":
        violations = []
        for index, item in enumerate(body["requests"]):
            if not _same_model(item.get("model"), collection, model):
                violations.append((f"requests[{index}].model", f"Must be {collection}/{model}, as in the URL."))
            elif upstream_model != model:
                item["model"] = f"{collection}/{upstream_model}"
                changed = True
        if violations:
            raise bad_request(violations)
    else:
        inner = generate_request(method, body)
        if inner is not None and inner is not body and "model" in inner:
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
