"""This module provides the fake upstream's owned resources: files, upload sessions, batches and operations.

Every resource remembers the API key that created it (its *owner*), as a Google project does, and the
route modules (uploads, files, batches, operations, references) answer any other key with Google's 403.
Bytes live in files under a data directory, never in memory.  Pure bookkeeping: no sockets.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import random
import secrets
import shutil
import string
import tempfile
import time
import weakref
from dataclasses import dataclass, field

from . import fixtures

GOOGLE_BASE = "https://generativelanguage.googleapis.com"
TYPE_PREFIX = "type.googleapis.com/google.ai.generativelanguage."
ID_ALPHABET = string.ascii_lowercase + string.digits
FILE_LIFETIME_S = 48 * 3600
DEFAULT_SETTINGS = {
    "batch_polls": 2,  # GETs of a batch until it succeeds (the first GET shows RUNNING)
    "batch_after_s": None,  # or seconds after creation, whichever comes first
    "operation_polls": 2,  # GETs of a Veo operation until it is done
    "operation_after_s": None,
    "video_processing_polls": 1,  # GETs of an uploaded video file until PROCESSING becomes ACTIVE
    "video_bytes": 256 * 1024,  # size of each generated video file
    "page_size": 10,  # default pageSize of files.list and batches.list (at most 100)
}


def new_id(length: int = 12) -> str:
    """A Google-looking resource id: lowercase letters and digits (what the SDK's URI parser accepts)."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


def rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e6):06d}Z"


def permission_denied(kind: str, resource_id: str) -> bytes:
    """Google's answer to a resource of another project (or one that does not exist): RESOURCES.md §1.7."""
    return fixtures.google_error(
        403, f"You do not have permission to access the {kind} {resource_id} or it may not exist.",
        "PERMISSION_DENIED")


@dataclass
class StoredFile:
    """A File resource; its bytes are ``size`` bytes at ``offset`` in ``path``."""

    file_id: str
    owner: str
    version: str
    mime_type: str
    path: str
    size: int
    sha256: str  # hex digest of the bytes
    offset: int = 0
    display_name: str | None = None
    source: str = "UPLOADED"
    state: str = "ACTIVE"
    polls_to_active: int = 0
    created: float = field(default_factory=time.time)
    updated: float = 0.0

    @property
    def name(self) -> str:
        return f"files/{self.file_id}"

    def resource(self) -> dict:
        """The File as Google writes it (field order and formats as recorded: cookbook Video_REST)."""
        body = {"name": self.name}
        if self.display_name:
            body["displayName"] = self.display_name
        updated = self.updated or self.created
        body.update(
            mimeType=self.mime_type, sizeBytes=str(self.size), createTime=rfc3339(self.created),
            updateTime=rfc3339(updated), expirationTime=rfc3339(self.created + FILE_LIFETIME_S),
            sha256Hash=base64.b64encode(self.sha256.encode()).decode(),
            uri=f"{GOOGLE_BASE}/{self.version}/{self.name}")
        if self.source == "GENERATED":
            body["downloadUri"] = f"{GOOGLE_BASE}/{self.version}/{self.name}:download?alt=media"
        body.update(state=self.state, source=self.source)
        return body


@dataclass
class UploadSession:
    """A resumable upload: the owner, the declared size and what has been committed so far."""

    upload_id: str
    owner: str
    version: str
    path: str
    mime_type: str
    display_name: str | None
    file_id: str | None
    declared: int | None
    received: int = 0
    hasher: object = field(default_factory=hashlib.sha256)
    status: str = "active"  # active | final | cancelled
    busy: bool = False
    chunks: list = field(default_factory=list)  # {command, offset, length, key, sha256, status}


@dataclass
class Batch:
    """A batch job: inline requests or an input file, its state and (once done) its output."""

    batch_id: str
    owner: str
    version: str
    model: str
    kind: str  # "generate" | "embed"
    display_name: str | None
    requests: list  # the inline requests, or the input file's lines
    input_file: str | None = None
    state: str = "BATCH_STATE_PENDING"
    polls: int = 0
    created: float = field(default_factory=time.time)
    updated: float = 0.0
    ended: float | None = None
    output: dict | None = None
    error: dict | None = None

    @property
    def name(self) -> str:
        return f"batches/{self.batch_id}"


@dataclass
class Operation:
    """A long-running Veo operation ``models/{model}/operations/{id}``."""

    name: str
    owner: str
    version: str
    sample_count: int
    polls: int = 0
    created: float = field(default_factory=time.time)
    done: bool = False
    response: dict | None = None
    error: dict | None = None


class Resources:
    """Every owned resource of the fake, its settings and the directory holding uploaded bytes."""

    def __init__(self, data_dir: str | None = None, base_url: str = "http://127.0.0.1"):
        self.base_url = base_url  # where X-Goog-Upload-URL points: the fake's own address
        self._data_dir = data_dir
        self._created_dir: str | None = None
        self.files: dict[str, StoredFile] = {}
        self.uploads: dict[str, UploadSession] = {}
        self.batches: dict[str, Batch] = {}
        self.operations: dict[str, Operation] = {}
        self.cache_owners: dict[str, str] = {}
        self.settings = dict(DEFAULT_SETTINGS)

    @property
    def data_dir(self) -> str:
        if self._data_dir is None:
            self._data_dir = self._created_dir = tempfile.mkdtemp(prefix="fakeupstream-")
            weakref.finalize(self, shutil.rmtree, self._created_dir, True)
        os.makedirs(self._data_dir, exist_ok=True)
        return self._data_dir

    def new_path(self, prefix: str) -> str:
        return os.path.join(self.data_dir, f"{prefix}-{secrets.token_hex(8)}")

    def reset(self) -> None:
        for table in (self.files, self.uploads, self.batches, self.operations, self.cache_owners):
            table.clear()
        self.settings = dict(DEFAULT_SETTINGS)
        if self._data_dir is not None and os.path.isdir(self._data_dir):
            for entry in os.scandir(self._data_dir):
                if entry.is_file():
                    os.unlink(entry.path)

    def owned(self, table: dict, resource_id: str, key: str | None):
        """The resource if ``key`` owns it; None if it is missing or another key's (Google says 403 for both)."""
        found = table.get(resource_id)
        return found if found is not None and found.owner == key else None

    def add_file(self, stored: StoredFile) -> StoredFile:
        self.files[stored.file_id] = stored
        return stored

    def generated_file(self, owner: str, version: str, size: int, mime_type: str, display_name: str | None = None,
                       content: bytes | None = None) -> StoredFile:
        """A GENERATED (downloadable) file of ``content``, or of ``size`` deterministic bytes written in pieces."""
        path = self.new_path("generated")
        digest = hashlib.sha256()
        with open(path, "wb") as handle:
            for piece in ([content] if content is not None else _pattern(size)):
                handle.write(piece)
                digest.update(piece)
        size = len(content) if content is not None else size
        return self.add_file(StoredFile(new_id(), owner, version, mime_type, path, size, digest.hexdigest(),
                                        display_name=display_name, source="GENERATED"))

    def delete_file(self, file_id: str) -> None:
        stored = self.files.pop(file_id, None)
        still_used = stored is not None and any(other.path == stored.path for other in self.files.values())
        if stored is not None and not still_used and os.path.exists(stored.path):
            os.unlink(stored.path)


def _pattern(size: int, piece_size: int = 1024 * 1024):
    """``size`` deterministic pseudo-random bytes, one piece at a time (a 1 GB file never sits in memory)."""
    block = random.Random(size).randbytes(min(size, piece_size))
    remaining = size
    while remaining > 0:
        yield block[:remaining]
        remaining -= len(block)


def paginate(items: list, query: dict, default_size: int) -> tuple[list, str | None]:
    """One page of ``items`` for Google's ``pageSize``/``pageToken``; raises ValueError for a bad token."""
    size = int(query.get("pageSize") or query.get("page_size") or default_size)
    size = min(max(size, 1), 100) if size > 0 else default_size
    token = query.get("pageToken") or query.get("page_token")
    start = 0
    if token:
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("offset:"))
        except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
            raise ValueError("Invalid page token.") from exc
    end = start + size
    next_token = base64.urlsafe_b64encode(f"offset:{end}".encode()).decode() if end < len(items) else None
    return items[start:end], next_token
