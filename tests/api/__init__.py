"""Tests for relay/api/ (blueprints, the OpenAPI document)."""
