"""This package provides relay's request schemas (marshmallow) and the one validation entry point."""

from relay.schemas.base import check, flatten_errors
from relay.schemas.gemini import SCHEMAS

__all__ = ["SCHEMAS", "check", "flatten_errors", "validate_body"]


def validate_body(method, body):
    """Validate a parsed request body for a Gemini method; raise InvalidArgument naming every bad field."""
    schema = SCHEMAS.get(method)
    if schema is not None:
        check(schema, body)
