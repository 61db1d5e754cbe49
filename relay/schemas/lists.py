"""This module provides the fields that keep long bodies cheap to validate and the loop shared meanwhile.

:class:`ItemList` validates a list item by item: items in a plain shape pass without marshmallow, items
the run's memory has seen pass again, the loop gets a turn whenever the run's slice is used up, and the
first :data:`MAX_ITEM_ERRORS` invalid items are enough.  :class:`Remembered` is a nested object checked
once per app.  Pure: no Flask, no requests.
"""

from marshmallow import ValidationError, fields

from relay.schemas.run import ValidationMemory, current_run

# A part carrying a string longer than this is validated every time instead: serialising a 20 MB
# inlineData part to key it costs more than checking it (the base64 check is one C-speed pass).
MEMO_MAX_STRING = 256 * 1024


def _memo_key(kind, value):
    """The memory's key for ``value`` as a ``kind`` (bytes); None when it is not worth remembering."""
    return None if _has_large_part(value) else ValidationMemory.key(kind, value)


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


class Remembered(fields.Nested):
    """A nested object validated once per app: a value that passed before is not checked again."""

    def _deserialize(self, value, attr, data, partial=None, **kwargs):
        memory = current_run().memory
        key = None if memory is None else _memo_key(self.nested.__name__.encode(), value)
        if key is not None and key in memory:
            return value
        result = super()._deserialize(value, attr, data, partial=partial, **kwargs)
        if key is not None:
            memory.add(key)
        return result


# A list with this many invalid items is not checked further: the caller learns enough, and a body of
# 100,000 bad turns costs no more than one of 100.
MAX_ITEM_ERRORS = 100


class ItemList(fields.List):
    """A list validated item by item, letting other greenlets run between items when it takes long.

    Items in a ``plain`` shape (a predicate) pass without marshmallow.  With ``remember``, other items the
    schema passed before (per app) are skipped: a 20-turn chat cost 1 ms a request before, 18 µs once seen.
    """

    def __init__(self, inner, plain=None, remember=False, **kwargs):
        super().__init__(inner, **kwargs)
        self.plain = plain
        self.remember = remember

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise self.make_error("invalid")
        run, errors = current_run(), {}
        memory, tick, plain = run.memory if self.remember else None, run.pacer.tick, self.plain
        kind = self.inner.nested.__name__.encode()
        for index, item in enumerate(value):
            tick()
            if plain is not None and plain(item):
                continue
            key = None if memory is None else _memo_key(kind, item)
            if key is not None and key in memory:
                continue
            try:
                self.inner.deserialize(item, **kwargs)
            except ValidationError as error:
                errors[index] = error.messages
                if len(errors) == MAX_ITEM_ERRORS and index + 1 < len(value):
                    errors["_schema"] = [f"Only the first {MAX_ITEM_ERRORS} invalid items are reported."]
                    break
                continue
            if key is not None:
                memory.add(key)
        if errors:
            raise ValidationError(errors)
        return value
