"""This module provides the OpenAI door's encoders: Google's units in, OpenAI's chat completions, chunks and errors out.

Forwarding reads Google's answer as for any native call (usage included) and asks the call's encoder what
the caller gets (see :mod:`relay.pipeline.encoders`).  :class:`OpenAIErrors` renders relay's and Google's
errors the way OpenAI clients read them; :class:`OpenAIAnswers` hands complete Google answers to the
view that translates them (embeddings, models); :class:`ChatEncoder` translates a chat call — its unary
body, or its stream event by event — and remembers the thought signatures it returned once the answer
is complete (the unary body built; for a stream the event that finishes it, or its end), never per event.
No Flask here: the pure translation is :mod:`relay.openai`, storage :mod:`relay.pipeline.signatures`.
"""

import orjson

from relay.gemini import framing
from relay.openai import ChatStream, from_google_error, from_relay_error, to_chat_completion
from relay.pipeline.steps import parsed_answer

JSON = "application/json"


class OpenAIErrors:
    """Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with OpenAI's statuses.

    One instance serves the door's requests before a call exists (``g.encoder``); the encoders below
    inherit it.  Units are never translated here: this encoder is only ever asked to render errors.
    """

    door = "openai"
    translates_units = False

    def render_error(self, call, error):
        """(status, content type, body) for a RelayError; its Retry-After also goes out as retry-after-ms."""
        openai_error = from_relay_error(error)
        error.headers.update(openai_error.headers())  # lifecycle.render_error sends error.headers
        return openai_error.status, JSON, openai_error.to_json()

    def upstream_error(self, call, status, headers, body):
        """Google's error, translated: its status mapped (an invalid key is 401), RetryInfo as Retry-After."""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        openai_error = from_google_error(parsed, status)
        kept = [(name, value) for name, value in headers
                if name.lower() not in ("content-type", "retry-after", "retry-after-ms")]
        kept += [("Content-Type", JSON), *openai_error.headers().items()]
        call.status = openai_error.status
        return openai_error.status, kept, openai_error.to_json()


class OpenAIAnswers(OpenAIErrors):
    """Hands the view Google's complete answer (never a streamed relay), errors in OpenAI's shape."""

    translates_units = True  # forwarding then reads the whole answer, however large

    def unary(self, call, body):
        return body


class ChatEncoder(OpenAIErrors):
    """One chat call: a ``chat.completion`` for a unary answer, ``chat.completion.chunk`` events for a stream."""

    translates_units = True

    def __init__(self, chat, memory):
        self.model = chat.model  # the model the caller asked for: the answer echoes it
        self.chat_stream = ChatStream(chat.model, chat.include_usage) if chat.stream else None
        self.memory = memory

    def unary(self, call, body):
        completion, signatures = to_chat_completion(parsed_answer(body), self.model)
        self.memory.remember(signatures)
        return orjson.dumps(completion)

    def unit(self, call, payload):
        if not payload:
            return b""
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise framing.FramingError("an SSE event is not JSON") from None
        if not isinstance(event, dict):
            raise framing.FramingError("an SSE event is not a JSON object")
        usage = event.get("usageMetadata")
        if isinstance(usage, dict):
            call.usage = usage  # what framing.find_usage would have read, without parsing the event again
        translated = self.chat_stream.translate(event)
        if _finishes(event):
            self.memory.remember(self.chat_stream.pop_signatures())  # before the client sees finish_reason
        return translated

    def stream_error(self, call, error, splitter):
        self.memory.remember(self.chat_stream.pop_signatures())
        return self.chat_stream.error(from_relay_error(error)) + self.chat_stream.finish()

    def stream_end(self, call):
        self.memory.remember(self.chat_stream.pop_signatures())
        return self.chat_stream.finish()


def _finishes(event):
    candidates = event.get("candidates")
    return isinstance(candidates, list) and any(
        isinstance(candidate, dict) and candidate.get("finishReason") for candidate in candidates)


OPENAI_ERRORS = OpenAIErrors()
OPENAI_ANSWERS = OpenAIAnswers()
