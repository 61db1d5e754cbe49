"""This module provides the translation of OpenAI embeddings requests into batchEmbedContents bodies and back.

Gemini embeds at most 100 texts per ``batchEmbedContents`` call, OpenAI accepts 2,048 per request: the
inputs are split into batches in order, the pipeline sends each, and :func:`to_embeddings_response` numbers
the embeddings across them.  ``encoding_format: base64`` (openai-python's default on the wire) is
little-endian float32, what the SDK decodes on every platform it runs on.  Pure: no I/O.
"""

import base64
import struct
from dataclasses import dataclass

from relay.errors import Internal
from relay.openai.models import gemini_model_name
from relay.openai.schemas import load_embeddings

BATCH_SIZE = 100  # Gemini: "at most 100 requests can be in one batch"


@dataclass
class EmbeddingsCall:
    """A translated embeddings request: one batchEmbedContents body per batch, in input order."""

    batches: list  # bodies for models/<model>:batchEmbedContents
    model: str  # the model the caller asked for; the response echoes it
    encoding_format: str  # float or base64
    count: int  # inputs in all batches


def translate_embeddings(request, *, upstream_model=None):
    """Validate and translate a parsed ``/v1/embeddings`` body; raise InvalidArgument naming the param.

    ``upstream_model`` is the Gemini model relay will call (defaults to the request's ``model``).
    """
    data = load_embeddings(request)
    model_name = gemini_model_name(upstream_model or data["model"])
    inputs = data["input"]
    options = {"outputDimensionality": data["dimensions"]} if data.get("dimensions") else {}
    requests = [{"model": model_name, "content": {"parts": [{"text": text}]}, **options} for text in inputs]
    batches = [{"requests": requests[start:start + BATCH_SIZE]} for start in range(0, len(requests), BATCH_SIZE)]
    return EmbeddingsCall(batches, data["model"], data.get("encoding_format") or "float", len(inputs))


def to_embeddings_response(call, responses):
    """The OpenAI embeddings list for the parsed batchEmbedContents ``responses``, one per batch, in order.

    Raises Internal when Gemini returned a different number of embeddings than inputs were sent: the
    indexes would pair vectors with the wrong texts.
    """
    data, prompt_tokens = [], 0
    for response in responses:
        for embedding in response.get("embeddings") or ():
            values = embedding.get("values") or []
            data.append({"object": "embedding", "index": len(data), "embedding": _encode(values, call.encoding_format)})
        prompt_tokens += (response.get("usageMetadata") or {}).get("promptTokenCount", 0)
    if len(data) != call.count:
        raise Internal(f"Gemini returned {len(data)} embeddings for {call.count} inputs.")
    return {"object": "list", "data": data, "model": call.model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def _encode(values, encoding_format):
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
    return values
