"""This module provides reading and parsing a caller's request body: size limits, JSON, Content-Type."""

import orjson
from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from relay.errors import bad_request
from relay.services import current


def read_body():
    mimetype = request.mimetype
    if request.content_type and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise bad_request([("Content-Type", f"Expected application/json, got {mimetype!r}.")])
    body = request.get_data(cache=False)
    if request.content_length is None and len(body) >= current().settings.max_body_bytes and request.stream.read(1):
        # A chunked body has no length to check up front: werkzeug stops reading at the limit, so a byte
        # beyond it means the body was too large (not a truncated, "invalid" JSON document).
        raise RequestEntityTooLarge()  # rendered by lifecycle.HTTP_ERRORS, like werkzeug's own 413
    return body


def parse_json(raw):
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request([("body", f"Invalid JSON payload received. {exc.msg}.")]) from None
    if not isinstance(body, dict):
        raise bad_request([("body", "Invalid JSON payload received. Expected a JSON object.")])
    return body
