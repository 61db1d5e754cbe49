"""This module provides Google's upload protocols on the fake upstream, with bodies streamed to disk.

Resumable (RESOURCES.md §1.2-1.4): ``POST /upload/{ver}/files`` with ``X-Goog-Upload-Protocol: resumable``
and ``X-Goog-Upload-Command: start`` opens a session owned by the caller's key and answers
``X-Goog-Upload-URL`` (the fake's own address, ``?upload_id=<opaque>&upload_protocol=resumable``).  Chunks
(``upload`` / ``upload, finalize``, with ``X-Goog-Upload-Offset``) may carry no key: the upload id is the
credential; a chunk that carries another key gets 403.  ``query`` answers ``X-Goog-Upload-Size-Received``,
``cancel`` ends the session.  A chunk is kept whole or not at all (a client that hangs up mid-chunk leaves
the session where it was, so ``query`` tells the client where to resume).
Multipart (§1.5): ``uploadType=multipart`` or ``X-Goog-Upload-Protocol: multipart``, one
``multipart/related`` body (JSON metadata part, then the bytes).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from urllib.parse import parse_qsl

from . import fixtures, plans
from .resources import Resources, StoredFile, UploadSession, new_id, permission_denied

UPLOAD_ROUTE = re.compile(rf"^/upload/{plans.VERSION}/files$")
FILE_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
GRANULARITY = 8 * 1024 * 1024
MAX_FILE_BYTES = 2 * 1024 ** 3
LOG_PREFIX = 4096  # streamed bodies keep this many bytes in the request log (length and sha256 stay exact)
TEXT_HEADERS = [("Content-Type", "text/plain; charset=utf-8")]


class Sink:
    """Where a streamed request body goes: counts and hashes it, keeps its first bytes for the log, drops it."""

    def __init__(self):
        self.length = 0
        self.hasher = hashlib.sha256()
        self.prefix = bytearray()

    def write(self, data: bytes) -> None:
        self.length += len(data)
        self.hasher.update(data)
        if len(self.prefix) < LOG_PREFIX:
            self.prefix += data[: LOG_PREFIX - len(self.prefix)]
        self._store(data)

    def _store(self, data: bytes) -> None:
        """Nothing: this body is only counted."""

    def finish(self) -> None:
        """Undo whatever the answer did not keep, release files."""


class ChunkSink(Sink):
    """Appends one resumable chunk to its session's file; ``commit`` keeps it, ``finish`` drops the rest."""

    def __init__(self, session: UploadSession):
        super().__init__()
        self.session = session
        self.content_hash = session.hasher.copy()
        self.handle = open(session.path, "r+b")
        self.handle.seek(session.received)
        self.committed = False
        session.busy = True

    def _store(self, data: bytes) -> None:
        self.handle.write(data)
        self.content_hash.update(data)

    def commit(self) -> None:
        self.session.received += self.length
        self.session.hasher = self.content_hash
        self.committed = True

    def finish(self) -> None:
        if not self.handle.closed:
            if not self.committed:
                self.handle.truncate(self.session.received)
            self.handle.close()
        self.session.busy = False


class SpoolSink(Sink):
    """Writes a whole multipart body to a file in the data directory, which the new File may adopt."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.handle = open(path, "wb")
        self.adopted = False

    def _store(self, data: bytes) -> None:
        self.handle.write(data)

    def finish(self) -> None:
        self.handle.close()
        if not self.adopted and os.path.exists(self.path):
            os.unlink(self.path)


def streams_body(request) -> bool:
    """Upload chunks and multipart uploads are streamed to disk; everything else is read whole."""
    if request.method != "POST" or not UPLOAD_ROUTE.match(request.path):
        return False
    return "upload_id" in _query(request) or _is_multipart(request)


def open_sink(resources: Resources, request) -> Sink:
    """The sink for a streamed body: the session's file when the chunk fits where the session is."""
    query = _query(request)
    session = resources.uploads.get(query.get("upload_id", ""))
    if session is not None and "upload" in _commands(request) and session.status == "active" \
            and not session.busy and _offset(request) == session.received:
        return ChunkSink(session)
    if "upload_id" not in query and _is_multipart(request):
        return SpoolSink(resources.new_path("multipart"))
    return Sink()


def log_body(entry: dict, sink: Sink) -> None:
    """Fill the request-log fields of a streamed body from its sink (length and sha256 exact, bytes cut)."""
    prefix = bytes(sink.prefix)
    truncated = sink.length > len(prefix)
    try:
        text = None if truncated else prefix.decode()
    except UnicodeDecodeError:
        text = None
    entry.update(body_len=sink.length, body_sha256=sink.hasher.hexdigest(), body_b64=base64.b64encode(prefix).decode(),
                 body_truncated=truncated, body_text=text)


def plan(resources: Resources, request, upstream_key: str | None) -> plans.Plan | None:
    """The answer to an upload route, or None for other routes."""
    match = UPLOAD_ROUTE.match(request.path)
    if not match:
        return None
    if request.method != "POST":
        return plans.error_plan(request, 404, fixtures.google_error(404, "Method not found.", "NOT_FOUND"))
    query = _query(request)
    if "upload_id" in query:
        return _chunk(resources, request, upstream_key, query["upload_id"])
    if _is_multipart(request):
        return _multipart(resources, request, upstream_key, match["version"])
    protocol = (request.header("x-goog-upload-protocol") or "").lower()
    if protocol == "resumable" and "start" in _commands(request):
        return _start(resources, request, upstream_key, match["version"])
    return _invalid(request, "Upload requests need X-Goog-Upload-Protocol: resumable (with X-Goog-Upload-Command: "
                             "start) or multipart.")


def _start(resources: Resources, request, owner: str, version: str) -> plans.Plan:
    try:
        payload = json.loads(request.body or b"{}")
    except ValueError:
        return _invalid(request, "Invalid JSON payload received.")
    metadata = payload.get("file") if isinstance(payload, dict) else None
    metadata = metadata if isinstance(metadata, dict) else {}
    file_id, problem = _requested_id(resources, metadata)
    declared = _int(request.header("x-goog-upload-header-content-length")
                    or metadata.get("sizeBytes") or metadata.get("size_bytes"))
    if problem is None and declared is not None and not 0 <= declared <= MAX_FILE_BYTES:
        problem = f"File size {declared} exceeds the maximum of {MAX_FILE_BYTES} bytes."
    if problem is not None:
        return _invalid(request, problem)
    upload_id = "ABPtcP" + base64.urlsafe_b64encode(os.urandom(48)).decode().rstrip("=")
    path = resources.new_path("upload")
    open(path, "wb").close()
    mime_type = (metadata.get("mimeType") or metadata.get("mime_type")
                 or request.header("x-goog-upload-header-content-type") or "application/octet-stream")
    display_name = metadata.get("displayName") or metadata.get("display_name")
    resources.uploads[upload_id] = UploadSession(upload_id, owner, version, path, mime_type, display_name,
                                                 file_id, declared)
    url = f"{resources.base_url}/upload/{version}/files?upload_id={upload_id}&upload_protocol=resumable"
    headers = TEXT_HEADERS + [("X-GUploader-UploadID", upload_id), ("x-goog-upload-status", "active"),
                              ("x-goog-upload-url", url), ("x-goog-upload-chunk-granularity", str(GRANULARITY))]
    return plans.Plan(200, body=b"", headers=headers)


def _chunk(resources: Resources, request, upstream_key: str | None, upload_id: str) -> plans.Plan:
    session = resources.uploads.get(upload_id)
    if session is None:
        return plans.Plan(404, body=b"Invalid upload_id: no such upload session.", headers=list(TEXT_HEADERS))
    commands, sink = _commands(request), request.sink or Sink()
    record = {"command": request.header("x-goog-upload-command"), "offset": _offset(request), "length": sink.length,
              "key": upstream_key, "sha256": sink.hasher.hexdigest(), "status": None}
    session.chunks.append(record)
    answer = _chunk_answer(resources, request, upstream_key, session, commands, sink)
    record["status"] = answer.status
    return answer


def _chunk_answer(resources, request, upstream_key, session: UploadSession, commands: set, sink: Sink) -> plans.Plan:
    if upstream_key is not None and upstream_key != session.owner:
        return plans.error_plan(request, 403, permission_denied("Upload", session.upload_id))
    if "cancel" in commands:
        session.status = "cancelled" if session.status == "active" else session.status
        return _status_plan(resources, session)
    if "query" in commands or session.status != "active":
        return _status_plan(resources, session)
    if "upload" in commands and not isinstance(sink, ChunkSink):
        return _offset_mismatch(session, _offset(request))
    if session.declared is not None and session.received + sink.length > session.declared:
        return _invalid(request, f"The upload exceeds its declared size of {session.declared} bytes.", session)
    if isinstance(sink, ChunkSink):
        sink.commit()
    if "finalize" not in commands:
        return _status_plan(resources, session)
    if session.declared is not None and session.received != session.declared:
        return _invalid(request, f"Finalized after {session.received} bytes, but the upload declared "
                                 f"{session.declared}.", session)
    session.status = "final"
    stored = resources.add_file(StoredFile(
        session.file_id or new_id(), session.owner, session.version, session.mime_type, session.path,
        session.received, session.hasher.hexdigest(), display_name=session.display_name))
    _start_processing(resources, stored)
    session.file_id = stored.file_id
    return _status_plan(resources, session)


def _status_plan(resources: Resources, session: UploadSession) -> plans.Plan:
    """What Google's upload server says about a session: active (with the size received), final, cancelled."""
    headers = [("X-GUploader-UploadID", session.upload_id), ("x-goog-upload-status", session.status)]
    if session.status == "final" and session.file_id in resources.files:
        body = fixtures.pretty_json({"file": resources.files[session.file_id].resource()}) + "\n"
        return plans.Plan(200, body=body.encode(), headers=plans.google_headers(plans.JSON_HEADERS) + headers)
    headers.append(("x-goog-upload-size-received", str(session.received)))
    return plans.Plan(200, body=b"", headers=TEXT_HEADERS + headers)


def _offset_mismatch(session: UploadSession, offset: int | None) -> plans.Plan:
    """Google's upload server refuses a chunk that does not start where the session is (503, plain text)."""
    if session.busy:
        message = "Invalid request.  Another chunk of this upload is still being received."
    else:
        message = (f"Invalid request.  According to the X-Goog-Upload-Offset header, the upload offset is "
                   f"{offset} byte(s), which does not match the already uploaded size of {session.received} byte(s).")
    headers = TEXT_HEADERS + [("X-GUploader-UploadID", session.upload_id), ("x-goog-upload-status", "active"),
                              ("x-goog-upload-size-received", str(session.received))]
    return plans.Plan(503, body=message.encode(), headers=headers)


def _multipart(resources: Resources, request, owner: str, version: str) -> plans.Plan:
    sink = request.sink
    if not isinstance(sink, SpoolSink):
        return _invalid(request, "Multipart upload body could not be read.")
    sink.handle.flush()
    try:
        metadata, part_type, start, end = _split_multipart(sink.path, _boundary(request))
    except ValueError as exc:
        return _invalid(request, f"Invalid multipart upload: {exc}")
    file_id, problem = _requested_id(resources, metadata)
    if problem is not None:
        return _invalid(request, problem)
    if end - start > MAX_FILE_BYTES:
        return _invalid(request, f"File size {end - start} exceeds the maximum of {MAX_FILE_BYTES} bytes.")
    sink.adopted = True
    mime_type = metadata.get("mimeType") or metadata.get("mime_type") or part_type or "application/octet-stream"
    stored = resources.add_file(StoredFile(
        file_id or new_id(), owner, version, mime_type, sink.path, end - start, _sha256_range(sink.path, start, end),
        offset=start, display_name=metadata.get("displayName") or metadata.get("display_name")))
    _start_processing(resources, stored)
    body = fixtures.pretty_json({"file": stored.resource()}) + "\n"
    return plans.unary(body.encode())


def _split_multipart(path: str, boundary: bytes | None) -> tuple[dict, str | None, int, int]:
    """(metadata, media part's Content-Type, start, end) of the bytes in a multipart/related body on disk."""
    if not boundary:
        raise ValueError("no boundary in Content-Type")
    delimiter = b"--" + boundary
    with open(path, "rb") as handle:
        head = handle.read(1024 * 1024)
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - len(delimiter) - 512))
        tail_start = handle.tell()
        tail = handle.read()
    parts = head.split(delimiter + b"\r\n", 2)
    if len(parts) < 3 or b"\r\n\r\n" not in parts[1] or b"\r\n\r\n" not in parts[2]:
        raise ValueError("expected a JSON part and a media part")
    try:
        metadata = json.loads(parts[1].split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n") or b"{}")
    except ValueError as exc:
        raise ValueError("the first part is not JSON") from exc
    metadata = metadata.get("file", metadata) if isinstance(metadata, dict) else {}
    media_headers, _ = parts[2].split(b"\r\n\r\n", 1)
    start = len(parts[0]) + len(parts[1]) + 2 * len(delimiter + b"\r\n") + len(media_headers) + 4
    closing = tail.rfind(b"\r\n" + delimiter + b"--")
    if closing < 0 or tail_start + closing < start:
        raise ValueError("no closing boundary")
    part_type = next((line.split(b":", 1)[1].strip().decode("latin-1") for line in media_headers.split(b"\r\n")
                      if line.lower().startswith(b"content-type:")), None)
    return (metadata if isinstance(metadata, dict) else {}), part_type, start, tail_start + closing


def _sha256_range(path: str, start: int, end: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(start)
        remaining = end - start
        while remaining > 0:
            piece = handle.read(min(remaining, 1024 * 1024))
            if not piece:
                break
            digest.update(piece)
            remaining -= len(piece)
    return digest.hexdigest()


def _start_processing(resources: Resources, stored: StoredFile) -> None:
    """Videos start PROCESSING, as Google's do (cookbook Video_REST), until enough files.get polls."""
    polls = int(resources.settings["video_processing_polls"])
    if stored.mime_type.startswith("video/") and polls > 0:
        stored.state, stored.polls_to_active = "PROCESSING", polls


def _requested_id(resources: Resources, metadata: dict) -> tuple[str | None, str | None]:
    """(file id the caller asked for or None, problem or None)."""
    name = metadata.get("name")
    if not name:
        return None, None
    file_id = str(name).removeprefix("files/")
    if not FILE_ID.match(file_id):
        return None, (f"Invalid file name {name!r}: ids are up to 40 lowercase letters, digits and dashes, "
                      "with no leading or trailing dash.")
    if file_id in resources.files:
        return None, f"A file named files/{file_id} already exists."
    return file_id, None


def _invalid(request, message: str, session: UploadSession | None = None) -> plans.Plan:
    answer = plans.error_plan(request, 400, fixtures.google_error(400, message, "INVALID_ARGUMENT"))
    if session is not None:
        answer.headers += [("X-GUploader-UploadID", session.upload_id), ("x-goog-upload-status", "active")]
    return answer


def _query(request) -> dict:
    return dict(parse_qsl(request.query, keep_blank_values=True))


def _commands(request) -> set:
    return {part.strip().lower() for part in (request.header("x-goog-upload-command") or "").split(",") if part.strip()}


def _offset(request) -> int | None:
    return _int(request.header("x-goog-upload-offset"))


def _int(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _is_multipart(request) -> bool:
    protocol = (request.header("x-goog-upload-protocol") or "").lower()
    upload_type = _query(request).get("uploadType", "").lower()
    content_type = (request.header("content-type") or "").lower()
    return protocol == "multipart" or upload_type == "multipart" or content_type.startswith("multipart/related")


def _boundary(request) -> bytes | None:
    match = re.search(r'boundary="?([^";]+)"?', request.header("content-type") or "")
    return match.group(1).encode() if match else None
