"""This package provides a fake generativelanguage.googleapis.com that replays real recorded Gemini traffic.

Run it as a separate process from the repository root::

    python -m tests.fakeupstream --port 0 --port-file /tmp/fake.port

Control API (all JSON): ``GET /_fake/requests`` (request log), ``POST /_fake/reset``,
``POST /_fake/script`` (list of rules), ``GET /_fake/closed`` (streams whose client went away),
``GET /_fake/health``. See ``server.py`` for the rule vocabulary.
"""
