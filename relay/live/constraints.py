"""This module provides what an ephemeral-token request asks for, and how a token's locked setup applies to
the setup a session sends.  Pure: no Flask, no store.

A token request (``POST /{version}/auth_tokens``, google-genai's ``client.auth_tokens.create``) may carry
``uses``, ``expireTime``, ``newSessionExpireTime`` (RFC 3339), ``bidiGenerateContentSetup`` (a Live setup)
and ``fieldMask`` (comma-joined field paths), in camelCase or snake_case.  Google's rules, as its SDK
documents them: ``uses`` defaults to 1 (0: unlimited), ``expireTime`` to 30 minutes ahead and
``newSessionExpireTime`` to 60 seconds ahead, both less than 20 hours ahead.  A setup without a field mask
locks the whole setup; with one, only the listed fields are locked, to the token's values.
"""

import copy
import re
from dataclasses import dataclass

from relay.errors import bad_request
from relay.gemini.timestamps import parse_timestamp
from relay.settings import MODEL_ID

DEFAULT_USES = 1
DEFAULT_EXPIRE_SECONDS = 30 * 60
DEFAULT_NEW_SESSION_SECONDS = 60
MAX_AHEAD_SECONDS = 20 * 3600
MAX_USES = 1_000_000
FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
# Fields that stay the session's own under a whole-setup lock: which conversation to resume.
UNLOCKED = ("sessionResumption", "session_resumption")


@dataclass(frozen=True)
class TokenSpec:
    """What a token allows: ``setup`` None means any setup; ``field_mask`` None with a setup locks all of it."""

    uses: int
    expire_time: float
    new_session_expire_time: float
    setup: dict | None
    field_mask: tuple | None


def token_request(body, now):
    """The :class:`TokenSpec` a token request asks for, or a 400 listing every field that is wrong."""
    violations = []
    uses = _field(body, "uses", "uses", DEFAULT_USES)
    if isinstance(uses, str) and uses.isdigit():
        uses = int(uses)  # proto JSON may quote integers
    if not isinstance(uses, int) or isinstance(uses, bool) or not 0 <= uses <= MAX_USES:
        violations.append(("uses", f"Must be a whole number from 0 (unlimited) to {MAX_USES}."))
    expire = _time(body, "expireTime", "expire_time", now + DEFAULT_EXPIRE_SECONDS, now, violations)
    new_session = _time(body, "newSessionExpireTime", "new_session_expire_time", now + DEFAULT_NEW_SESSION_SECONDS,
                        now, violations)
    setup = _setup(_field(body, "bidiGenerateContentSetup", "bidi_generate_content_setup", None), violations)
    field_mask = _field_mask(_field(body, "fieldMask", "field_mask", None), violations)
    if violations:
        raise bad_request(violations)
    return TokenSpec(uses, expire, min(new_session, expire), setup, field_mask)


def _field(body, camel, snake, default):
    return body.get(camel, body.get(snake, default))


def _time(body, camel, snake, default, now, violations):
    value = _field(body, camel, snake, None)
    if value is None:
        return default
    moment = parse_timestamp(value)
    if moment is None:
        violations.append((camel, "Must be an RFC 3339 time, e.g. 2026-05-01T12:00:00Z."))
    elif not now < moment < now + MAX_AHEAD_SECONDS:
        violations.append((camel, "Must be in the future and less than 20 hours ahead."))
    return moment


def _setup(value, violations):
    if value is None:
        return None
    if isinstance(value, dict) and set(value) == {"setup"} and isinstance(value["setup"], dict):
        value = value["setup"]  # the shape of a Live message, as the SDK builds it before unwrapping
    if not isinstance(value, dict):
        violations.append(("bidiGenerateContentSetup", "Must be a Live setup object."))
        return None
    model = value.get("model")
    if model is not None:
        bare = model.removeprefix("models/") if isinstance(model, str) else ""
        if not MODEL_ID.fullmatch(bare) or ".." in bare:
            violations.append(("bidiGenerateContentSetup.model",
                               "Must be a model id such as models/gemini-live-2.5-flash-preview."))
        else:
            value = {**value, "model": f"models/{bare}"}
    return value


def _field_mask(value, violations):
    if value is None:
        return None
    paths = value.split(",") if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
        violations.append(("fieldMask", "Must be a comma-separated list of field paths."))
        return None
    paths = tuple(path.strip() for path in paths if path.strip())
    bad = [path for path in paths if not FIELD_PATH.fullmatch(path)]
    if bad:
        violations.append(("fieldMask", f"{bad[0][:60]!r} is not a field path such as generationConfig.temperature."))
    return paths


def locked_model(spec):
    """The bare model id a token locks the session to, or None."""
    model = (spec.setup or {}).get("model")
    if spec.setup is None or model is None or (spec.field_mask is not None and "model" not in spec.field_mask):
        return None
    return model.removeprefix("models/")


def apply_constraints(setup, spec):
    """The setup a session runs with: the client's, with the token's locked fields put in their place."""
    if spec.setup is None:
        return setup
    if spec.field_mask is None:
        effective = copy.deepcopy(spec.setup)
        for name in UNLOCKED:
            if name in setup:
                effective[name] = setup[name]
        if "model" not in effective and "model" in setup:
            effective["model"] = setup["model"]
        return effective
    effective = copy.deepcopy(setup)
    for path in spec.field_mask:
        names = path.split(".")
        _remove(effective, names)
        found, value = _lookup(spec.setup, names)
        if found:
            _place(effective, names, copy.deepcopy(value))
    return effective


def snake(name):
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _spellings(name):
    return (name, snake(name))


def _lookup(mapping, names):
    for name in names:
        if not isinstance(mapping, dict):
            return False, None
        for spelling in _spellings(name):
            if spelling in mapping:
                mapping = mapping[spelling]
                break
        else:
            return False, None
    return True, mapping


def _remove(mapping, names):
    *parents, leaf = names
    found, parent = _lookup(mapping, parents)
    if found and isinstance(parent, dict):
        for spelling in _spellings(leaf):
            parent.pop(spelling, None)


def _place(mapping, names, value):
    *parents, leaf = names
    for name in parents:
        child = next((mapping[spelling] for spelling in _spellings(name) if isinstance(mapping.get(spelling), dict)),
                     None)
        if child is None:
            child = mapping[name] = {}
        mapping = child
    mapping[leaf] = value
