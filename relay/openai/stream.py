"""This module provides the stream translation: parsed Gemini events in, ``chat.completion.chunk`` SSE bytes out.

One :class:`ChatStream` per streamed call holds what the translation must remember between events:
the completion id, which choices have sent their role and their finish, how many tool calls each choice
has emitted (a call's ``index`` is its position in the turn: Gemini sends no index, and clients that
number calls by arrival merge parallel calls), the latest usage, and the signatures to store.  Every
chunk is framed ``data: <json>\\n\\n`` with orjson, ready to write; chat chunks carry no ``event:`` line
(openai-node would wrap named events).  Pure: no I/O.
"""

import time

import orjson

from relay.openai.errors import from_google_error
from relay.openai.responses import (
    blocked_refusal,
    completion_id,
    finish_reason,
    logprobs,
    new_id,
    read_parts,
    tool_call,
    usage,
)

DONE = b"data: [DONE]\n\n"


class ChatStream:
    """The translation state of one stream.  ``translate`` per event, then ``finish`` (or ``error``).

    The pipeline calls :meth:`pop_signatures` when the answer is complete — at the event that carries the
    finish reason, before its bytes are written, and at the stream's end — and stores the pairs (with a
    TTL) in one write, so a client that answers the tool call at once finds them remembered.
    """

    __slots__ = ("_calls", "_failed", "_finished", "_images", "_signatures", "_signed", "_started", "_usage",
                 "completion_id", "created", "include_usage", "model")

    def __init__(self, model, include_usage=False, *, created=None):
        self.model = model  # the model the caller asked for
        self.include_usage = include_usage
        self.created = created or int(time.time())
        self.completion_id = None  # from the first event's responseId
        self._started = set()
        self._finished = set()
        self._calls = {}  # choice index → tool calls emitted so far
        self._images = {}  # choice index → images emitted so far
        self._signed = set()  # choices whose answer signature went out (clients concatenate repeated strings)
        self._usage = None
        self._signatures = []
        self._failed = False

    def translate(self, event):
        """SSE bytes (possibly empty) for one parsed Gemini stream event."""
        if self.completion_id is None:
            self.completion_id = completion_id(event)
        if event.get("usageMetadata"):
            self._usage = event["usageMetadata"]
        candidates = event.get("candidates")
        if not candidates:
            if "error" in event:
                return self.error(from_google_error(event))
            refusal = blocked_refusal(event.get("promptFeedback"))
            return self._blocked(refusal) if refusal else b""
        deltas, closings = [], []
        for position, candidate in enumerate(candidates):
            index = candidate.get("index", position)
            delta = self._delta(index, candidate)
            if delta is not None:
                choice_logprobs = logprobs(candidate.get("logprobsResult"))
                deltas.append({"index": index, "delta": delta, "logprobs": choice_logprobs, "finish_reason": None})
            reason = candidate.get("finishReason")
            if reason and index not in self._finished:
                closings.append(self._closing(index, reason))
        return (self._chunk(deltas) if deltas else b"") + (self._chunk(closings) if closings else b"")

    def finish(self):
        """The closing bytes once upstream ended cleanly: pending finishes, the usage chunk, ``[DONE]``."""
        if self._failed:
            return DONE
        if self.completion_id is None:
            self.completion_id = new_id("chatcmpl-")
        if not self._started:  # an empty upstream stream still owes the client an (empty) answer
            self._started.add(0)
            out = self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                "finish_reason": None}])
        else:
            out = b""
        pending = [self._closing(index, "STOP") for index in sorted(self._started - self._finished)]
        if pending:
            out += self._chunk(pending)
        if self.include_usage:
            out += self._chunk([], usage(self._usage))
        return out + DONE

    def error(self, openai_error):
        """The in-band error event for a failure after the stream started; ``finish`` then adds only ``[DONE]``."""
        self._failed = True
        return openai_error.sse()

    def pop_signatures(self):
        """The ``(tool_call_id, thought_signature)`` pairs emitted since the last call."""
        signatures, self._signatures = self._signatures, []
        return signatures

    def _delta(self, index, candidate):
        content, reasoning, calls, images, signature = read_parts((candidate.get("content") or {}).get("parts") or ())
        delta = {}
        if index not in self._started:
            self._started.add(index)
            delta["role"] = "assistant"
        if content:
            delta["content"] = content
        if reasoning:
            delta["reasoning_content"] = reasoning
        if calls:
            delta["tool_calls"] = self._tool_calls(index, calls)
        if images:
            delta["images"] = self._numbered_images(index, images)
        if signature and index not in self._signed:
            self._signed.add(index)
            delta["extra_content"] = {"google": {"thought_signature": signature}}
        if len(delta) == 1 and "role" in delta:
            delta["content"] = ""  # OpenAI's first chunk: the role and empty content
        return delta or None

    def _tool_calls(self, index, calls):
        first = self._calls.get(index, 0)
        deltas = []
        for offset, (function_call, signature) in enumerate(calls):
            call = tool_call(function_call, signature, index=first + offset)
            if signature:
                self._signatures.append((call["id"], signature))
            deltas.append(call)
        self._calls[index] = first + len(calls)
        return deltas

    def _numbered_images(self, index, images):
        """Stream images carry an ``index`` too: the SDK's accumulator merges list entries by index."""
        first = self._images.get(index, 0)
        for offset, image in enumerate(images):
            image["index"] = first + offset
        self._images[index] = first + len(images)
        return images

    def _closing(self, index, gemini_reason):
        self._finished.add(index)
        reason = finish_reason(gemini_reason, self._calls.get(index, 0) > 0)
        return {"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}

    def _blocked(self, refusal):
        """A prompt Gemini blocked before any candidate: a refusal, then content_filter."""
        self._started.add(0)
        self._finished.add(0)
        delta = {"role": "assistant", "content": None, "refusal": refusal}
        return (self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
                + self._chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "content_filter"}]))

    def _chunk(self, choices, chunk_usage=None):
        chunk = {"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.model, "choices": choices}
        if self.include_usage:
            chunk["usage"] = chunk_usage  # null on every chunk but the last, as OpenAI sends it
        return b"data: " + orjson.dumps(chunk) + b"\n\n"
