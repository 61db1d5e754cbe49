"""This module provides the Files API's upload route, ``POST /upload/{version}/files``: Google's resumable
protocol and its multipart form, every byte streamed through (relay.pipeline.uploads).

Resumable: the ``start`` call goes to the upstream key the caller's uploads stick to
(:meth:`Pool.sticky_target`), and the ``X-Goog-Upload-URL`` Google answers is replaced by relay's own,
``{RELAY_PUBLIC_URL}/upload/{version}/files?upload_id=<id>&upload_protocol=resumable``.  ``<id>`` is
unguessable (``secrets.token_urlsafe``); its record (kind ``uploads``) holds the upstream session's path,
its key, the client and the hash of the client's key, for :data:`UPLOAD_TTL`.  The caller never sees the
upstream URL, its session id or its key.  The chunks that follow (``upload``, ``upload, finalize``,
``query``, ``cancel``) often carry no key — the upload id is the credential, as Google's own is — and go to
the session's key; a key they do carry must be the same client's (403), and a client key revoked or expired
since the start ends the upload (401).  Unknown or expired ids get 404.  The File in the final answer is
recorded as the client's, under that key.  Multipart: one request, streamed to the sticky key.

Without ``RELAY_PUBLIC_URL`` relay names the address the caller's connection arrived at (its own socket's
local address and port, and the request's scheme), never a ``Host`` header: right when callers reach relay
directly, wrong behind a proxy, which is why the README asks for the setting there.
"""

import hmac
import secrets
import time
from urllib.parse import parse_qs, urlencode, urlsplit

from flask import Blueprint, request

from relay import ownership
from relay.api.lifecycle import respond
from relay.api.routing import VERSION
from relay.clients.auth import Client, hash_key, presented_key
from relay.errors import InvalidArgument, NotFound, PayloadTooLarge, PermissionDenied, Unavailable
from relay.pipeline import uploads
from relay.pipeline.body import parse_json, read_body
from relay.pipeline.forward import forward, plan_targets
from relay.pipeline.request import begin
from relay.store import StoreError
from relay.upstream.pool import Target

bp = Blueprint("uploads", __name__)

UPLOAD_TTL = 24 * 3600.0  # a resumable upload must finish within a day (files themselves live 48 h)
UPLOADS = "uploads"


@bp.post(f"/upload/{VERSION}/files")
def upload(version):
    if "upload_id" in request.args:
        return respond(chunk(version))
    protocol = (uploads.environ_header(request.environ, "X-Goog-Upload-Protocol") or "").strip().lower()
    if protocol == "multipart" or request.args.get("uploadType") == "multipart":
        return respond(multipart(version))
    return respond(start(version))


def start(version):
    """A resumable upload's ``start``: relayed to the sticky key, answered with relay's own upload URL."""
    services, call = begin(version, "files.upload", resource="files")
    call.prefix = "/upload"
    headers = uploads.protocol_headers(request.environ)
    if headers.get("X-Goog-Upload-Protocol", "").lower() != "resumable" or uploads.commands(headers) != {"start"}:
        raise InvalidArgument("An upload starts with X-Goog-Upload-Protocol: resumable and X-Goog-Upload-Command: "
                              "start, or is one multipart request (uploadType=multipart).")
    declared = _declared_size(headers, services.settings.max_upload_bytes)
    raw = read_body()
    check_metadata(parse_json(raw) if raw.strip() else {})
    base_url = public_base_url(services.settings, request.environ)
    stick(services, call)
    call.headers.update(headers)
    call.body = raw
    reply = forward(call, services)
    if reply.status == 200:
        reply.headers = session_headers(services, call, reply.headers, version, declared, base_url)
    else:
        reply.headers = [(name, value) for name, value in reply.headers
                         if name.lower() not in uploads.SESSION_HEADERS]
    return reply


def chunk(version):
    """Bytes (or a ``query``/``cancel``) for a resumable upload: streamed to the key that owns the session."""
    services, call = begin(version, "files.uploadChunk", resource="files", authenticate=False)
    upload_id = request.args.get("upload_id", "")
    record = session_record(services, upload_id, len(request.args.getlist("upload_id")))
    call.client = session_client(services, record, presented_key(request.headers, request.args))
    target = session_target(services, record)
    headers = uploads.protocol_headers(request.environ)
    words = uploads.commands(headers)
    body, length = b"", 0
    if words & {"upload", "finalize"} and not words & {"start", "query", "cancel"}:
        length = _chunk_length(services.settings, headers, record)
        body = uploads.caller_body(request.environ["wsgi.input"], length, services.settings.read_timeout)
    elif words not in ({"query"}, {"cancel"}):
        raise InvalidArgument("A chunk's X-Goog-Upload-Command is one of: upload | upload, finalize | finalize | "
                              "query | cancel.")
    session = record["resource"]
    headers = {**call.headers, **headers, "Content-Type": _content_type("application/octet-stream")}
    response = uploads.send_once(call, services, target, session["path"], headers, body, length)
    reply, answer = uploads.relay_answer(call, services, response, hidden=_session_secrets(session["path"]))
    if reply.status == 200 and "final" in (response.headers.get("x-goog-upload-status") or ""):
        record_file(services, call, answer)
    return reply


def multipart(version):
    """A whole upload in one ``multipart/related`` request, streamed to the sticky key."""
    services, call = begin(version, "files.upload", resource="files")
    content_type = _content_type(None)
    if content_type is None or not content_type.lower().startswith("multipart/related"):
        raise InvalidArgument("A multipart upload's Content-Type is multipart/related; boundary=...")
    length = uploads.body_length(request.environ, services.settings.max_upload_bytes)
    stick(services, call)
    target = plan_targets(call, services)[0]  # the sticky key (429 while it rests), or the caller's own
    headers = {**call.headers, **uploads.protocol_headers(request.environ), "Content-Type": content_type}
    body = uploads.caller_body(request.environ["wsgi.input"], length, services.settings.read_timeout)
    path = f"/upload/{version}/files" + (f"?{urlencode(call.query)}" if call.query else "")
    response = uploads.send_once(call, services, target, path, headers, body, length)
    reply, answer = uploads.relay_answer(call, services, response)
    if reply.status == 200:
        record_file(services, call, answer)
    return reply


# -- the session record ------------------------------------------------------------------------------------


def stick(services, call):
    """Managed mode: pin the upload to the key this client's uploads stick to (429/503 when it cannot be used)."""
    sticky = services.pool.sticky_target(call.client.name)
    if sticky is not None:
        call.pinned_key_id = sticky.key_id


def session_headers(services, call, headers, version, declared, base_url):
    """The start answer's headers with Google's upload URL replaced by relay's, after recording the session."""
    upstream_url = next((value for name, value in headers if name.lower() == "x-goog-upload-url"), None)
    base = call.target.upstream.url + "/"
    if upstream_url is None or not upstream_url.startswith(base) or "upload_id=" not in upstream_url:
        raise Unavailable("The upstream answered the upload's start without an upload URL relay can use.")
    path = upstream_url[len(base) - 1:]
    upload_id = secrets.token_urlsafe(ownership.UPLOAD_ID_BYTES)
    presented = presented_key(request.headers, request.args)
    owner = {"upstream": call.target.upstream.name, "key_id": call.target.key_id, "client": call.client.name,
             "client_hash": hash_key(presented),
             "resource": {"name": f"uploads/{upload_id}", "path": path, "declared": declared}}
    try:
        services.store.put_resource(UPLOADS, f"uploads/{upload_id}", owner, time.time() + UPLOAD_TTL)
    except StoreError:
        raise Unavailable("The upload could not be recorded right now; start it again.") from None
    hidden = _session_secrets(path)
    kept = [(name, value) for name, value in headers
            if name.lower() not in uploads.SESSION_HEADERS and not any(secret in value for secret in hidden)]
    relay_url = f"{base_url}/upload/{version}/files?upload_id={upload_id}&upload_protocol=resumable"
    return [*kept, ("X-Goog-Upload-URL", relay_url)]


def session_record(services, upload_id, count):
    """The record of relay's upload id ``upload_id``; 404 for an id that is malformed, unknown or expired."""
    name = f"uploads/{upload_id}"
    if count != 1 or not ownership.NAMES[UPLOADS].fullmatch(name):
        raise NotFound("Invalid upload_id: no such upload session.")
    try:
        record = services.store.get_resource(UPLOADS, name, time.time())
    except StoreError:
        raise Unavailable("The upload session could not be looked up right now; try again.") from None
    if record is None:
        raise NotFound("Invalid upload_id: no such upload session (or it has expired).")
    return record


def session_client(services, record, presented):
    """Who sends a chunk: the client that started the session, and only it (a key, if given, must be its)."""
    if presented is not None:
        client = services.auth.authenticate(presented)
        same = client.name == record["client"] if services.settings.managed \
            else hmac.compare_digest(hash_key(presented), record["client_hash"])
        if not same:
            raise PermissionDenied("You do not have permission to access this upload session or it may not exist.")
        return client
    if services.settings.managed:
        return services.auth.by_hash(record["client_hash"])  # 401 once the key is revoked or expired
    return Client(name=record["client"], kind="passthrough")


def session_target(services, record):
    """The upstream key that owns the session (its upstream, keyless, in passthrough mode)."""
    if services.settings.managed:
        target = services.pool.targets_by_id.get(record["key_id"])
        if target is None:
            raise Unavailable("The upstream key that owns this upload is no longer configured; start it again.")
        return target
    upstream = next((up for up in services.settings.upstreams if up.name == record["upstream"]), None)
    if upstream is None:
        raise Unavailable("The upstream that owns this upload is no longer configured; start it again.")
    return Target(upstream, None, "passthrough")


def record_file(services, call, answer):
    """Record the File an upload's final answer (``{"file": {...}}``) returns as the caller's."""
    uploaded = ownership.parsed_object(answer)
    if uploaded is not None and isinstance(uploaded.get("file"), dict):
        ownership.remember(services, call, "files", uploaded["file"], default_ttl=ownership.FILE_TTL)


# -- checks ------------------------------------------------------------------------------------------------


def check_metadata(metadata):
    """A start body is ``{"file": {...}}`` (or empty); a file name the caller picks must be Google's form."""
    upload_file = metadata.get("file", {})
    if not isinstance(upload_file, dict):
        raise InvalidArgument("Invalid JSON payload received. 'file' must be an object.")
    name = upload_file.get("name")
    if name is not None and not (isinstance(name, str) and ownership.NAMES["files"].fullmatch(name)):
        raise InvalidArgument(f"Invalid file name {str(name)[:60]!r}: files/<id>, the id up to 40 lowercase "
                              "letters, digits and dashes.")


def public_base_url(settings, environ):
    """relay's URL as callers reach it: RELAY_PUBLIC_URL, else this connection's own local address."""
    if settings.public_url:
        return settings.public_url
    try:
        host, port = environ["gunicorn.socket"].getsockname()[:2]
    except (KeyError, AttributeError, OSError, ValueError, TypeError):
        raise Unavailable("relay cannot name its own upload URL here: set RELAY_PUBLIC_URL to the URL callers "
                          "reach relay at.") from None
    host = f"[{host}]" if ":" in host else host
    return f"{environ.get('wsgi.url_scheme', 'http')}://{host}:{port}"


def _declared_size(headers, limit):
    text = headers.get("X-Goog-Upload-Header-Content-Length")
    if text is not None and int(text) > limit:
        raise PayloadTooLarge(f"The file is larger than this relay accepts: {limit} bytes "
                                      "(RELAY_MAX_UPLOAD_MB).")
    return int(text) if text is not None else None


def _chunk_length(settings, headers, record):
    """A chunk's length, checked: the chunk must end within the declared size and relay's upload limit."""
    length = uploads.body_length(request.environ, settings.max_upload_bytes)
    offset = headers.get("X-Goog-Upload-Offset")
    if offset is None:
        raise InvalidArgument("An upload chunk needs X-Goog-Upload-Offset.")
    end = int(offset) + length
    if end > settings.max_upload_bytes:
        raise PayloadTooLarge(f"The upload would exceed {settings.max_upload_bytes} bytes "
                                      "(RELAY_MAX_UPLOAD_MB).")
    declared = record["resource"].get("declared")
    if declared is not None and end > declared:
        raise InvalidArgument(f"The upload exceeds its declared size of {declared} bytes.")
    return length


def _content_type(default):
    value = (request.content_type or "").strip()
    return value if value and value.isprintable() and value.isascii() and len(value) <= 256 else default


def _session_secrets(path):
    """The upstream session's own id and URL, which no answer to the caller may carry."""
    query = parse_qs(urlsplit(path).query)
    return [path, *query.get("upload_id", [])]
