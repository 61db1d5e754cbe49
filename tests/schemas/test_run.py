"""Tests for what a validation run carries: the app's exact, bounded memory; plain shapes; sharing the loop."""

import time

import gevent
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import InvalidArgument
from relay.schemas import ValidationMemory, gemini, validate_body
from relay.schemas.base import snake_case
from relay.schemas.run import DIGEST_SIZE, SMALL_JSON


def odd_turn(text):
    """A valid turn not in a plain shape (marshmallow reads the string "true" as a boolean): the schema
    validates it, so the memory keeps it."""
    return {"role": "user", "parts": [{"text": text, "thought": "true"}]}


def fields_of(error):
    return {violation["field"] for violation in error.to_dict()["error"]["details"][0]["fieldViolations"]}


# -- the memory -----------------------------------------------------------------------------------------


def test_a_turn_validated_by_the_schema_is_remembered_and_skipped_the_next_time(monkeypatch):
    memory = ValidationMemory()
    body = {"contents": [odd_turn("first"), odd_turn("second")]}
    validate_body("generateContent", body, memory=memory)
    assert len(memory) == 2

    calls = []
    original = gemini.Content._deserialize
    monkeypatch.setattr(gemini.Content, "_deserialize",
                        lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    validate_body("generateContent", {"contents": [*body["contents"], odd_turn("third")]}, memory=memory)
    assert len(calls) == 1, "only the new turn went through the schema"
    assert len(memory) == 3


def test_keys_are_exact_bytes_or_a_128_bit_digest():
    short = {"text": "hi"}
    assert ValidationMemory.key(b"Part", short) == b"Part=" + orjson.dumps(short)
    long_value = {"text": "x" * 500}
    key = ValidationMemory.key(b"Part", long_value)
    assert key.startswith(b"Part#") and len(key) == len(b"Part#") + DIGEST_SIZE
    assert ValidationMemory.key(b"Part", {"text": "x" * 499 + "y"}) != key
    assert ValidationMemory.key(b"Content", long_value) != key, "the kind is part of the key"
    assert len(orjson.dumps(short)) <= SMALL_JSON < len(orjson.dumps(long_value))
    assert ValidationMemory.key(b"Part", {"n": 2**70}) is None, "what JSON cannot carry is never remembered"


def test_a_remembered_key_never_vouches_for_a_value_with_the_same_hash(monkeypatch):
    """The old memory kept hash() values: two objects whose 64-bit hashes collide were one.  Keys are exact now."""
    memory = ValidationMemory()
    validate_body("generateContent", {"contents": [odd_turn("good")]}, memory=memory)
    monkeypatch.setattr("builtins.hash", lambda value: 42)  # every value "collides"
    system_turn = {"role": "system", "parts": [{"text": "good", "thought": "true"}]}
    with pytest.raises(InvalidArgument) as raised:
        validate_body("generateContent", {"contents": [system_turn]}, memory=memory)
    assert fields_of(raised.value) == {"contents[0].role"}


def test_the_memory_is_least_recently_used_and_bounded_by_entries_and_bytes():
    memory = ValidationMemory(max_entries=4, max_bytes=10**9)
    for index in range(4):
        memory.add(b"k%d" % index)
    assert b"k0" in memory  # used: now the most recent
    memory.add(b"k4")
    assert len(memory) == 4 and b"k0" in memory and b"k1" not in memory

    by_bytes = ValidationMemory(max_entries=10**6, max_bytes=1000)
    for index in range(100):
        by_bytes.add(b"%064d" % index)
        assert by_bytes.nbytes <= 1000
    assert 0 < len(by_bytes) < 100 and b"%064d" % 99 in by_bytes


def test_each_app_has_its_own_memory(app_factory, mock_upstream):
    mock_upstream.post("http://upstream.test/v1beta/models/gemini-2.5-flash:generateContent", body=b"{}")
    first, second = app_factory({"RELAY_API_KEYS": "k-first"}), app_factory({"RELAY_API_KEYS": "k-second"})
    response = first.test_client().post("/v1beta/models/gemini-2.5-flash:generateContent",
                                        headers={"x-goog-api-key": "k-first"}, json={"contents": [odd_turn("remember me")]})
    assert response.status_code == 200, response.data
    assert len(first.extensions["relay"].validated) == 1
    assert len(second.extensions["relay"].validated) == 0


# -- plain shapes -------------------------------------------------------------------------------------


def test_plain_parts_know_every_field_the_part_schema_declares():
    declared = {field.data_key or name for name, field in gemini.Part().fields.items()} | set(gemini.Part.SHAPES)
    assert set(gemini._PLAIN_PART_CHECKS) == declared | {snake_case(name) for name in declared}


B64 = "QUJD"
anything = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                        lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=5), inner, max_size=2),
                        max_leaves=4)
strings = st.sampled_from(["", "x", B64, B64 + "=", "QUI=", "data:,x", "not base64!", "Q", "\u00e9"])
blobs = st.dictionaries(st.sampled_from(["mimeType", "mime_type", "data", "other"]), strings | anything, max_size=3)
files = st.dictionaries(st.sampled_from(["fileUri", "file_uri", "mimeType", "mime_type", "other"]), strings | anything,
                        max_size=3)
part_values = {"text": strings | anything, "thought": st.booleans() | strings | anything,
               "thoughtSignature": strings | anything, "inlineData": blobs | anything, "fileData": files | anything}
part_names = sorted({*gemini._PLAIN_PART_CHECKS, "videoMetadata", "unknown"})
camel_names = {snake_case(name): name for name in gemini._PLAIN_PART_CHECKS}


@st.composite
def parts(draw):
    names = draw(st.lists(st.sampled_from(part_names), max_size=4, unique=True))
    return {name: draw(part_values.get(camel_names.get(name, name), anything)) for name in names}


turns = st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "model", "system"]) | anything,
                                            "parts": st.lists(parts(), max_size=3) | anything, "other": anything})


@settings(max_examples=1500, deadline=None)
@given(part=parts())
def test_a_plain_part_is_one_the_schema_accepts(part):
    if gemini.plain_part(part):
        assert gemini.Part().validate(part) == {}, part


@settings(max_examples=1500, deadline=None)
@given(turn=turns)
def test_a_plain_turn_is_one_the_schema_accepts(turn):
    if gemini.plain_content(turn):
        assert gemini.Content().validate(turn) == {}, turn


def test_common_turns_are_plain():
    image = {"inlineData": {"mimeType": "image/png", "data": B64}}
    assert gemini.plain_content({"role": "user", "parts": [{"text": "hi"}, image]})
    assert gemini.plain_content({"role": "model", "parts": [{"functionCall": {"name": "f"}, "thoughtSignature": "c2ln"}]})
    video = {"file_data": {"file_uri": "files/a", "mime_type": "video/mp4"}, "videoMetadata": {}}
    assert gemini.plain_content({"parts": [video]})
    assert not gemini.plain_content({"role": "system", "parts": [{"text": "hi"}]})
    assert not gemini.plain_content({"role": "user", "parts": [{"thought": True}]}), "a part must carry data"


# -- bounded cost, and the loop shared ----------------------------------------------------------------------


def test_a_list_with_many_invalid_items_reports_the_first_hundred():
    body = {"contents": [{"role": "system", "parts": [{"text": f"t{index}"}]} for index in range(150)]}
    with pytest.raises(InvalidArgument) as raised:
        validate_body("generateContent", body)
    fields = fields_of(raised.value)
    assert {f"contents[{index}].role" for index in range(100)} < fields and "contents[100].role" not in fields
    assert "contents" in fields


def test_a_long_validation_pauses_every_few_milliseconds():
    body = {"contents": [odd_turn(f"turn {index}") for index in range(6000)]}
    pauses = []
    started = time.perf_counter()
    validate_body("generateContent", body, memory=ValidationMemory(), pause=lambda: pauses.append(time.perf_counter()))
    ended = time.perf_counter()
    gaps = [later - earlier for earlier, later in zip([started, *pauses], [*pauses, ended])]
    assert ended - started > 0.05 and len(pauses) >= 10
    assert max(gaps) < 0.05, f"held the loop {max(gaps) * 1000:.0f} ms at once"


def test_a_large_inline_data_is_checked_a_slice_at_a_time():
    pauses = []
    image = {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "QUJD" * (6 * 1024 * 1024)}}]}

    def pause():
        pauses.append(1)
        time.sleep(0.003)  # so that the next slice starts a new time slice too

    validate_body("generateContent", {"contents": [image]}, pause=pause)
    assert len(pauses) >= 5


def test_concurrent_runs_in_greenlets_keep_their_own_memory():
    first, second = ValidationMemory(), ValidationMemory()

    def validate(memory, label):
        body = {"contents": [odd_turn(f"{label} {index}") for index in range(400)]}
        validate_body("generateContent", body, memory=memory, pause=lambda: gevent.sleep(0))

    gevent.joinall([gevent.spawn(validate, first, "first"), gevent.spawn(validate, second, "second")], raise_error=True)
    assert len(first) == len(second) == 400
    assert not set(first._keys) & set(second._keys)
