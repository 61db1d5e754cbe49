"""This module provides the OpenAI-compatible front door: chat completions, embeddings and models, over Gemini.

Served at ``/v1/...`` (OpenAI's base URL) and ``/v1beta/openai/...`` (Google's own compatibility layer's).
Each view reads top to bottom like the Gemini door's and meets it in :mod:`relay.pipeline`: the same
Call, authentication, body reading, model resolution through the plugins, limits, cache pinning and
forwarding with failover — only the body is translated on the way in (:mod:`relay.openai`) and the
answer on the way out (:mod:`relay.pipeline.openai_encoders`).  ``GET /v1/models[/{model}]`` is also
Gemini's route: :func:`models_door` decides which door answers it, for relay.api.gemini too.
"""


import orjson
from flask import Blueprint, Response, g, request

from relay.api.lifecycle import respond
from relay.errors import bad_request
from relay.openai import (
    to_embeddings_response, to_model, to_model_list, translate_embeddings, translate_request, unsigned_tool_call_ids,
)
from relay.pipeline import steps
from relay.pipeline.body import parse_json, read_body
from relay.pipeline.forward import forward
from relay.pipeline.openai_encoders import OPENAI_ANSWERS, OPENAI_ERRORS, ChatEncoder
from relay.pipeline.request import begin, checked_id
from relay.pipeline.signatures import SignatureMemory
from relay.plugins import PluginContext
from relay.settings import MODEL_ID

bp = Blueprint("openai", __name__)

UPSTREAM_VERSION = "v1beta"  # what Google's own compatibility layer calls: every model and feature
PAGE_SIZE = "1000"
MAX_PAGES = 20  # 20,000 models: a listing that pages on past it is not Google's
# Paths that are OpenAI's whatever the caller sent, so even a 404 or 405 there is OpenAI-shaped.
OPENAI_PATHS = ("/v1beta/openai/", "/v1/chat/", "/v1/embeddings", "/v1/completions", "/v1/responses")
GEMINI_SIGNALS = ("X-Goog-Api-Key", "X-Goog-Api-Client")


def models_door():
    """Which door answers ``GET /v1/models[/{model}]``, a route both doors have: "gemini" when the caller sent
    what only Gemini clients send (an x-goog-api-key or x-goog-api-client header, or ``?key=``), else
    "openai".  Every other path's door is fixed (``/v1beta/models`` is Gemini's alone)."""
    path = request.path
    if path != "/v1/models" and not path.startswith("/v1/models/"):
        return "gemini"
    if any(request.headers.get(name) for name in GEMINI_SIGNALS) or "key" in request.args:
        return "gemini"
    return "openai"


@bp.before_app_request
def answer_in_openai_shape():
    """Errors on the door's paths are OpenAI's, from the first one (a bad key, an unknown path, a 405)."""
    path = request.path
    if path.startswith(OPENAI_PATHS) or models_door() == "openai":
        g.encoder = OPENAI_ERRORS


@bp.post("/v1/chat/completions")
@bp.post("/v1beta/openai/chat/completions")
def chat_completions():
    services, call = begin(UPSTREAM_VERSION, "generateContent")
    body = parse_json(read_body())
    model = requested_model(body)
    ctx = steps.resolve(services, call, call.method, model)
    memory = SignatureMemory(services.store, call.client)
    known = memory.recall(unsigned_tool_call_ids(body.get("messages")))
    chat = translate_request(body, upstream_model=call.upstream_model, lookup_signature=known.get)
    ctx.method = call.method = chat.method
    steps.admit(services, call)
    steps.prepare(services, call, ctx, chat.body)
    call.stream, call.query = ("sse", [("alt", "sse")]) if chat.stream else (None, [])
    call.resource = f"models/{call.upstream_model}:{chat.method}"
    call.body = orjson.dumps(chat.body)
    call.encoder = ChatEncoder(chat, memory)
    return respond(forward(call, services))


@bp.post("/v1/embeddings")
@bp.post("/v1beta/openai/embeddings")
def embeddings():
    services, call = begin(UPSTREAM_VERSION, "batchEmbedContents")
    call.encoder = OPENAI_ANSWERS
    body = parse_json(read_body())
    model = requested_model(body)
    ctx = steps.resolve(services, call, call.method, model)
    embeddings_call = translate_embeddings(body, upstream_model=call.upstream_model)
    steps.admit(services, call)
    call.query, call.resource = [], f"models/{call.upstream_model}:batchEmbedContents"
    answers, failed = steps.forward_each(services, call, ctx, embeddings_call.batches)
    if failed is not None:
        return respond(failed)
    return json_response(to_embeddings_response(embeddings_call, answers))


@bp.get("/v1beta/openai/models")
def list_models():
    services, call = begin(UPSTREAM_VERSION, "models.list", resource="models")
    call.encoder = OPENAI_ANSWERS
    pages, failed = steps.forward_pages(services, call, [("pageSize", PAGE_SIZE)], MAX_PAGES)
    if failed is not None:
        return respond(failed)
    ctx = PluginContext(method=call.method)
    for page in pages:
        services.plugins.list_models(ctx, page)  # the thinking variants, when RELAY_THINKING_VARIANTS is on
    return json_response(to_model_list(pages))


@bp.get("/v1beta/openai/models/<model>")
def retrieve_model(model):
    model = checked_id(model.removeprefix("models/"), "model", MODEL_ID)
    services, call = begin(UPSTREAM_VERSION, "models.get", requested_model=model)
    call.encoder = OPENAI_ANSWERS
    ctx = steps.resolve(services, call, call.method, model)
    call.query, call.resource = [], f"models/{call.upstream_model}"
    reply = forward(call, services)
    if reply.status >= 400:
        return respond(reply)
    answer = steps.parsed_answer(reply.body)
    if call.upstream_model != model:
        services.plugins.list_models(ctx, answer)
    return json_response(dict(to_model(answer), id=model))


def requested_model(body):
    """The body's ``model`` as a Gemini model id (``models/`` prefix dropped), checked before any plugin sees it."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request([("model", "Missing model: name a Gemini model, e.g. gemini-2.5-flash.")])
    return checked_id(model.removeprefix("models/"), "model", MODEL_ID)


def json_response(document):
    return Response(orjson.dumps(document), status=200, content_type="application/json")
