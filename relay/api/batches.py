"""This module provides the Batch API: batches created on a model route, then listed, read, cancelled, deleted.

``POST /{version}/models/{model}:batchGenerateContent`` and ``:asyncBatchEmbedContent`` are model routes
(relay.api.gemini): checked, the model resolved (aliases, thinking suffixes: the suffix's thinkingConfig goes
into every inlined request), the key's allowlist and limits applied, and an input file (or any file an
inlined request names) pinned to its key — it must be the caller's.  Here, the steps only batches have: the
inlined requests' models (:func:`prepare_create`), and recording the created batch as the caller's
(:func:`record_created`).  ``GET batches`` lists the caller's own, from the records (managed mode);
get, cancel and delete go to the batch's key.  Reading a finished batch accounts its usage once
(relay.clients.batch_usage) and records its results file as the caller's.
"""

import dataclasses

from flask import Blueprint, request

from relay import ownership
from relay.api.files import list_owned
from relay.api.lifecycle import respond
from relay.api.routing import VERSION
from relay.clients import batch_usage
from relay.errors import MethodNotAllowed, NotFound, bad_request
from relay.pipeline.body import read_body
from relay.pipeline.forward import forward
from relay.pipeline.request import begin
from relay.plugins.affinity import batch_requests

bp = Blueprint("batches", __name__)

BATCH_TTL = 7 * 24 * 3600.0  # kept a week after relay last saw the batch (they run up to 48 h)
ACTIONS = {("GET", ""): "get", ("POST", "cancel"): "cancel", ("DELETE", ""): "delete"}


@bp.get(f"/{VERSION}/batches")
def list_batches(version):
    return list_owned(version, "batches", "operations")


@bp.route(f"/{VERSION}/batches/<target>", methods=["GET", "POST", "DELETE"])
def batch(version, target):
    batch_id, _, verb = target.partition(":")
    action = ACTIONS.get((request.method, verb))
    if action is None:
        if (request.method, verb) in (("GET", "cancel"), ("DELETE", "cancel"), ("POST", "")):
            raise MethodNotAllowed(f"Method {request.method} is not allowed for this batch resource.")
        raise NotFound(f"Method {verb[:40]!r} is not supported on batches; use :cancel.")
    services, call = begin(version, f"batches.{action}", resource=f"batches/{target}")
    name = f"batches/{batch_id}"
    owner = ownership.pin_one(services, call, "batches", name)
    if action == "cancel":
        call.body = read_body()
    elif action == "get" and owner is not None:
        call.inspect = lambda call, body: seen(services, call, name, owner, body)
    elif action == "delete":
        call.inspect = lambda call, body: ownership.forget_resource(services, call, "batches", name)
    return respond(forward(call, services))


# -- creation (called from the model route) -----------------------------------------------------------------


def prepare_create(services, ctx, body, collection, model, upstream_model):
    """A batch's model (``batch.model``) and its inlined requests' must name the path's; they are renamed to the
    upstream model, and a thinking suffix's config goes into each inlined generate request.  True if changed."""
    changed, violations = False, []
    spec = body["batch"]
    named = [("batch.model", spec)] + [(f"batch.inputConfig.requests.requests[{index}].request.model", inner)
                                       for index, inner in enumerate(batch_requests(body))]
    for field, holder in named:
        if "model" not in holder:
            continue
        if holder["model"] not in (model, f"{collection}/{model}"):
            violations.append((field, f"Must be {collection}/{model}, as in the URL."))
        elif upstream_model != model:
            holder["model"] = f"{collection}/{upstream_model}"
            changed = True
    if violations:
        raise bad_request(violations)
    if ctx.method == "batchGenerateContent":
        inner_ctx = dataclasses.replace(ctx, method="generateContent")  # the same per-call scratch
        for inner in batch_requests(body):
            changed = services.plugins.rewrite_request(inner_ctx, inner) or changed
    return changed


def record_created(services, call, body):
    """``call.inspect`` of a batch create: the new batch (an Operation) is the caller's, under its key."""
    operation = ownership.parsed_object(body)
    if operation is not None:
        ownership.remember(services, call, "batches", _without_output(operation), default_ttl=BATCH_TTL,
                           extra={"method": call.method, "requested_model": call.requested_model,
                                  "upstream_model": call.upstream_model})


# -- reading a batch ----------------------------------------------------------------------------------------


def seen(services, call, name, owner, body):
    """``call.inspect`` of a batch get: refresh the record; once finished, account its usage and record its
    results file as the caller's (the answer is relayed unchanged)."""
    operation = ownership.parsed_object(body)
    if call.status != 200 or operation is None or operation.get("name") != name:
        return
    notes = {key: owner.get(key) for key in ("method", "requested_model", "upstream_model")}
    ownership.remember(services, call, "batches", _without_output(operation), default_ttl=BATCH_TTL, extra=notes)
    if not batch_usage.is_finished(operation):
        return
    output = batch_usage.output_of(operation)
    results_file = output.get("responsesFile")
    if isinstance(results_file, str):
        ownership.remember(services, call, "files", {"name": results_file, "source": "GENERATED"},
                           default_ttl=ownership.FILE_TTL, extra={**notes, "batch": name})
    else:
        batch_usage.account(services, call, name, owner, batch_usage.sum_usage(batch_usage.inline_usages(output)))


def _without_output(operation):
    """A batch Operation without its results (they can be large), for the record and the owner's listing."""
    copy = {key: value for key, value in operation.items() if key != "response"}
    if isinstance(copy.get("metadata"), dict):
        copy["metadata"] = {key: value for key, value in copy["metadata"].items() if key != "output"}
    return copy
