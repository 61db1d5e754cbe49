"""This module provides the command line: `python -m tests.fakeupstream --port 0 --port-file PATH`."""
import argparse
import asyncio
import signal
import sys

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

SERVES = """\
what it serves ({ver} is v1, v1beta or v1alpha; every route needs x-goog-api-key except upload chunks):
  models           POST /{ver}/models/{m}:generateContent | :streamGenerateContent[?alt=sse] | :countTokens
                   | :embedContent | :batchEmbedContents   (recorded answers; a fileData.fileUri or
                   cachedContent of another key -> 403 PERMISSION_DENIED)
                   GET  /{ver}/models, /{ver}/models/{m}
  cachedContents   POST|GET /{ver}/cachedContents, GET|PATCH|DELETE /{ver}/cachedContents/{id} (per key)
  uploads          POST /upload/{ver}/files  X-Goog-Upload-Protocol: resumable + Command: start
                     -> X-Goog-Upload-URL http://HOST:PORT/upload/{ver}/files?upload_id=...&upload_protocol=resumable
                   POST <upload URL>  Command: upload | upload, finalize | query | cancel, X-Goog-Upload-Offset
                   POST /upload/{ver}/files?uploadType=multipart  (multipart/related: JSON + bytes)
                   bodies are streamed to --data-dir, never held in memory
  files            GET /{ver}/files[?pageSize=&pageToken=], GET|DELETE /{ver}/files/{id},
                   GET [/download]/{ver}/files/{id}:download?alt=media  (streamed from disk)
  batches          POST /{ver}/models/{m}:batchGenerateContent | :asyncBatchEmbedContent
                   GET /{ver}/batches, GET|DELETE /{ver}/batches/{id}, POST /{ver}/batches/{id}:cancel
  media            POST /{ver}/models/{m}:predict (Imagen), :predictLongRunning (Veo)
                   GET  /{ver}/models/{m}/operations/{id}
  ownership        each file, upload, batch, operation and cache belongs to the key that created it;
                   another key gets 403 PERMISSION_DENIED "You do not have permission to access the File <id>
                   or it may not exist."

control API (JSON, not logged):
  GET /_fake/requests[?since=ID]   request log (key, headers, body sha256/length, outcome, ...)
  POST /_fake/script               scripted rules (statuses, faults, timing); GET shows them
  POST /_fake/reset                clears log, rules, caches and every owned resource
  GET /_fake/closed                responses whose client went away
  GET /_fake/resources[?key=K]     files (owner, sha256), uploads (chunks, offsets, keys), batches, operations
  GET|POST /_fake/settings         batch_polls, batch_after_s, operation_polls, operation_after_s,
                                   video_processing_polls, video_bytes, page_size
  POST /_fake/progress             {"name": "batches/ID", "state": "SUCCEEDED"} | {"name": OPERATION}
                                   | {"name": "files/ID", "state": "ACTIVE"}: move a resource on now
  POST /_fake/files                {"key", "size_bytes", "mime_type"}: a downloadable GENERATED file
  GET /_fake/health                {"ok": true, "pid": ...}
"""



def _terminate(signum, frame) -> None:
    """SIGTERM ends the process like Ctrl-C, so the data directory is cleaned up."""
    raise KeyboardInterrupt



def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakeupstream", description=DESCRIPTION, epilog=SERVES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (see --port-file)")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--log-body-max", type=int, default=1024 * 1024,
                        help="request bodies longer than this are logged truncated (length + sha256 stay exact)")
    parser.add_argument("--data-dir", help="where uploaded and generated file bytes go (default: a new temporary "
                                           "directory, removed at exit)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        asyncio.run(serve(args.host, args.port, args.port_file, args.log_body_max, args.data_dir))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
