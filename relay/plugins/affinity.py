"""This module provides the resource-affinity plugin: which owned upstream resources a request references.

A context cache or a file lives under the upstream key that created it, so a request naming one must go to
that key.  This plugin only finds the references (pure: no I/O); :mod:`relay.ownership` checks them
against the records in the shared store and pins the call.

It finds ``cachedContent`` (in either spelling, and in the legacy countTokens ``generateContentRequest``)
on the methods that take one and in each inlined request of a batch, every ``fileData.fileUri`` naming a
Gemini file anywhere in the body (contents, systemInstruction, the legacy ``generateContentRequest``, inline
batch requests), a batch's input file (``batch.inputConfig.fileName``) and a Veo instance's ``video.uri``
(a video to extend).  A Gemini file is ``files/<id>`` or
``https://generativelanguage.googleapis.com/{v1,v1beta,v1alpha,v1main}/files/<id>``, optionally ending in
``:download?alt=media`` as generated videos do.  Other URIs (YouTube, ``gs://``, media on other hosts) are
left alone, except one that mentions Google's API host or starts with ``files/`` in any other form: Google
might read it as a file relay could not check, so it is returned as written, for relay to refuse.
"""

import re
import unicodedata
from urllib.parse import unquote

from relay.gemini.methods import generate_request, method_named

GEMINI_FILE = re.compile(
    r"(?:https://generativelanguage\.googleapis\.com/(?:v1|v1beta|v1alpha|v1main)/)?(files/[a-z0-9-]{1,40})"
    r"(?::download(?:\?alt=media)?)?")
# How many rounds of percent-decoding a suspicious URI gets before it is judged.
DECODE_ROUNDS = 3


def cache_names(body):
    """The caches ``body`` names, in either spelling (both, when a body has both: relay does not guess which
    one Google reads)."""
    values = [body.get("cachedContent"), body.get("cached_content")]
    return [value if value.startswith("cachedContents/") else f"cachedContents/{value}"
            for value in values if isinstance(value, str) and value]


def cache_name(body):
    names = cache_names(body)
    return names[0] if names else None


def file_reference(uri):
    """``files/<id>`` for a URI naming a Gemini file, the URI itself when it only looks like one, else None."""
    match = GEMINI_FILE.fullmatch(uri)
    if match:
        return match.group(1)
    text = uri
    for _ in range(DECODE_ROUNDS):
        text = unquote(text)
    folded = unicodedata.normalize("NFKC", text).strip().lower()
    if "generativelanguage" in folded or folded.startswith("files/"):
        return uri
    return None


def may_name_files(ctx):
    """Whether the body can hold a ``fileData.fileUri`` at all: its raw bytes spell the key, or escape
    something (``\\u0066ileUri`` is the same key once parsed), or relay built the body itself (no bytes).
    Saves walking every value of a large body that names no file."""
    raw = ctx.raw_body
    return raw is None or b"ileUri" in raw or b"ile_uri" in raw or b"\\u" in raw


def file_uris(body):
    """Every ``fileData.fileUri`` (either spelling) anywhere in ``body``, in document order."""
    uris, stack = [], [body]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            # Both spellings, each: which one Google reads when a body carries two is not for relay to guess.
            for data in (node.get("fileData"), node.get("file_data")):
                if isinstance(data, dict):
                    uris += [uri for uri in (data.get("fileUri"), data.get("file_uri")) if isinstance(uri, str)]
            stack.extend(reversed(node.values()))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return uris


def batch_requests(body):
    """The requests inlined in a batch create (``batch.inputConfig.requests.requests[].request``, either spelling)."""
    batch = body.get("batch")
    configs = (batch.get("inputConfig"), batch.get("input_config")) if isinstance(batch, dict) else ()
    found = []
    for config in configs:
        inline = config.get("requests") if isinstance(config, dict) else None
        items = inline.get("requests") if isinstance(inline, dict) else None
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict) and isinstance(item.get("request"), dict):
                found.append(item["request"])
    return found


def instance_videos(body):
    """The ``video.uri`` of each instance of a Veo request (``instances[].video.uri``)."""
    instances = body.get("instances")
    videos = [instance.get("video") for instance in instances if isinstance(instance, dict)] \
        if isinstance(instances, list) else []
    return [video["uri"] for video in videos if isinstance(video, dict) and isinstance(video.get("uri"), str)]


def batch_input_files(body):
    """The input file a batch create names (``batch.inputConfig.fileName``, in either spelling)."""
    batch = body.get("batch")
    configs = (batch.get("inputConfig"), batch.get("input_config")) if isinstance(batch, dict) else ()
    return [name for config in configs if isinstance(config, dict)
            for name in (config.get("fileName"), config.get("file_name")) if isinstance(name, str)]


class ResourceAffinity:
    name = "resource_affinity"

    def pinned_resources(self, ctx, body):
        found = []
        method = method_named(ctx.method)
        if method is not None and method.names_cache:
            inner = generate_request(ctx.method, body)
            names = cache_names(body) + (cache_names(inner) if inner is not None and inner is not body else [])
            found += [("cachedContents", name) for name in names]
        for inner in batch_requests(body) if ctx.method == "batchGenerateContent" else ():
            found += [("cachedContents", name) for name in cache_names(inner)]
        videos = instance_videos(body) if ctx.method == "predictLongRunning" else []
        for uri in (file_uris(body) if may_name_files(ctx) else []) + batch_input_files(body) + videos:
            reference = file_reference(uri)
            if reference is not None:
                found.append(("files", reference))
        return list(dict.fromkeys(found))
