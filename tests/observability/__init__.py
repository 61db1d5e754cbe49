"""Tests for relay's observability package (mirrors relay/observability/)."""
