"""This package provides the pure translation between OpenAI's API shapes and Gemini's, for relay's OpenAI door.

``/v1/chat/completions``, ``/v1/embeddings`` and ``/v1/models`` are served by translating the OpenAI
request into a Gemini body, forwarding it like any native call, and translating Google's answer back.
Everything here is pure — no Flask, no requests, no I/O, no clock beyond ``time.time`` for ``created`` —
so the pipeline owns transport, retries, ownership and storage, and these modules own the shapes:

- :mod:`relay.openai.schemas` validates requests (errors name the OpenAI ``param``);
- :mod:`relay.openai.chat`, :mod:`relay.openai.messages` and :mod:`relay.openai.parts` turn a chat request into
  a Gemini body;
- :mod:`relay.openai.responses` turns a Gemini answer into a ``chat.completion``;
- :mod:`relay.openai.stream` turns streamed Gemini events into ``chat.completion.chunk`` SSE bytes;
- :mod:`relay.openai.errors` renders Google and relay errors the way OpenAI clients expect;
- :mod:`relay.openai.embeddings` and :mod:`relay.openai.models` cover the two other endpoints;
- :mod:`relay.openai.params` lists which parameters are mapped, ignored or rejected (the README table).
"""

from relay.openai.chat import ChatRequest, translate_request
from relay.openai.embeddings import EmbeddingsCall, to_embeddings_response, translate_embeddings
from relay.openai.errors import OpenAIError, from_google_error, from_relay_error
from relay.openai.messages import SIGNATURE_PLACEHOLDER, unsigned_tool_call_ids
from relay.openai.models import gemini_model_name, to_model, to_model_list
from relay.openai.responses import to_chat_completion
from relay.openai.stream import ChatStream

__all__ = [
    "SIGNATURE_PLACEHOLDER", "ChatRequest", "ChatStream", "EmbeddingsCall", "OpenAIError", "from_google_error",
    "from_relay_error", "gemini_model_name", "to_chat_completion", "to_embeddings_response", "to_model",
    "to_model_list", "translate_embeddings", "translate_request", "unsigned_tool_call_ids",
]
