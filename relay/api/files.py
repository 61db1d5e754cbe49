"""This module provides the Files API's own routes besides uploads (relay.api.uploads): list, get, delete and
download.

In managed mode a file belongs to the client whose upload, Veo operation or batch made it.  ``GET files``
lists the caller's own from the ownership records, paged like Google's (``pageSize`` up to 100,
``pageToken``); get, delete and download go to the key that holds the file, and another client's file (or
one relay has no record of) gets Google's 403.  Downloads — ``GET /{version}/files/{id}:download?alt=media``
and ``GET /download/{version}/files/{id}:download?alt=media`` — stream back chunk by chunk; a batch's
results file is read on its way through for the batch's usage (relay.clients.batch_usage).
"""

from flask import Blueprint, request

from relay import ownership
from relay.api.lifecycle import respond
from relay.api.routing import VERSION
from relay.clients import batch_usage
from relay.errors import JSON_HEADERS, MethodNotAllowed, NotFound, render_json
from relay.pipeline.forward import forward
from relay.pipeline.request import begin

bp = Blueprint("files", __name__)

# Fields relay keeps in a file's record besides its owner: not the resource, and never shown to callers.
RECORD_FIELDS = ("upstream", "key_id", "client", "resource")


@bp.get(f"/{VERSION}/files")
def list_files(version):
    return list_owned(version, "files", "files")


def list_owned(version, kind, answer_key):
    """``GET {version}/{kind}``: in managed mode the caller's own, from relay's records (any one upstream key
    lists only its own), paginated under ``answer_key``; in passthrough mode Google's answer."""
    services, call = begin(version, f"{kind}.list", resource=kind)
    if services.settings.managed:
        return render_json(ownership.page(services, call, kind, answer_key, request.args)), 200, JSON_HEADERS
    return respond(forward(call, services))


@bp.route(f"/{VERSION}/files/<target>", methods=["GET", "DELETE"])
def file_resource(version, target):
    file_id, colon, verb = target.partition(":")
    if colon:
        if verb != "download":
            raise NotFound(f"Method {verb[:40]!r} is not supported on files; use :download.")
        if request.method != "GET":
            raise MethodNotAllowed("Method DELETE is not allowed for a download; it takes GET.", headers={"Allow": "GET"})
        return download(version, file_id, prefix="")
    action = "get" if request.method == "GET" else "delete"
    services, call = begin(version, f"files.{action}", resource=f"files/{file_id}")
    name = f"files/{file_id}"
    owner = ownership.pin_one(services, call, "files", name)
    if action == "get" and owner is not None:
        call.inspect = lambda call, body: refreshed(services, call, owner, body)
    elif action == "delete":
        call.inspect = lambda call, body: ownership.forget_resource(services, call, "files", name)
    return respond(forward(call, services))


@bp.get(f"/download/{VERSION}/files/<target>")
def download_route(version, target):
    file_id, _, verb = target.partition(":")
    if verb != "download":
        raise NotFound("Downloads are GET /download/{version}/files/{id}:download?alt=media.")
    return download(version, file_id, prefix="/download")


def download(version, file_id, prefix):
    """A file's bytes, streamed from the key that holds it; a batch's results are counted on the way."""
    services, call = begin(version, "files.download", resource=f"files/{file_id}:download")
    call.prefix = prefix
    owner = ownership.pin_one(services, call, "files", f"files/{file_id}")
    reply = forward(call, services)
    if owner is not None and isinstance(owner.get("batch"), str) and reply.status == 200:
        reply = batch_usage.counted_download(services, call, owner["batch"], owner, reply)
    return respond(reply)


def refreshed(services, call, owner, body):
    """``call.inspect`` of a file get: the record keeps the File as Google last answered (its state)."""
    resource = ownership.parsed_object(body)
    if call.status == 200 and resource is not None and resource.get("name") == owner["resource"].get("name"):
        notes = {key: value for key, value in owner.items() if key not in RECORD_FIELDS}
        ownership.remember(services, call, "files", resource, default_ttl=ownership.FILE_TTL, extra=notes)
