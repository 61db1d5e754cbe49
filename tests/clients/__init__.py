"""Tests for relay's clients package (mirrors relay/clients/)."""
