"""This module provides the translation of an OpenAI chat completions request into a Gemini generateContent body.

:func:`translate_request` validates the request (:mod:`relay.openai.schemas`), translates the messages
(:mod:`relay.openai.messages`) and maps the parameters listed in :data:`relay.openai.params.CHAT_MAPPED_PARAMS`.
``reasoning_effort`` needs the model relay will call: its thinking family (:mod:`relay.plugins.thinking`)
decides between a thinkingLevel and a clamped thinkingBudget.  Pure: no Flask, no requests, no I/O.
"""

from dataclasses import dataclass

from relay.openai.messages import to_contents
from relay.openai.schemas import google_extras, load_chat
from relay.plugins.thinking import effort_config

# OpenAI parameter → generationConfig field, for values that pass unchanged.
PLAIN_GENERATION_FIELDS = (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"))
THINKING_FIELDS = {"include_thoughts": "includeThoughts", "thinking_budget": "thinkingBudget",
                   "thinking_level": "thinkingLevel"}
CALLING_MODES = {"none": "NONE", "auto": "AUTO", "required": "ANY"}


@dataclass
class ChatRequest:
    """A translated chat request: the Gemini body and what the pipeline and the response side need."""

    body: dict  # GenerateContentRequest without ``model``: the model travels in the path
    model: str  # the model the caller asked for; responses echo it
    stream: bool
    include_usage: bool  # stream_options.include_usage: end the stream with a usage chunk
    cached_content: str | None  # "cachedContents/…" the body names (the pipeline pins the call to its owner)

    @property
    def method(self):
        return "streamGenerateContent" if self.stream else "generateContent"


def translate_request(request, *, upstream_model=None, lookup_signature=None):
    """Validate and translate a parsed ``/v1/chat/completions`` body; raise InvalidArgument naming the param.

    ``upstream_model`` is the Gemini model relay will call (after aliases and suffixes; defaults to the
    request's ``model``).  ``lookup_signature(tool_call_id) -> str | None`` finds the thought signature of
    an earlier tool call whose message came back without ``extra_content``.
    """
    data = load_chat(request)
    system_instruction, contents = to_contents(data["messages"], lookup_signature)
    body = {"contents": contents}
    if system_instruction:
        body["systemInstruction"] = system_instruction
    tools, tool_config = _tools(data)
    if tools:
        body["tools"] = tools
    if tool_config:
        body["toolConfig"] = tool_config
    generation_config = _generation_config(data, upstream_model or data["model"])
    if generation_config:
        body["generationConfig"] = generation_config
    extras = google_extras(data)
    if extras.get("safety_settings") is not None:
        body["safetySettings"] = extras["safety_settings"]
    cached_content = _cache_name(extras.get("cached_content"))
    if cached_content:
        body["cachedContent"] = cached_content
    stream = bool(data.get("stream"))
    include_usage = stream and bool((data.get("stream_options") or {}).get("include_usage"))
    return ChatRequest(body, data["model"], stream, include_usage, cached_content)


def _generation_config(data, model):
    config = {name: data[key] for key, name in PLAIN_GENERATION_FIELDS if data.get(key) is not None}
    max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    if data.get("stop"):
        config["stopSequences"] = data["stop"]
    if (data.get("n") or 1) > 1:
        config["candidateCount"] = data["n"]
    for key, name in (("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        if data.get(key):  # 0 is the default: sending it only risks 2.5's "Penalty is not enabled"
            config[name] = data[key]
    if data.get("logprobs"):
        config["responseLogprobs"] = True
        if data.get("top_logprobs"):
            config["logprobs"] = data["top_logprobs"]
    config.update(_response_format(data.get("response_format")))
    if data.get("modalities"):
        config["responseModalities"] = [modality.upper() for modality in data["modalities"]]
    thinking = _thinking_config(data, model)
    if thinking:
        config["thinkingConfig"] = thinking
    return config


def _response_format(response_format):
    if not response_format or response_format["type"] == "text":
        return {}
    config = {"responseMimeType": "application/json"}
    schema = (response_format.get("json_schema") or {}).get("schema_object")
    if schema is not None:
        config["responseJsonSchema"] = schema
    return config


def _thinking_config(data, model):
    """reasoning_effort through the model's thinking family, then google.thinking_config field by field."""
    config = effort_config(model, data["reasoning_effort"]) if data.get("reasoning_effort") else {}
    explicit = google_extras(data).get("thinking_config") or {}
    for key, value in explicit.items():
        if value is not None:
            config[THINKING_FIELDS.get(key, key)] = value.upper() if key == "thinking_level" else value
    return config


def _tools(data):
    """``(tools, toolConfig)``: function declarations (schemas passed as written) and the calling mode."""
    declarations = [_declaration(tool["function"]) for tool in data.get("tools") or ()]
    mode, names = _calling_mode(data.get("tool_choice"))
    if names and mode == "AUTO":
        # Gemini honours allowedFunctionNames only with ANY: "auto among these" declares just these.
        declarations = [declaration for declaration in declarations if declaration["name"] in names]
        names = None
    tools = [{"functionDeclarations": declarations}] if declarations else []
    if data.get("web_search_options") is not None:
        tools.append({"googleSearch": {}})
    if not declarations or mode is None:
        return tools, None
    calling = {"mode": mode}
    if names:
        calling["allowedFunctionNames"] = names
    return tools, {"functionCallingConfig": calling}


def _declaration(function):
    declaration = {"name": function["name"]}
    if function.get("description") is not None:
        declaration["description"] = function["description"]
    if function.get("parameters") is not None:
        declaration["parametersJsonSchema"] = function["parameters"]
    return declaration


def _calling_mode(choice):
    """``(mode, allowed names)`` for a validated tool_choice; ``(None, None)`` when the client left it out."""
    if choice is None:
        return None, None
    if isinstance(choice, str):
        return CALLING_MODES[choice], None
    if choice["type"] == "function":
        return "ANY", [choice["function"]["name"]]
    allowed = choice["allowed_tools"]
    return CALLING_MODES[allowed["mode"]], [tool["function"]["name"] for tool in allowed["tools"]]


def _cache_name(name):
    if not name:
        return None
    return name if name.startswith("cachedContents/") else f"cachedContents/{name}"
