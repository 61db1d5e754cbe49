"""Tests for relay.gemini.timestamps: Google's RFC 3339 times read and written."""

import pytest

from relay.gemini.timestamps import format_timestamp, parse_timestamp


@pytest.mark.parametrize("text", ["2024-07-11T18:07:47.635193Z", "2026-12-04T00:00:00.000000Z"])
def test_written_times_read_back(text):
    assert format_timestamp(parse_timestamp(text)) == text


@pytest.mark.parametrize("text", ["2024-13-11T18:07:47Z", "2024-07-11T25:07:47Z", "2024-07-11t18:07:47Z",
                                  "2024-07-11T18:07:47Z\n", "2024-07-11T18:07:47"])
def test_malformed_or_impossible_times_are_none(text):
    assert parse_timestamp(text) is None
