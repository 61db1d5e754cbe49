"""This module provides long-running media: Veo's operations, owned by the client that started them.

``POST /{version}/models/{model}:predict`` (Imagen) and ``:predictLongRunning`` (Veo) are model routes
(relay.api.gemini), checked loosely (``instances``, ``parameters``) and relayed like ``generateContent``;
a ``video.uri`` an instance names (extending a video) is a file, pinned to its key.  The operation
``:predictLongRunning`` returns (``models/{model}/operations/{id}``) is recorded as the caller's
(:func:`record_operation`); ``GET /{version}/{operation name}`` goes to its key, and when it is done the
videos it names (``response.generateVideoResponse.generatedSamples[].video.uri``) are recorded as the
caller's files, so that ``files.download`` reaches them.
"""

import time

from flask import Blueprint

from relay import ownership
from relay.api.lifecycle import respond
from relay.api.routing import COLLECTION, VERSION
from relay.pipeline.forward import forward
from relay.pipeline.request import begin
from relay.plugins.affinity import file_reference
from relay.store import StoreError

bp = Blueprint("media", __name__)

OPERATION_TTL = 48 * 3600.0  # generated videos are kept 48 hours; so is the operation that names them
NOTES = ("requested_model", "upstream_model")


@bp.get(f"/{VERSION}/{COLLECTION}/<model>/operations/<operation_id>")
def model_operation(version, collection, model, operation_id):
    return get_operation(version, f"{collection}/{model}/operations/{operation_id}")


@bp.get(f"/{VERSION}/operations/<operation_id>")
def operation(version, operation_id):
    return get_operation(version, f"operations/{operation_id}")


def get_operation(version, name):
    """Poll an operation on the key that started it."""
    services, call = begin(version, "operations.get", resource=name)
    owner = ownership.pin_one(services, call, "operations", name)  # 400 for a name that is not one
    if owner is not None:
        call.inspect = lambda call, body: operation_seen(services, call, name, owner, body)
    return respond(forward(call, services))


def record_operation(services, call, body):
    """``call.inspect`` of ``:predictLongRunning``: the operation it returns is the caller's, under its key."""
    started = ownership.parsed_object(body)
    if started is not None:
        ownership.remember(services, call, "operations", started, default_ttl=OPERATION_TTL,
                           extra={"requested_model": call.requested_model, "upstream_model": call.upstream_model})


def operation_seen(services, call, name, owner, body):
    """``call.inspect`` of an operation poll: refresh the record; once done, record the videos it made as the
    caller's files (once: the first poll that sees it done claims that)."""
    polled = ownership.parsed_object(body)
    if call.status != 200 or polled is None or polled.get("name") != name:
        return
    notes = {key: owner.get(key) for key in NOTES}
    ownership.remember(services, call, "operations", polled, default_ttl=OPERATION_TTL, extra=notes)
    if polled.get("done") is not True:
        return
    try:
        first = services.store.claim_resource("operations", name, "files_recorded", time.time())
    except StoreError:
        first = True  # recording the files again is harmless
    if first:
        for file_name in generated_videos(polled):
            ownership.remember(services, call, "files", {"name": file_name, "source": "GENERATED"},
                               default_ttl=ownership.FILE_TTL, extra={"operation": name})


def generated_videos(operation):
    """``files/<id>`` of each video a done Veo operation names."""
    response = operation.get("response")
    answer = response.get("generateVideoResponse") if isinstance(response, dict) else None
    samples = answer.get("generatedSamples") if isinstance(answer, dict) else None
    names = []
    for sample in samples if isinstance(samples, list) else ():
        video = sample.get("video") if isinstance(sample, dict) else None
        uri = video.get("uri") if isinstance(video, dict) else None
        reference = file_reference(uri) if isinstance(uri, str) else None
        if reference is not None and ownership.NAMES["files"].fullmatch(reference):
            names.append(reference)
    return names
