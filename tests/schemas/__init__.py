"""Tests for relay/schemas/ (request validation)."""
