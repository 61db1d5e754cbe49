"""This module provides the table of Gemini methods relay relays, and what each one's body looks like.

One row per method answers the questions the views, plugins and forwarding used to answer with their own
``if method == …`` branches: does it take a body, can it stream, does the path carry a model, where does a
model named in the body sit, can it name a context cache, is the ``generateContent``-shaped request at the
top of the body or inside ``generateContentRequest`` (the legacy ``countTokens`` form), and does its answer
carry usage that relay accounts for, which kind of owned upstream resource it creates or names
(relay.ownership), and whether it moves media (a streamed upload, or a download with ``alt=media``).  Pure:
no Flask, no I/O.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    takes_body: bool = True
    streams: bool = False
    on_model: bool = True  # POST .../models/{model}:{name}
    # Where a model named in the body sits: "top" (must be the path's model; dropped before forwarding),
    # "items" (each of requests[] names the path's model; kept).  A legacy countTokens request's inner
    # generateContentRequest.model (see generate_request) must name it too, and is kept.
    body_model: str | None = "top"
    names_cache: bool = False
    generate_request_in: str | None = None  # None: not a generateContent request; "": the body itself
    accounts_usage: bool = True
    resource_kind: str | None = None  # the owned resource it creates or names: files, uploads, batches, operations
    media: str | None = None  # "upload": uploadType/upload_protocol taken; "download": alt=media taken


def _on_resource(name, kind, takes_body=False, media=None):
    """A call on an owned resource: no model in the path, no usage in the answer."""
    return Method(name, takes_body=takes_body, on_model=False, body_model=None, accounts_usage=False,
                  resource_kind=kind, media=media)


METHODS = {
    method.name: method for method in (
        Method("generateContent", names_cache=True, generate_request_in=""),
        Method("streamGenerateContent", streams=True, names_cache=True, generate_request_in=""),
        # Legacy form: {"generateContentRequest": {...}}; the answer is a count, not usage to charge.
        Method("countTokens", names_cache=True, generate_request_in="generateContentRequest",
               accounts_usage=False),
        Method("embedContent"),
        Method("batchEmbedContents", body_model="items"),
        Method("models.list", takes_body=False, on_model=False, body_model=None, accounts_usage=False),
        Method("models.get", takes_body=False, on_model=False, body_model=None, accounts_usage=False),
        # A cache's answer carries its token count: charged once, when it is created, never when it is read.
        *(Method(f"cachedContents.{action}", takes_body=action == "patch", on_model=False, body_model=None,
                 accounts_usage=False) for action in ("list", "get", "patch", "delete")),
        # The Live API's setup message: its generationConfig sits at the top, as in generateContent.
        Method("bidiGenerateContent", on_model=False, body_model=None, generate_request_in=""),
        # Imagen's answer holds images, Veo's an operation: neither carries usageMetadata.
        Method("predict", body_model=None, accounts_usage=False),
        Method("predictLongRunning", body_model=None, accounts_usage=False, resource_kind="operations"),
        # A batch is charged once, when relay first sees it finished (relay.clients.batch_usage), never here.
        Method("batchGenerateContent", body_model=None, accounts_usage=False, resource_kind="batches"),
        Method("asyncBatchEmbedContent", body_model=None, accounts_usage=False, resource_kind="batches"),
        # files.upload starts a resumable upload or carries a whole multipart one; files.uploadChunk sends
        # the bytes of a resumable one (its session is relay's "uploads" record).
        _on_resource("files.upload", "files", takes_body=True, media="upload"),
        _on_resource("files.uploadChunk", "uploads", takes_body=True, media="upload"),
        _on_resource("files.download", "files", media="download"),
        *(_on_resource(f"files.{action}", "files") for action in ("list", "get", "delete")),
        *(_on_resource(f"batches.{action}", "batches") for action in ("list", "get", "cancel", "delete")),
        _on_resource("operations.get", "operations"),
    )
}
MODEL_METHODS = tuple(name for name, method in METHODS.items() if method.on_model)


def method_named(name):
    """The table row for ``name`` (e.g. ``generateContent``), or None for a method relay does not know."""
    return METHODS.get(name)


def accounts_usage(name):
    """Whether the answer to ``name`` carries usage to record (resource calls and token counts do not)."""
    method = METHODS.get(name)
    return method is None or method.accounts_usage


def generate_request(name, body):
    """The generateContent-shaped request inside a ``name`` body: the body itself, the legacy countTokens
    ``generateContentRequest`` (either spelling), or None when the method has none."""
    method = METHODS.get(name)
    if method is None or method.generate_request_in is None:
        return None
    if not method.generate_request_in:
        return body
    inner = body.get("generateContentRequest") or body.get("generate_content_request")
    return inner if isinstance(inner, dict) else None
