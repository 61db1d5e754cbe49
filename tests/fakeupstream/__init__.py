"""This package provides a fake generativelanguage.googleapis.com that replays real recorded Gemini traffic.

Run it as a separate process from the repository root::

    python -m tests.fakeupstream --port 0 --port-file /tmp/fake.port

Control API (all JSON): ``GET /_fake/requests`` (request log), ``POST /_fake/reset``,
``POST /_fake/script`` (list of rules), ``GET /_fake/closed`` (streams whose client went away),
``GET /_fake/health``. See ``server.py`` for the rule vocabulary, fault modes included (resets before the
headers, bytes that are not HTTP, noise as a stream body, Google's HTML 502 page, a many-MB single-line
event). ``inprocess.py`` answers the same way inside a test process, as a ``responses`` callback.

Beyond replays it keeps owned resources like Google does, each belonging to the API key that created it:
Files with resumable and multipart uploads streamed to disk (uploads.py, files.py), Batch (batches.py),
Imagen ``:predict`` and Veo operations (operations.py), and ownership checks on generation calls and
cachedContents (references.py); another key gets Google's 403 PERMISSION_DENIED.  ``routes.py`` decides
each request and serves ``/_fake/resources``, ``/_fake/settings``, ``/_fake/progress`` and ``/_fake/files``.
``python -m tests.fakeupstream --help`` lists every route.
"""
