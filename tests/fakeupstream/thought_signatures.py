"""This module provides the fake upstream's thought-signature check, as Gemini 3 models enforce it.

Google checks the current turn only — every content after the newest user content that holds ordinary
parts (not function responses) — and in it the first function call of each model step must carry a
``thoughtSignature``; otherwise it answers 400 "Function call `<name>` in the `<n>.` content block is
missing a `thought_signature`" (ai.google.dev/gemini-api/docs/thought-signatures).  Pure: no sockets.
"""
from __future__ import annotations

import json

from . import fixtures, plans

CHECKED_METHODS = ("generateContent", "streamGenerateContent")


def rejection(request) -> plans.Plan | None:
    """Google's 400 for a Gemini 3 request whose current turn lacks a signature, else None."""
    match = plans.METHOD_ROUTE.match(request.path)
    if not match or match["method"] not in CHECKED_METHODS or not match["model"].startswith("gemini-3"):
        return None
    try:
        contents = json.loads(request.body or b"{}").get("contents")
    except (ValueError, AttributeError):
        return None
    if not isinstance(contents, list):
        return None
    for index in range(_current_turn_start(contents), len(contents)):
        content = contents[index]
        if not isinstance(content, dict) or content.get("role") != "model":
            continue
        calls = [part for part in content.get("parts") or () if isinstance(part, dict) and "functionCall" in part]
        if calls and not calls[0].get("thoughtSignature"):
            name = calls[0]["functionCall"].get("name")
            message = f"Function call `{name}` in the `{index}.` content block is missing a `thought_signature`."
            return plans.error_plan(request, 400, fixtures.google_error(400, message, "INVALID_ARGUMENT"))
    return None


def _current_turn_start(contents: list) -> int:
    for index in range(len(contents) - 1, -1, -1):
        content = contents[index]
        if isinstance(content, dict) and content.get("role", "user") == "user":
            parts = content.get("parts") or ()
            if any(isinstance(part, dict) and "functionResponse" not in part for part in parts):
                return index + 1
    return 0
