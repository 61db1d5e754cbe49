"""This module provides the base of relay's marshmallow schemas: both JSON spellings, unknown fields kept.

Google's proto3 JSON parser accepts ``lowerCamelCase`` and the original ``snake_case`` names, and the SDKs
send both (google-genai leaks ``thinking_budget``).  Fields are declared once, with the camelCase name as
``data_key``; :class:`GeminiSchema` renames snake_case input to it before validation.  Unknown fields are
kept (``INCLUDE``) because Google adds fields often.  Pure: no Flask, no requests.
"""

import re

from marshmallow import INCLUDE, Schema, ValidationError, pre_load, validates_schema

from relay.errors import bad_request

_CAMEL_PART = re.compile(r"([A-Z])")


def snake_case(name):
    return _CAMEL_PART.sub(lambda match: "_" + match.group(1).lower(), name)


class GeminiSchema(Schema):
    """Keeps unknown fields and accepts snake_case spellings of declared camelCase fields.

    ``SHAPES`` lists fields that only need the right JSON type ({camelCase name: dict | list | str}).
    They are checked in one pass instead of being declared: marshmallow visits every declared field of
    every nested object, present or not, and that cost multiplies with the parts of a long conversation.
    """

    SHAPES = {}
    TYPE_NAMES = {dict: "Not a valid mapping type.", list: "Not a valid list.", str: "Not a valid string."}

    class Meta:
        unknown = INCLUDE

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._snake_aliases = {}
        for name, schema_field in self.fields.items():
            camel = schema_field.data_key or name
            if snake_case(camel) != camel:
                self._snake_aliases[snake_case(camel)] = camel

    @pre_load
    def accept_snake_case(self, data, **kwargs):
        if not isinstance(data, dict) or not self._snake_aliases or not any(key in self._snake_aliases for key in data):
            return data
        renamed = {}
        for key, value in data.items():
            camel = self._snake_aliases.get(key)
            if camel is not None and camel not in data:
                renamed[camel] = value
            else:
                renamed[key] = value
        return renamed


    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def check_shapes(self, data, original_data, **kwargs):
        if not self.SHAPES or not isinstance(original_data, dict):
            return
        errors = {}
        for name, expected in self.SHAPES.items():
            for spelling in (name, snake_case(name)):
                if spelling in original_data and not isinstance(original_data[spelling], expected):
                    errors[name] = [self.TYPE_NAMES[expected]]
        if errors:
            raise ValidationError(errors)


def present(original_data, camel_names):
    """True if any of ``camel_names`` is in the raw object, in either spelling."""
    return any(name in original_data or snake_case(name) in original_data for name in camel_names)


def flatten_errors(errors, path=""):
    """Turn marshmallow's nested error dict into ``[(field path, description), ...]``.

    ``{"contents": {0: {"role": ["..."]}}}`` becomes ``[("contents[0].role", "...")]``.
    """
    flat = []
    for key, value in errors.items():
        if key == "_schema":
            here = path or "request"
        elif isinstance(key, int):
            here = f"{path}[{key}]"
        else:
            here = f"{path}.{key}" if path else str(key)
        if isinstance(value, dict):
            flat.extend(flatten_errors(value, here))
        elif isinstance(value, list):
            flat.extend((here, str(message)) for message in value)
        else:
            flat.append((here, str(value)))
    return flat


def check(schema, data, extra_violations=()):
    """Validate ``data``; raise an InvalidArgument naming every violating field (with ``extra_violations``)."""
    if not isinstance(data, dict):
        raise bad_request([("request", "The request body must be a JSON object.")])
    try:
        errors = schema.validate(data)
    except ValidationError as exc:
        errors = exc.normalized_messages()
    violations = sorted([*flatten_errors(errors), *extra_violations])
    if violations:
        raise bad_request(violations)
