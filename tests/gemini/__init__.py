"""Tests for relay's gemini package (mirrors relay/gemini/)."""
