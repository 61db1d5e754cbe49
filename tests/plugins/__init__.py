"""Tests for relay's plugins package (mirrors relay/plugins/)."""
