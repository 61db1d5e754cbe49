"""Tests for relay's upstream package (mirrors relay/upstream/)."""
