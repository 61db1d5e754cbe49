"""This module provides marshmallow schemas for the Gemini request bodies relay validates before forwarding.

They check what Google would reject anyway (so the caller learns at once, and no upstream quota is
spent) and nothing more: every unknown field passes.  Turns and parts in the common, plain shapes are
checked in plain Python instead, at a fraction of marshmallow's cost.  Pure: no Flask, no requests.
"""

import re

from marshmallow import ValidationError, fields, validates_schema
from marshmallow.validate import Length, OneOf, Range

from relay.schemas.base import GeminiSchema, present, snake_case
from relay.schemas.lists import ItemList, Remembered
from relay.schemas.run import current_run

# Standard or URL-safe alphabet, padding optional: what proto3 JSON accepts for `bytes`.
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-"
BASE64_SLICE = 1024 * 1024
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
    """``_BASE64.fullmatch(value)`` at C speed, a slice at a time: a 100 MB image is checked in a few hundred
    milliseconds, and other greenlets run between its slices."""
    tail = value[-3:]
    padding = len(tail) - len(tail.rstrip("="))
    if padding > 2:
        return False
    digits_end, pacer = len(value) - padding, current_run().pacer
    for start in range(0, digits_end, BASE64_SLICE):
        try:
            digits = value[start:min(start + BASE64_SLICE, digits_end)].encode("ascii")
        except UnicodeEncodeError:
            return False
        if digits.translate(None, _BASE64_ALPHABET):
            return False
        pacer.tick()
    return True


class ContentList(ItemList):
    """A list of Content, each turn validated when it is new and not plain."""

    def __init__(self, **kwargs):
        super().__init__(fields.Nested(Content), plain=plain_content, remember=True, **kwargs)


# -- plain shapes, accepted without marshmallow ------------------------------------------------------
# Nearly every turn is plain: a role, and parts of text, inline or file data, function calls.  Checked in
# plain Python a turn costs about a microsecond instead of marshmallow's 30-50 (a 100,000-turn body took
# seconds).  What is not plain goes through the schema, which alone words the errors; so these must
# accept nothing the schema would refuse (tests/schemas/test_run.py checks that on random input,
# and that every field Part declares has a check here).  Unknown fields pass, as they pass the schema.

def _plain_base64(value):
    try:
        validate_base64(value)
    except ValidationError:
        return False
    return True


def _plain_blob(value):
    return type(value) is dict and len(value) == 2 and type(value.get("mimeType", value.get("mime_type"))) is str \
        and _plain_base64(value.get("data"))


def _plain_file(value):
    return type(value) is dict and type(value.get("fileUri", value.get("file_uri"))) is str \
        and all(name in _FILE_FIELDS and type(item) is str for name, item in value.items())


_FILE_FIELDS = frozenset(("fileUri", "file_uri", "mimeType", "mime_type"))
_PLAIN_PART_CHECKS = {
    "text": lambda value: type(value) is str, "thought": lambda value: type(value) is bool,
    "thoughtSignature": _plain_base64, "inlineData": _plain_blob, "fileData": _plain_file,
    **{name: lambda value: type(value) is dict for name in ("functionCall", "functionResponse", "executableCode",
                                                            "codeExecutionResult")},
}
_PLAIN_PART_CHECKS.update({snake_case(name): check for name, check in list(_PLAIN_PART_CHECKS.items())})
_DATA_FIELDS = frozenset((*PART_DATA_FIELDS, *map(snake_case, PART_DATA_FIELDS)))
PLAIN_PARTS_MAX = 64  # a turn with more parts is checked part by part, the loop shared between them


def plain_part(part):
    """True for a part whose known fields have the right types and which carries data (never for anything the
    schema refuses)."""
    if type(part) is not dict:
        return False
    carries_data = False
    for name, value in part.items():
        check = _PLAIN_PART_CHECKS.get(name)
        if check is not None and not check(value):
            return False
        carries_data = carries_data or name in _DATA_FIELDS
    return carries_data


def plain_content(turn):
    """True for a turn of role user/model (or none) and a few plain parts (never for anything the schema refuses)."""
    if type(turn) is not dict or turn.get("role", "user") not in ("user", "model"):
        return False
    parts = turn.get("parts")
    return type(parts) is list and len(parts) <= PLAIN_PARTS_MAX and all(map(plain_part, parts))


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
    parts = ItemList(fields.Nested(Part), plain=plain_part)


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
    requests = ItemList(
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
