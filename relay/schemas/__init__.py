"""This package provides relay's Gemini request schemas (marshmallow, shared base for the OpenAI door's) and
the one validation entry point."""

from relay.errors import bad_request
from relay.schemas.base import check, flatten_errors
from relay.schemas.gemini import SCHEMAS
from relay.schemas.run import Pacer, ValidationMemory, validation_run

__all__ = ["SCHEMAS", "Pacer", "ValidationMemory", "check", "flatten_errors", "validate_body"]


def validate_body(method, body, extra_violations=(), memory=None, pause=None):
    """Validate a parsed request body for a Gemini method; raise InvalidArgument naming every bad field,
    the schema's and ``extra_violations`` (checks that need more than the body, e.g. the path's model).

    ``memory`` (a :class:`ValidationMemory`, the app's) skips objects that passed before; ``pause`` is
    called whenever the run has held the event loop for a few milliseconds, so other greenlets can run.
    """
    schema = SCHEMAS.get(method)
    if schema is not None:
        with validation_run(memory, Pacer(pause)):
            check(schema, body, extra_violations)
    elif extra_violations:
        raise bad_request(list(extra_violations))
