"""This module provides marshmallow schemas for the Gemini request bodies relay validates before forwarding.

They check what Google would reject anyway (so the caller learns at once, and no upstream quota is
spent) and nothing more: every unknown field passes.  Pure: no Flask, no requests.
"""

import re

import orjson
from marshmallow import ValidationError, fields, validates_schema
from marshmallow.validate import Length, OneOf, Range

from relay.schemas.base import GeminiSchema, present

# Standard or URL-safe alphabet, padding optional: what proto3 JSON accepts for `bytes`.
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-"
PART_DATA_FIELDS = (
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode", "codeExecutionResult",
)
THINKING_LEVELS = ("THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH")


def validate_base64(value):
    if not isinstance(value, str):
        raise ValidationError("Not a valid string.")
    if value.startswith("data:"):
        raise ValidationError("Must be plain base64, not a data: URI; send the MIME type in mimeType.")
    if len(value) % 4 == 1 or not _is_base64(value):
        raise ValidationError("Must be base64-encoded bytes.")


def _is_base64(value):
    """``_BASE64.fullmatch(value)``, at C speed: a 20 MB image is checked in milliseconds, not tens of them."""
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        return False
    digits = raw.rstrip(b"=")
    return len(raw) - len(digits) <= 2 and not digits.translate(None, _BASE64_ALPHABET)


class Blob(GeminiSchema):
    mime_type = fields.String(data_key="mimeType", required=True)
    data = fields.Raw(required=True, validate=validate_base64)


class FileData(GeminiSchema):
    mime_type = fields.String(data_key="mimeType")
    file_uri = fields.String(data_key="fileUri", required=True)


class Part(GeminiSchema):
    SHAPES = {"functionCall": dict, "functionResponse": dict, "executableCode": dict, "codeExecutionResult": dict}

    text = fields.String()
    inline_data = fields.Nested(Blob, data_key="inlineData")
    file_data = fields.Nested(FileData, data_key="fileData")
    thought = fields.Boolean()
    thought_signature = fields.Raw(data_key="thoughtSignature", validate=validate_base64)

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def has_data(self, data, original_data, **kwargs):
        if isinstance(original_data, dict) and not present(original_data, PART_DATA_FIELDS):
            raise ValidationError(f"A part must carry one of {', '.join(PART_DATA_FIELDS)}.")


class Content(GeminiSchema):
    role = fields.String(validate=OneOf(("user", "model"), error="Role must be 'user' or 'model'."))
    parts = fields.List(fields.Nested(Part))


# Validated values are remembered per worker by a hash of their JSON. An application resends the same
# objects on every call: a conversation its whole history, every request its system instruction and
# generation config; marshmallow's cost per nested object (~50 µs a chat turn) would grow with them.
VALIDATED_MAX = 20_000
_VALIDATED = set()


# A part carrying a string longer than this is validated every time instead: serialising a 20 MB
# inlineData part to hash it costs more than checking it (the base64 check is one C-speed pass).
MEMO_MAX_STRING = 256 * 1024


def _memo_key(kind, value):
    if _has_large_part(value):
        return None
    try:
        return hash((kind, orjson.dumps(value)))
    except TypeError:  # beyond JSON (an integer past 64 bits): validate it every time
        return None


def _has_large_part(value):
    """True if a Content-shaped ``value`` has a part whose text or inlineData is large (a few lookups a part)."""
    parts = value.get("parts") if isinstance(value, dict) else None
    if not isinstance(parts, list):
        return False
    for part in parts:
        if isinstance(part, dict):
            text, blob = part.get("text"), part.get("inlineData")
            if isinstance(text, str) and len(text) > MEMO_MAX_STRING:
                return True
            if isinstance(blob, dict) and isinstance(blob.get("data"), str) and len(blob["data"]) > MEMO_MAX_STRING:
                return True
    return False


def _remember(key):
    if key is not None:
        if len(_VALIDATED) >= VALIDATED_MAX:
            _VALIDATED.clear()
        _VALIDATED.add(key)


class Remembered(fields.Nested):
    """A nested object validated once per worker: a value that passed before is not checked again."""

    def _deserialize(self, value, attr, data, partial=None, **kwargs):
        key = _memo_key(self.nested, value)
        if key is not None and key in _VALIDATED:
            return value
        result = super()._deserialize(value, attr, data, partial=partial, **kwargs)
        _remember(key)
        return result


class ContentList(fields.List):
    """A list of Content, each turn validated when it is new (a 20-turn chat cost 1 ms a request before)."""

    def __init__(self, **kwargs):
        super().__init__(fields.Nested(Content), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise self.make_error("invalid")
        errors = {}
        for index, item in enumerate(value):
            key = _memo_key(Content, item)
            if key is not None and key in _VALIDATED:
                continue
            try:
                self.inner.deserialize(item, **kwargs)
            except ValidationError as error:
                errors[index] = error.messages
                continue
            _remember(key)
        if errors:
            raise ValidationError(errors)
        return value


class ThinkingConfig(GeminiSchema):
    include_thoughts = fields.Boolean(data_key="includeThoughts")
    thinking_budget = fields.Integer(data_key="thinkingBudget", validate=Range(min=-1))
    thinking_level = fields.Raw(data_key="thinkingLevel")

    @validates_schema
    def one_of_budget_or_level(self, data, **kwargs):
        if "thinking_budget" in data and "thinking_level" in data:
            raise ValidationError("You can only set only one of thinking budget and thinking level.", "thinkingLevel")
        level = data.get("thinking_level")
        if level is not None and not isinstance(level, int) and str(level).upper() not in THINKING_LEVELS:
            raise ValidationError(f"Must be one of {', '.join(THINKING_LEVELS[1:])}.", "thinkingLevel")


class GenerationConfig(GeminiSchema):
    SHAPES = {"stopSequences": list, "responseModalities": list, "imageConfig": dict}

    temperature = fields.Float(validate=Range(min=0, max=2))
    top_p = fields.Float(data_key="topP", validate=Range(min=0, max=1))
    top_k = fields.Integer(data_key="topK", validate=Range(min=1))
    max_output_tokens = fields.Integer(data_key="maxOutputTokens", validate=Range(min=1))
    candidate_count = fields.Integer(data_key="candidateCount", validate=Range(min=1))
    thinking_config = fields.Nested(ThinkingConfig, data_key="thinkingConfig")


class GenerateContentRequest(GeminiSchema):
    SHAPES = {"model": str, "tools": list, "toolConfig": dict, "safetySettings": list, "cachedContent": str}

    contents = ContentList(required=True, validate=Length(min=1, error="contents must not be empty."))
    system_instruction = Remembered(Content, data_key="systemInstruction")
    generation_config = Remembered(GenerationConfig, data_key="generationConfig")


class CountTokensRequest(GeminiSchema):
    contents = ContentList()
    generate_content_request = fields.Nested(GenerateContentRequest, data_key="generateContentRequest")

    @validates_schema
    def contents_or_request(self, data, **kwargs):
        if "contents" not in data and "generate_content_request" not in data:
            raise ValidationError("Missing data for required field: set contents or generateContentRequest.", "contents")


class EmbedContentRequest(GeminiSchema):
    model = fields.String()
    content = fields.Nested(Content, required=True)
    task_type = fields.Raw(data_key="taskType")
    title = fields.String()
    output_dimensionality = fields.Integer(data_key="outputDimensionality", validate=Range(min=1))


class BatchEmbedRequestItem(EmbedContentRequest):
    model = fields.String(required=True)


class BatchEmbedContentsRequest(GeminiSchema):
    requests = fields.List(
        fields.Nested(BatchEmbedRequestItem), required=True,
        validate=Length(min=1, max=100, error="at most 100 requests can be in one batch, and at least 1."),
    )


class CreateCachedContentRequest(GeminiSchema):
    model = fields.String(required=True)
    contents = ContentList()
    system_instruction = Remembered(Content, data_key="systemInstruction")
    ttl = fields.String()
    expire_time = fields.String(data_key="expireTime")


class PredictRequest(GeminiSchema):
    """Imagen's ``:predict`` and Veo's ``:predictLongRunning``, checked loosely: what each instance holds is
    the model's business."""

    instances = fields.List(fields.Dict(), required=True, validate=Length(min=1, error="instances must not be empty."))
    parameters = fields.Dict()


class InlinedRequest(GeminiSchema):
    request = fields.Dict(required=True)
    metadata = fields.Dict()


class InlinedRequests(GeminiSchema):
    requests = fields.List(fields.Nested(InlinedRequest), required=True,
                           validate=Length(min=1, error="a batch needs at least one request."))


class BatchInputConfig(GeminiSchema):
    requests = fields.Nested(InlinedRequests)
    file_name = fields.String(data_key="fileName")

    @validates_schema
    def requests_or_file(self, data, **kwargs):
        if ("requests" in data) == ("file_name" in data):
            raise ValidationError("Set exactly one of requests (inlined) or fileName (files/<id>, a JSONL file).",
                                  "requests")


class Batch(GeminiSchema):
    model = fields.String()
    display_name = fields.String(data_key="displayName")
    input_config = fields.Nested(BatchInputConfig, data_key="inputConfig", required=True)


class CreateBatchRequest(GeminiSchema):
    """``:batchGenerateContent`` and ``:asyncBatchEmbedContent``: the batch's shape is checked, not each inlined
    request (Google answers a bad one in its place in the results)."""

    batch = fields.Nested(Batch, required=True)


# One instance each: marshmallow schemas are safe to share once built.
SCHEMAS = {
    "generateContent": GenerateContentRequest(),
    "streamGenerateContent": GenerateContentRequest(),
    "countTokens": CountTokensRequest(),
    "embedContent": EmbedContentRequest(),
    "batchEmbedContents": BatchEmbedContentsRequest(),
    "cachedContents.create": CreateCachedContentRequest(),
    "predict": PredictRequest(),
    "predictLongRunning": PredictRequest(),
    "batchGenerateContent": CreateBatchRequest(),
    "asyncBatchEmbedContent": CreateBatchRequest(),
}
