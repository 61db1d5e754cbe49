"""This module provides Google's timestamps (RFC 3339, as Google writes them: ``2024-07-11T18:07:47.635193373Z``)
read into Unix seconds and written back: every expiry relay reads from an answer or a request goes through here."""

import re
from datetime import datetime, timezone

_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})")


def parse_timestamp(text):
    """Unix seconds of an RFC 3339 timestamp with any number of fractional digits, or None."""
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if not match:
        return None
    whole, fraction, zone = match.groups()
    try:
        moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    except ValueError:  # a well-formed string naming no real time (month 13, hour 25)
        return None
    return moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def format_timestamp(seconds):
    """RFC 3339 in UTC with microseconds, as Google writes them."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
