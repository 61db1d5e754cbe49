"""This package provides pure Gemini protocol knowledge (no Flask, no requests, no I/O): the table of
methods, the system parameters and headers relay passes on or refuses, Google's timestamps, and
byte-exact framing of Gemini's SSE and JSON-array streams."""
