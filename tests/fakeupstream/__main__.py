"""This module provides the command line: `python -m tests.fakeupstream --port 0 --port-file PATH`."""
import argparse
import asyncio

from .server import serve

DESCRIPTION = """\
A fake generativelanguage.googleapis.com for trying relay and for its tests: it answers the Gemini API
with recordings of Google's real responses, so the same request always gets the same answer. Any
x-goog-api-key is accepted (none gets Google's 400 API_KEY_INVALID); no Google account is involved.

It serves, under /v1beta, /v1 and /v1alpha:
  POST models/{model}:generateContent         a recorded text answer
  POST models/{model}:streamGenerateContent   a recorded stream: SSE with ?alt=sse, else a JSON array
  POST models/{model}:countTokens             a recorded token count
  POST models/{model}:embedContent, :batchEmbedContents   embeddings (one per request in a batch)
  GET  models, models/{model}                 a recorded model list, one model
  GET, POST, PATCH, DELETE cachedContents[/{id}]   context caches, kept in memory
A model named "nope" or "missing-..." is Google's 404.

Control API (JSON, not logged): GET /_fake/requests (what it received), POST /_fake/reset,
POST /_fake/script (rules: statuses, 429 with RetryInfo, delays, cut streams, garbage bytes; see
tests/fakeupstream/server.py), GET /_fake/closed, GET /_fake/health.

Try relay with it (the README's "Try it without a Google key"):
  python -m tests.fakeupstream --port 9100
  RELAY_UPSTREAM_URL=http://127.0.0.1:9100 RELAY_UPSTREAM_KEYS=fake-google-key \\
      RELAY_API_KEYS=sk-relay-try-it PORT=8080 python -m relay
"""


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakeupstream", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (see --port-file)")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--log-body-max", type=int, default=1024 * 1024,
                        help="request bodies longer than this are logged truncated (length + sha256 stay exact)")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.host, args.port, args.port_file, args.log_body_max))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
