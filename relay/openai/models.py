"""This module provides the translation of Gemini's models list and get answers into OpenAI's model objects.

OpenAI lists ``{"object": "list", "data": [{id, object, created, owned_by}]}`` in one page; Gemini pages
with ``nextPageToken``, so the pipeline collects every page and passes them all.  Ids lose the
``models/`` prefix; models that neither generate content nor embed are left out of the list, since no
OpenAI endpoint relay serves could call them.  Gemini publishes no creation time: ``created`` is 0 unless
the pipeline knows better.  Pure: no I/O.
"""

OWNED_BY = "google"
OPENAI_METHODS = ("generateContent", "embedContent", "batchEmbedContents")


def gemini_model_name(model_id):
    """``models/<id>`` for an OpenAI model id (which may already carry the prefix)."""
    return model_id if model_id.startswith("models/") else f"models/{model_id}"


def to_model(gemini_model, created=0):
    """The OpenAI model object for one Gemini model (a models.get answer or a list entry)."""
    return {"id": gemini_model.get("name", "").removeprefix("models/"), "object": "model", "created": created,
            "owned_by": OWNED_BY}


def to_model_list(pages, created=0):
    """The OpenAI models list for Gemini's list pages (each ``{"models": [...], "nextPageToken"?}``)."""
    return {"object": "list", "data": [
        to_model(model, created) for page in pages for model in page.get("models") or ()
        if isinstance(model, dict) and _serves_openai(model)
    ]}


def _serves_openai(model):
    methods = model.get("supportedGenerationMethods")
    return not isinstance(methods, list) or any(method in OPENAI_METHODS for method in methods)
