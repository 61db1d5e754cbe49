"""This module provides the table of Gemini methods relay relays, and what each one's body looks like.

One row per method answers the questions the views, plugins and forwarding used to answer with their own
``if method == …`` branches: does it take a body, can it stream, does the path carry a model, where does a
model named in the body sit, can it name a context cache, is the ``generateContent``-shaped request at the
top of the body or inside ``generateContentRequest`` (the legacy ``countTokens`` form), and does its answer
carry usage that relay accounts for.  Pure: no Flask, no I/O.
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
