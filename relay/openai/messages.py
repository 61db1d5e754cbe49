"""This module provides the translation of OpenAI chat messages into Gemini ``contents`` and a ``systemInstruction``.

system and developer messages become the systemInstruction, in order; user → ``user``, assistant → ``model``,
tool → ``functionResponse`` parts of a ``user`` turn; consecutive messages of one Gemini role share a turn,
so the results of one assistant turn's calls travel together, as Gemini requires.  Assistant tool calls
carry their thought signature: the one the client sent back (``extra_content.google.thought_signature``),
else, in the current turn (the only one Gemini checks), the one the pipeline remembers
(``lookup_signature``), else, on a message's first call, Google's documented placeholder.  :func:`message_problems` checks one message's shape for the schema; what needs
decoding or the whole conversation is checked here, raising the same InvalidArgument.  Content parts are
:mod:`relay.openai.parts`' business.  Pure: no I/O.
"""

import orjson
from marshmallow import ValidationError, fields

from relay.errors import bad_request
from relay.openai.parts import parts_problems, user_parts
from relay.schemas.gemini import validate_base64

# Google's documented value for calls it did not produce (ai.google.dev/gemini-api/docs/thought-signatures,
# FAQ 1; Vertex documents the same one).
SIGNATURE_PLACEHOLDER = "skip_thought_signature_validator"
ROLE_PARTS = {
    "system": ("text",), "developer": ("text",), "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"), "tool": ("text",),
}
MAX_JSON_DEPTH = 64


def within_depth(value, limit=MAX_JSON_DEPTH):
    """True if ``value`` nests dicts and lists at most ``limit`` levels deep (walks containers only).

    Gemini's body nests free-form JSON a few levels further, and orjson writes at most 254 levels.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return True


def message_problems(message):
    """marshmallow-style errors for one message's shape (``{"content": {0: {"type": [...]}}}``), or None."""
    if not isinstance(message, dict):
        return {"_schema": ["Must be an object with a role."]}
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLE_PARTS:
        hint = " (function messages are deprecated: send tool messages)" if role == "function" else ""
        return {"role": [f"Must be one of system, developer, user, assistant or tool{hint}."]}
    problems = {}
    content = message.get("content")
    if content is None:
        if role != "assistant":
            problems["content"] = ["Missing content."]
    elif not isinstance(content, str):
        content_problems = parts_problems(content, ROLE_PARTS[role])
        if content_problems:
            problems["content"] = content_problems
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        problems["tool_call_id"] = ["Missing tool_call_id: a tool message answers one tool call."]
    if role == "assistant" and message.get("tool_calls") is not None:
        call_problems = _tool_calls_problems(message["tool_calls"])
        if call_problems:
            problems["tool_calls"] = call_problems
    return problems or None


class MessageList(fields.Field):
    """The schema's ``messages`` field: a non-empty list, each message's shape checked by :func:`message_problems`."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list) or not value:
            raise ValidationError("Must be a non-empty list of messages.")
        errors = {}
        for index, message in enumerate(value):
            problems = message_problems(message)
            if problems:
                errors[index] = problems
        if errors:
            raise ValidationError(errors)
        return value


def _tool_calls_problems(tool_calls):
    if not isinstance(tool_calls, list):
        return ["Must be a list."]
    problems = {}
    for index, call in enumerate(tool_calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not call["id"]:
            problems[index] = {"id": ["Must be a non-empty string."]}
        elif call.get("type", "function") != "function":
            problems[index] = {"type": ["Must be function."]}
        elif not isinstance(function, dict) or not isinstance(function.get("name"), str):
            problems[index] = {"function": {"name": ["Must be a string."]}}
        elif not isinstance(function.get("arguments", ""), (str, dict)):
            problems[index] = {"function": {"arguments": ["Must be a JSON object encoded as a string."]}}
    return problems


def to_contents(messages, lookup_signature=None):
    """``(systemInstruction or None, contents)`` for validated ``messages``; raise InvalidArgument naming the param.

    A conversation of system messages only becomes a user turn: Gemini needs contents, OpenAI does not.
    """
    system_parts, contents, call_names = [], [], {}
    current_turn = _current_turn_start(messages)
    for index, message in enumerate(messages):
        role, path = message["role"], f"messages[{index}]"
        if role in ("system", "developer"):
            system_parts.extend(_text_parts(message["content"]))
            continue
        if role == "assistant":
            lookup = lookup_signature if index > current_turn else None
            parts = _assistant_parts(message, path, call_names, lookup)
        elif role == "tool":
            parts = [_function_response(message, path, call_names)]
        else:
            parts = user_parts(message["content"], path)
        if not parts:
            continue
        gemini_role = "model" if role == "assistant" else "user"
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    if not contents:
        return None, [{"role": "user", "parts": system_parts}]
    return ({"parts": system_parts} if system_parts else None), contents


def _current_turn_start(messages):
    """The index of the last user message: Gemini checks signatures only in the turn after it (G-TS)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, dict) and message.get("role") == "user":
            return index
    return -1


def unsigned_tool_call_ids(messages):
    """Ids of the current turn's tool calls that came back without a signature: what ``lookup_signature``
    will be asked for, so a pipeline can fetch them from its store in one round trip beforehand."""
    if not isinstance(messages, list):
        return []
    ids = []
    for message in messages[_current_turn_start(messages) + 1:]:
        if isinstance(message, dict) and message.get("role") == "assistant" and isinstance(message.get("tool_calls"), list):
            ids.extend(call["id"] for call in message["tool_calls"]
                       if isinstance(call, dict) and isinstance(call.get("id"), str) and _signature_in(call) is None)
    return ids


def _text_parts(content):
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    return [{"text": part.get("text", part.get("refusal"))} for part in content]


def _assistant_parts(message, path, call_names, lookup_signature):
    parts = _text_parts(message.get("content"))
    if not parts and isinstance(message.get("refusal"), str):
        parts = [{"text": message["refusal"]}]
    text_signature = _sent_signature(message, path)
    if text_signature and parts:
        parts[-1]["thoughtSignature"] = text_signature
    for position, call in enumerate(message.get("tool_calls") or ()):
        call_path = f"{path}.tool_calls[{position}]"
        function = call["function"]
        call_names[call["id"]] = function["name"]
        part = {"functionCall": {
            "id": call["id"], "name": function["name"],
            "args": _arguments(function.get("arguments"), f"{call_path}.function.arguments"),
        }}
        signature = _sent_signature(call, call_path)
        if signature is None and lookup_signature is not None:
            signature = lookup_signature(call["id"])
        if signature is None and position == 0:
            signature = SIGNATURE_PLACEHOLDER  # only a step's first call is checked (parallel calls share it)
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _signature_in(holder):
    extra = holder.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    return google.get("thought_signature") if isinstance(google, dict) else None


def _sent_signature(holder, path):
    """``extra_content.google.thought_signature`` as the client sent it back, checked to be base64."""
    signature = _signature_in(holder)
    if signature is None:
        return None
    try:
        validate_base64(signature)
    except ValidationError:
        field = f"{path}.extra_content.google.thought_signature"
        raise bad_request([(field, "Must be the base64 string relay returned.")]) from None
    return signature


def _arguments(raw, path):
    if isinstance(raw, dict):
        arguments = raw
    elif raw is None or not raw.strip():
        return {}
    else:
        try:
            arguments = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise bad_request([(path, "Must be a JSON object encoded as a string; it is not valid JSON.")]) from None
    if not isinstance(arguments, dict):
        raise bad_request([(path, "Must encode a JSON object.")])
    if not within_depth(arguments):
        raise bad_request([(path, f"Nests deeper than {MAX_JSON_DEPTH} levels.")])
    return arguments


def _function_response(message, path, call_names):
    call_id = message["tool_call_id"]
    name = call_names.get(call_id)
    if name is None:
        raise bad_request([(f"{path}.tool_call_id", "Answers no tool call of an earlier assistant message.")])
    output = "".join(part["text"] for part in _text_parts(message["content"]))
    return {"functionResponse": {"id": call_id, "name": name, "response": {"output": output}}}
