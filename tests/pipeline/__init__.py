"""Tests for relay's pipeline package (mirrors relay/pipeline/)."""
