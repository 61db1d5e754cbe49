"""This module provides marshmallow schemas for OpenAI chat and embeddings requests; every error names its param.

Unknown fields are kept (OpenAI adds parameters often) and parameters with no Gemini meaning pass (see
:mod:`relay.openai.params`); parameters relay cannot honour fail here, naming themselves.  Messages are
checked by a plain-Python field (:class:`relay.openai.messages.MessageList`), not nested schemas: a long
conversation would otherwise pay marshmallow's per-object cost on every turn.  What needs the whole
conversation (a tool message's ``tool_call_id``) or decoding (data URLs, call arguments) is checked while
translating, in :mod:`relay.openai.messages`, with the same error.  Pure: no Flask, no requests.
"""

from marshmallow import INCLUDE, Schema, ValidationError, fields, pre_load, validates_schema
from marshmallow.validate import Length, OneOf, Range, Regexp

from relay.errors import bad_request
from relay.openai.messages import MAX_JSON_DEPTH, MessageList, within_depth
from relay.plugins.thinking import EFFORTS
from relay.schemas.base import flatten_errors, snake_case
from relay.schemas.gemini import THINKING_LEVELS

MAX_EMBEDDING_INPUTS = 2048
# Gemini's rule for function names (OpenAI's is narrower, but a name Gemini refuses fails either way).
FUNCTION_NAME = r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$"


class OpenAISchema(Schema):
    """Keeps unknown fields; accepts camelCase spellings of snake_case fields (Google's extras come in both)."""

    class Meta:
        unknown = INCLUDE

    @pre_load
    def accept_camel_case(self, data, **kwargs):
        if not isinstance(data, dict) or all(key.islower() for key in data):
            return data
        renamed = {}
        for key, value in data.items():
            snake = snake_case(key)
            renamed[snake if snake in self.fields and snake not in data else key] = value
        return renamed


class JsonObject(fields.Dict):
    """A free-form JSON object (a JSON schema), refused past :data:`MAX_JSON_DEPTH` levels."""

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if not within_depth(value):
            raise ValidationError(f"Nests deeper than {MAX_JSON_DEPTH} levels.")
        return value


class Stop(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        raise ValidationError("Must be a string or a list of strings.")


class ToolChoice(fields.Field):
    """``none``/``auto``/``required``, ``{"type":"function","function":{"name"}}`` or ``allowed_tools``."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value in ("none", "auto", "required"):
            return value
        if not isinstance(value, dict):
            raise ValidationError("Must be none, auto, required or an object naming a function.")
        if value.get("type") == "function":
            _require_name(value, "function")
            return value
        if value.get("type") != "allowed_tools":
            raise ValidationError({"type": ["Must be function or allowed_tools."]})
        allowed = value.get("allowed_tools")
        if not isinstance(allowed, dict) or not isinstance(allowed.get("tools"), list):
            raise ValidationError({"allowed_tools": ["Must be an object with mode and a list of tools."]})
        if allowed.get("mode") not in ("auto", "required"):
            raise ValidationError({"allowed_tools": {"mode": ["Must be auto or required."]}})
        errors = {}
        for index, tool in enumerate(allowed["tools"]):
            try:
                _require_name(tool, "function")
            except ValidationError as error:
                errors[index] = error.messages
        if errors:
            raise ValidationError({"allowed_tools": {"tools": errors}})
        return value


def _require_name(value, key):
    inner = value.get(key) if isinstance(value, dict) else None
    if not isinstance(inner, dict) or not isinstance(inner.get("name"), str):
        raise ValidationError({key: {"name": ["Missing function name."]}})


def validate_level(value):
    if value.upper() not in THINKING_LEVELS[1:]:
        raise ValidationError(f"Must be one of {', '.join(THINKING_LEVELS[1:]).lower()}.")


class ThinkingConfig(OpenAISchema):
    include_thoughts = fields.Boolean(allow_none=True)
    thinking_budget = fields.Integer(strict=True, allow_none=True, validate=Range(min=-1))
    thinking_level = fields.String(allow_none=True, validate=validate_level)

    @validates_schema
    def budget_or_level(self, data, **kwargs):
        if data.get("thinking_budget") is not None and data.get("thinking_level") is not None:
            raise ValidationError("Set thinking_budget or thinking_level, not both.", "thinking_level")


class GoogleExtras(OpenAISchema):
    thinking_config = fields.Nested(ThinkingConfig, allow_none=True)
    cached_content = fields.String(allow_none=True, validate=Length(min=1))
    safety_settings = fields.List(fields.Dict(), allow_none=True)


class ExtraBody(OpenAISchema):
    google = fields.Nested(GoogleExtras, allow_none=True)


class StreamOptions(OpenAISchema):
    include_usage = fields.Boolean(allow_none=True)


class FunctionDefinition(OpenAISchema):
    name = fields.String(required=True, validate=Regexp(FUNCTION_NAME, error=(
        "Must start with a letter or underscore and hold at most 128 letters, digits, _ . : or -.")))
    description = fields.String(allow_none=True)
    parameters = JsonObject(allow_none=True)
    strict = fields.Boolean(allow_none=True)


class Tool(OpenAISchema):
    type = fields.String(required=True, validate=OneOf(("function",), error="Only function tools are supported."))
    function = fields.Nested(FunctionDefinition, required=True)


class JsonSchemaFormat(OpenAISchema):
    name = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    schema_object = JsonObject(data_key="schema", allow_none=True)
    strict = fields.Boolean(allow_none=True)


class ResponseFormat(OpenAISchema):
    type = fields.String(required=True, validate=OneOf(("text", "json_object", "json_schema")))
    json_schema = fields.Nested(JsonSchemaFormat)

    @validates_schema
    def schema_for_json_schema(self, data, **kwargs):
        if data.get("type") == "json_schema" and "json_schema" not in data:
            raise ValidationError("Required when type is json_schema.", "json_schema")


def _optional(field_class, **kwargs):
    return field_class(allow_none=True, **kwargs)


class ChatCompletionRequest(OpenAISchema):
    model = fields.String(required=True, validate=Length(min=1))
    messages = MessageList(required=True)
    temperature = _optional(fields.Float, validate=Range(min=0, max=2))
    top_p = _optional(fields.Float, validate=Range(min=0, max=1))
    n = _optional(fields.Integer, strict=True, validate=Range(min=1, max=8))
    stream = _optional(fields.Boolean)
    stream_options = _optional(fields.Nested, nested=StreamOptions)
    stop = _optional(Stop)
    max_tokens = _optional(fields.Integer, strict=True, validate=Range(min=1))
    max_completion_tokens = _optional(fields.Integer, strict=True, validate=Range(min=1))
    presence_penalty = _optional(fields.Float, validate=Range(min=-2, max=2))
    frequency_penalty = _optional(fields.Float, validate=Range(min=-2, max=2))
    seed = _optional(fields.Integer, strict=True)
    logprobs = _optional(fields.Boolean)
    top_logprobs = _optional(fields.Integer, strict=True, validate=Range(min=0, max=20))
    response_format = _optional(fields.Nested, nested=ResponseFormat)
    tools = _optional(fields.List, cls_or_instance=fields.Nested(Tool))
    tool_choice = _optional(ToolChoice)
    parallel_tool_calls = _optional(fields.Boolean)
    reasoning_effort = _optional(fields.String, validate=OneOf(EFFORTS))
    modalities = _optional(fields.List, cls_or_instance=fields.String(validate=OneOf(("text", "image", "audio"))))
    web_search_options = _optional(fields.Dict)
    google = _optional(fields.Nested, nested=GoogleExtras)
    extra_body = _optional(fields.Nested, nested=ExtraBody)

    @validates_schema(skip_on_field_errors=False)
    def honourable(self, data, **kwargs):
        """Parameters relay cannot honour, each named (CHAT_REJECTED_PARAMS)."""
        errors = {}
        for name in ("audio", "functions", "function_call"):
            if data.get(name) is not None:
                errors[name] = [REJECTIONS[name]]
        if "audio" in (data.get("modalities") or ()):
            errors["modalities"] = [REJECTIONS["audio"]]
        if (data.get("n") or 1) > 1 and data.get("stream"):
            errors["n"] = ["Must be 1 when streaming: Gemini streams a single candidate."]
        if data.get("parallel_tool_calls") is False:
            errors["parallel_tool_calls"] = ["Gemini has no switch to stop parallel function calls: leave it out."]
        if data.get("top_logprobs") and not data.get("logprobs"):
            errors["top_logprobs"] = ["Requires logprobs: true."]
        if data.get("reasoning_effort") is not None and _thinking_amount(data):
            errors["reasoning_effort"] = [REJECTIONS["reasoning_effort"]]
        errors.update(_tool_choice_problems(data))
        if errors:
            raise ValidationError(errors)


REJECTIONS = {
    "audio": "Audio output is not supported: Gemini's OpenAI door returns text and images.",
    "functions": "Deprecated and not supported: send tools.",
    "function_call": "Deprecated and not supported: send tool_choice.",
    "reasoning_effort": "Cannot be combined with google.thinking_config's thinking_budget or thinking_level: set one.",
}


def google_extras(data):
    """The ``google`` extras, from a top-level ``google`` key and a literal ``extra_body.google`` (which wins)."""
    merged = dict(data.get("google") or {})
    merged.update((data.get("extra_body") or {}).get("google") or {})
    return merged


def _thinking_amount(data):
    thinking = google_extras(data).get("thinking_config") or {}
    return thinking.get("thinking_budget") is not None or thinking.get("thinking_level") is not None


def _tool_choice_problems(data):
    choice = data.get("tool_choice")
    if choice is None or choice in ("none", "auto"):
        return {}
    names = {tool["function"]["name"] for tool in data.get("tools") or ()}
    if not names:
        return {"tool_choice": ["Requires tools."]}
    if isinstance(choice, dict) and choice.get("type") == "function" and choice["function"]["name"] not in names:
        return {"tool_choice": {"function": {"name": ["Names no function in tools."]}}}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        unknown = [tool["function"]["name"] for tool in choice["allowed_tools"]["tools"]
                   if tool["function"]["name"] not in names]
        if unknown:
            return {"tool_choice": {"allowed_tools": {"tools": [f"Names no function in tools: {', '.join(unknown)}."]}}}
    return {}


class EmbeddingInput(fields.Field):
    """A string or a list of 1 to 2,048 non-empty strings, returned as a list; token arrays are refused."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = [value]
        elif not isinstance(value, list) or not value:
            raise ValidationError("Must be a string or a non-empty list of strings.")
        if len(value) > MAX_EMBEDDING_INPUTS:
            raise ValidationError(f"At most {MAX_EMBEDDING_INPUTS} inputs are allowed per request.")
        errors = {}
        for index, item in enumerate(value):
            if isinstance(item, (int, list)) and not isinstance(item, bool):
                errors[index] = ["Token arrays are not supported: Gemini embeds text, send strings."]
            elif not isinstance(item, str) or not item:
                errors[index] = ["Must be a non-empty string."]
        if errors:
            raise ValidationError(errors)
        return value


class EmbeddingsRequest(OpenAISchema):
    model = fields.String(required=True, validate=Length(min=1))
    input = EmbeddingInput(required=True)
    dimensions = _optional(fields.Integer, strict=True, validate=Range(min=1))
    encoding_format = _optional(fields.String, validate=OneOf(("float", "base64")))
    user = _optional(fields.String)


CHAT_SCHEMA = ChatCompletionRequest()
EMBEDDINGS_SCHEMA = EmbeddingsRequest()


def load_chat(request):
    """The validated chat request (typed values, unknown fields kept); raise InvalidArgument naming each param."""
    return _load(CHAT_SCHEMA, request)


def load_embeddings(request):
    """The validated embeddings request, ``input`` always a list; raise InvalidArgument naming each param."""
    return _load(EMBEDDINGS_SCHEMA, request)


def _load(schema, request):
    if not isinstance(request, dict):
        raise bad_request([("request", "The request body must be a JSON object.")])
    try:
        return schema.load(request)
    except ValidationError as error:
        raise bad_request(sorted(flatten_errors(error.normalized_messages()))) from None
