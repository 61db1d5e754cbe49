"""This package provides relay's request schemas (marshmallow) and the one validation entry point."""

from relay.errors import bad_request
from relay.schemas.base import check, flatten_errors
from relay.schemas.gemini import SCHEMAS

__all__ = ["SCHEMAS", "check", "flatten_errors", "validate_body"]


def validate_body(method, body, extra_violations=()):
    """Validate a parsed request body for a Gemini method; raise InvalidArgument naming every bad field,
    the schema's and ``extra_violations`` (checks that need more than the body, e.g. the path's model)."""
    schema = SCHEMAS.get(method)
    if schema is not None:
        check(schema, body, extra_violations)
    elif extra_violations:
        raise bad_request(list(extra_violations))
