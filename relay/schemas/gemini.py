"""This module provides marshmallow schemas for the Gemini request bodies relay validates before forwarding.

They check what Google would reject anyway (so the caller learns at once, and no upstream quota is
spent) and nothing more: every unknown field passes.  Pure: no Flask, no requests.
"""

import re

from marshmallow import ValidationError, fields, validates_schema
from marshmallow.validate import Length, OneOf, Range

from relay.schemas.base import GeminiSchema

# Standard or URL-safe alphabet, padding optional: what proto3 JSON accepts for `bytes`.
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
PART_DATA_FIELDS = (
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode", "codeExecutionResult",
)
THINKING_LEVELS = ("THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH")


def validate_base64(value):
    if not isinstance(value, str):
        raise ValidationError("Not a valid string.")
    if value.startswith("data:"):
        raise ValidationError("Must be plain base64, not a data: URI; send the MIME type in mimeType.")
    if len(value) % 4 == 1 or not _BASE64.fullmatch(value):
        raise ValidationError("Must be base64-encoded bytes.")


class Blob(GeminiSchema):
    mime_type = fields.String(data_key="mimeType", required=True)
    data = fields.Raw(required=True, validate=validate_base64)


class FileData(GeminiSchema):
    mime_type = fields.String(data_key="mimeType")
    file_uri = fields.String(data_key="fileUri", required=True)


class Part(GeminiSchema):
    text = fields.String()
    inline_data = fields.Nested(Blob, data_key="inlineData")
    file_data = fields.Nested(FileData, data_key="fileData")
    function_call = fields.Dict(data_key="functionCall")
    function_response = fields.Dict(data_key="functionResponse")
    executable_code = fields.Dict(data_key="executableCode")
    code_execution_result = fields.Dict(data_key="codeExecutionResult")
    thought = fields.Boolean()
    thought_signature = fields.Raw(data_key="thoughtSignature", validate=validate_base64)

    @validates_schema
    def has_data(self, data, **kwargs):
        if not any(name in data for name in ("text", "inline_data", "file_data", "function_call", "function_response",
                                             "executable_code", "code_execution_result")):
            raise ValidationError(f"A part must carry one of {', '.join(PART_DATA_FIELDS)}.")


class Content(GeminiSchema):
    role = fields.String(validate=OneOf(("user", "model"), error="Role must be 'user' or 'model'."))
    parts = fields.List(fields.Nested(Part))


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
    temperature = fields.Float(validate=Range(min=0, max=2))
    top_p = fields.Float(data_key="topP", validate=Range(min=0, max=1))
    top_k = fields.Integer(data_key="topK", validate=Range(min=1))
    max_output_tokens = fields.Integer(data_key="maxOutputTokens", validate=Range(min=1))
    candidate_count = fields.Integer(data_key="candidateCount", validate=Range(min=1))
    stop_sequences = fields.List(fields.String(), data_key="stopSequences")
    response_modalities = fields.List(fields.Raw(), data_key="responseModalities")
    image_config = fields.Dict(data_key="imageConfig")
    thinking_config = fields.Nested(ThinkingConfig, data_key="thinkingConfig")


class GenerateContentRequest(GeminiSchema):
    model = fields.String()
    contents = fields.List(fields.Nested(Content), required=True, validate=Length(min=1, error="contents must not be empty."))
    system_instruction = fields.Nested(Content, data_key="systemInstruction")
    tools = fields.List(fields.Dict())
    tool_config = fields.Dict(data_key="toolConfig")
    safety_settings = fields.List(fields.Dict(), data_key="safetySettings")
    generation_config = fields.Nested(GenerationConfig, data_key="generationConfig")
    cached_content = fields.String(data_key="cachedContent")


class CountTokensRequest(GeminiSchema):
    contents = fields.List(fields.Nested(Content))
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
    contents = fields.List(fields.Nested(Content))
    system_instruction = fields.Nested(Content, data_key="systemInstruction")
    ttl = fields.String()
    expire_time = fields.String(data_key="expireTime")


# One instance each: marshmallow schemas are safe to share once built.
SCHEMAS = {
    "generateContent": GenerateContentRequest(),
    "streamGenerateContent": GenerateContentRequest(),
    "countTokens": CountTokensRequest(),
    "embedContent": EmbedContentRequest(),
    "batchEmbedContents": BatchEmbedContentsRequest(),
    "cachedContents.create": CreateCachedContentRequest(),
}
