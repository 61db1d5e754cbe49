"""This module provides the translation of a Gemini generateContent answer into an OpenAI ``chat.completion``.

One choice per candidate: text → ``content``, thought text → ``reasoning_content``, function calls →
``tool_calls`` (each call's thought signature in ``extra_content.google.thought_signature``), images →
``images`` (the OpenRouter convention), logprobs, and the finish reason decided from the parts as well as
Gemini's ``finishReason``.  The helpers here serve the stream translation too (:mod:`relay.openai.stream`).
Pure: no I/O.
"""

import secrets
import time

import orjson

FINISH_REASONS = {
    "STOP": "stop", "FINISH_REASON_UNSPECIFIED": "stop", "MALFORMED_FUNCTION_CALL": "stop",
    "UNEXPECTED_TOOL_CALL": "stop", "TOO_MANY_TOOL_CALLS": "stop", "MALFORMED_RESPONSE": "stop",
    "MISSING_THOUGHT_SIGNATURE": "stop", "MAX_TOKENS": "length", "CONTINUATION": "length",
    "SAFETY": "content_filter", "RECITATION": "content_filter", "LANGUAGE": "content_filter",
    "OTHER": "content_filter", "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter", "IMAGE_SAFETY": "content_filter", "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_OTHER": "content_filter", "IMAGE_RECITATION": "content_filter", "NO_IMAGE": "content_filter",
    "ESCALATION": "content_filter", "MODEL_ARMOR": "content_filter", "PUP_LIMITED_DISABLED": "content_filter",
}
MAX_TOOL_CALL_ID = 40  # OpenAI's limit on tool_call_id


def finish_reason(gemini_reason, has_calls):
    """OpenAI's finish_reason; a turn holding function calls ends in tool_calls (Gemini says STOP there)."""
    reason = FINISH_REASONS.get(gemini_reason, "stop")
    return "tool_calls" if has_calls and reason == "stop" else reason


def completion_id(response):
    response_id = response.get("responseId")
    return f"chatcmpl-{response_id}" if isinstance(response_id, str) and response_id else new_id("chatcmpl-")


def new_id(prefix="call_"):
    """A short random id; tool calls get one when Gemini's functionCall has none (never the signature)."""
    return prefix + secrets.token_hex(12)


def usage(metadata):
    """OpenAI usage: completion tokens count thoughts, as OpenAI counts reasoning; cached tokens are in the prompt."""
    metadata = metadata or {}
    prompt = metadata.get("promptTokenCount", 0)
    thoughts = metadata.get("thoughtsTokenCount", 0)
    completion = metadata.get("candidatesTokenCount", 0) + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": metadata.get("totalTokenCount", prompt + completion),
        "prompt_tokens_details": {"cached_tokens": metadata.get("cachedContentTokenCount", 0)},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def tool_call(function_call, signature, index=None):
    """An OpenAI tool call for a Gemini functionCall; ``index`` is set in stream deltas."""
    call_id = function_call.get("id")
    if not isinstance(call_id, str) or not call_id or len(call_id) > MAX_TOOL_CALL_ID:
        call_id = new_id()
    call = {} if index is None else {"index": index}
    call["id"] = call_id
    call["type"] = "function"
    call["function"] = {"name": function_call["name"], "arguments": orjson.dumps(function_call.get("args") or {}).decode()}
    if signature:
        call["extra_content"] = {"google": {"thought_signature": signature}}
    return call


def read_parts(parts):
    """``(content, reasoning_content, function calls, images, text signature)`` from a candidate's parts.

    Function calls come back as ``(functionCall, thoughtSignature)`` pairs; the text signature is the last
    one a text part carried (Gemini 3 puts it on the answer's last part, sometimes an empty one).
    """
    text, thoughts, calls, images, signature = [], [], [], [], None
    for part in parts:
        if "text" in part:
            (thoughts if part.get("thought") else text).append(part["text"])
            signature = part.get("thoughtSignature") or signature
        elif "functionCall" in part:
            if part["functionCall"].get("name"):  # Vertex's streamed-argument fragments have none
                calls.append((part["functionCall"], part.get("thoughtSignature")))
        elif "inlineData" in part and not part.get("thought"):
            blob = part["inlineData"]
            url = f"data:{blob.get('mimeType', 'application/octet-stream')};base64,{blob.get('data', '')}"
            images.append({"type": "image_url", "image_url": {"url": url}})
    content = "".join(text) if text else None
    return content, ("".join(thoughts) if thoughts else None), calls, images, signature


def logprobs(result):
    """OpenAI choice logprobs for a Gemini ``logprobsResult`` (None without one)."""
    if not result:
        return None
    top = result.get("topCandidates") or ()
    content = []
    for position, chosen in enumerate(result.get("chosenCandidates") or ()):
        entry = _logprob(chosen)
        alternatives = (top[position].get("candidates") or ()) if position < len(top) else ()
        entry["top_logprobs"] = [_logprob(alternative) for alternative in alternatives]
        content.append(entry)
    return {"content": content, "refusal": None}


def _logprob(candidate):
    token = candidate.get("token", "")
    return {"token": token, "logprob": candidate.get("logProbability", 0.0), "bytes": list(token.encode())}


def blocked_refusal(feedback):
    """The refusal text for a prompt Gemini blocked, or None when the prompt was not blocked."""
    reason = (feedback or {}).get("blockReason")
    if not reason:
        return None
    detail = feedback.get("blockReasonMessage")
    return f"Gemini blocked the prompt ({reason})" + (f": {detail}" if detail else ".")


def to_chat_completion(response, model, *, created=None):
    """``(chat.completion, [(tool_call_id, thought_signature), ...])`` for a parsed generateContent answer.

    ``model`` is the model the caller asked for.  The pipeline stores the returned pairs (with a TTL)
    so a later request's ``lookup_signature`` finds them when a client drops ``extra_content``.
    """
    signatures = []
    candidates = response.get("candidates") or ()
    choices = [_choice(candidate, position, signatures) for position, candidate in enumerate(candidates)]
    if not choices:
        refusal = blocked_refusal(response.get("promptFeedback"))
        choices = [{
            "index": 0, "message": {"role": "assistant", "content": None, "refusal": refusal}, "logprobs": None,
            "finish_reason": "content_filter" if refusal else "stop",
        }]
    completion = {
        "id": completion_id(response), "object": "chat.completion", "created": created or int(time.time()),
        "model": model, "choices": choices, "usage": usage(response.get("usageMetadata")),
    }
    return completion, signatures


def _choice(candidate, position, signatures):
    content, reasoning, calls, images, signature = read_parts((candidate.get("content") or {}).get("parts") or ())
    message = {"role": "assistant", "content": content, "refusal": None}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [tool_call(function_call, call_signature) for function_call, call_signature in calls]
        signatures.extend((call["id"], call_signature) for call, (_, call_signature)
                          in zip(message["tool_calls"], calls) if call_signature)
    if images:
        message["images"] = images
    if signature:
        message["extra_content"] = {"google": {"thought_signature": signature}}
    return {
        "index": candidate.get("index", position), "message": message,
        "logprobs": logprobs(candidate.get("logprobsResult")),
        "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls)),
    }
