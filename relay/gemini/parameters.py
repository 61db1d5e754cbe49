"""This module provides Google's system parameters as relay treats them: which of a caller's query parameters
and header values are passed on as sent, widened, stripped or refused.  Pure: no Flask, no requests.

Google's front end reads "system parameters" on every REST call, as query parameters (``alt`` or ``$alt``,
``%24alt`` once URL-encoded) or as headers (https://cloud.google.com/apis/docs/system-parameters, and the
``parameters`` block of generativelanguage's discovery document).  Passed on as they came, several would
leak a credential or leave relay blind to what it relays:

* credentials (``key``, ``access_token``, ``oauth_token``, ``bearer_token``; any case, with or without
  ``$``) are stripped: relay sends one key upstream, its own (or, in passthrough, the caller's as a header);
* an answer relay could not read or account for is refused with a 400 before anything is sent: a format
  other than JSON (``alt=proto``, ``alt=media``, JSONP ``callback``), ``alt=sse`` outside a stream, ``alt``
  twice with different values, the v1 error format (``$.xgafv=1``: relay reads RetryInfo and ErrorInfo
  from v2 errors to rest or disable keys), and overrides of what relay checked (``$ct`` content type,
  ``$httpMethod``, ``$apiVersion``, upload protocols outside the upload routes); the Files API's media
  routes take what they need: ``uploadType``/``upload_protocol`` (``resumable`` or ``multipart``) on
  uploads, ``alt=media`` on downloads;
* a field mask (``fields``, ``$fields``, the ``X-Goog-FieldMask`` header) is widened with ``usageMetadata``
  on the methods relay accounts, so the caller's limits and usage still see every token; on
  ``cachedContents.create`` / ``patch`` relay records the whole answer (the owner's listing is built from
  it), so a mask there is refused;
* quota and billing attribution (``quotaUser``, ``userIp``, ``userProject``, ``X-Goog-User-Project``) is
  about the upstream key's project: stripped in managed mode, where that project is relay's.

A system parameter spelled any other way (``ALT``, ``Fields``, `` alt``) is refused rather than passed on:
Google's names are case-sensitive, and relay must not guess differently from Google.
"""

import re

from relay.errors import BAD_REQUEST_TYPE, InvalidArgument
from relay.gemini.methods import method_named

CREDENTIALS = frozenset({"key", "access_token", "oauth_token", "bearer_token"})
ATTRIBUTION = frozenset({"quotauser", "userip", "userproject"})
# System parameters relay passes on (checked, and rewritten for masks): casefolded bare name -> Google's.
CANONICAL = {"alt": "alt", "fields": "fields", "prettyprint": "prettyPrint", ".xgafv": ".xgafv",
             "apiformat": "apiFormat", "quotauser": "quotaUser", "userip": "userIp", "userproject": "userProject"}
REFUSED = {
    "callback": "JSONP answers are not relayed; call without callback.",
    "ct": "relay reads the body as JSON and says so upstream; a Content-Type override is not relayed.",
    "httpmethod": "relay relays the HTTP method it received; a method override is not relayed.",
    "apiversion": "the API version is the one in the path; an override is not relayed.",
    "uploadtype": "media uploads go to POST /upload/{version}/files.",
    "upload_protocol": "media uploads go to POST /upload/{version}/files.",
}
# On the upload routes: the protocols relay relays (both stream the bytes through).
UPLOAD_PARAMETERS = {"uploadtype": "uploadType", "upload_protocol": "upload_protocol"}
UPLOAD_PROTOCOLS = ("resumable", "multipart")
JSON_ALTS = ("json", "json;enum-encoding=int")
MEDIA_ALTS = ("media", *JSON_ALTS)
STREAM_ALTS = (*JSON_ALTS, "sse")
ERROR_FORMATS = ("2",)
# The answer fields relay reads, by method: a caller's mask is widened with them.
MASK_NEEDS = {method: ("usageMetadata",) for method in
              ("generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents")}
MASK_REFUSED = frozenset({"cachedContents.create", "cachedContents.patch"})
FIELD_MASK_HEADER = "X-Goog-FieldMask"
MANAGED_DROPPED_HEADERS = ("X-Goog-User-Project",)
_MASK_TEXT = re.compile(r"[A-Za-z0-9_.,()/* ]*")


def refused(where, why):
    """A 400 naming the parameter or header relay will not relay, and why (BadRequest detail included)."""
    where = where if len(where) <= 40 else where[:40] + "…"
    return InvalidArgument(f"Invalid parameter {where!r}: {why}", details=[
        {"@type": BAD_REQUEST_TYPE, "fieldViolations": [{"field": where, "description": why}]}])


def bare_name(name):
    """A parameter's name as Google's front end would read it, for comparison: no ``$``, trimmed, casefolded."""
    return name.strip().lstrip("$").strip().casefold()


def forwarded_query(pairs, method, managed):
    """The caller's ``(name, value)`` query pairs as relay passes them on, in order; raises a 400 for a
    parameter relay cannot relay."""
    query, alts = [], []
    for name, value in pairs:
        bare = bare_name(name)
        if bare in CREDENTIALS or (managed and bare in ATTRIBUTION):
            continue
        if bare in UPLOAD_PARAMETERS and _media(method) == "upload":
            if name != UPLOAD_PARAMETERS[bare] or value not in UPLOAD_PROTOCOLS:
                raise refused(name, f"relay relays {UPLOAD_PARAMETERS[bare]}={' or '.join(UPLOAD_PROTOCOLS)} uploads.")
        elif bare in REFUSED:
            raise refused(name, REFUSED[bare])
        canonical = CANONICAL.get(bare)
        if canonical is not None:
            if name not in (canonical, "$" + canonical):
                raise refused(name, f"write it as {canonical} or ${canonical} (system parameters are case-sensitive).")
            if bare == "alt":
                alts.append(value)
            elif bare == "fields":
                value = field_mask(value, method, name)
            elif bare in (".xgafv", "apiformat") and value not in ERROR_FORMATS:
                raise refused(name, "relay relays Google's error format 2 only (the default); omit it.")
        query.append((name, value))
    if alts:
        check_alt(alts, method)
    return query


def check_alt(values, method):
    """``alt``/``$alt`` must name one format relay can read: JSON everywhere, SSE on streams."""
    if len(set(values)) > 1:
        raise refused("alt", f"given {len(values)} times with different values; give it once.")
    allowed = STREAM_ALTS if method == "streamGenerateContent" else MEDIA_ALTS if _media(method) == "download" \
        else JSON_ALTS
    if values[0] not in allowed:
        raise refused("alt", f"{values[0][:40]!r} is not a format relay can relay here; use one of "
                             f"{', '.join(allowed)}.")


def _media(method):
    row = method_named(method)
    return row.media if row is not None else None


def field_mask(mask, method, where):
    """The field mask to send upstream for ``method``: the caller's, widened with what relay reads."""
    if method in MASK_REFUSED:
        raise refused(where, f"relay records the whole answer to {method}; call it without a field mask.")
    needed = MASK_NEEDS.get(method)
    if not needed or not mask.strip():
        return mask  # an empty mask returns every field
    if not _MASK_TEXT.fullmatch(mask) or not _balanced(mask):
        raise refused(where, "a field mask is field names joined by ',', '.' or '/', with '(…)' groups and '*'.")
    listed = {path.strip() for path in _top_level_paths(mask)}
    # Google takes a field's JSON name or its proto name; anything else (another case) is not the field.
    missing = [path for path in needed
               if "*" not in listed and path not in listed and _proto_name(path) not in listed]
    return ",".join([mask, *missing]) if missing else mask


def _proto_name(json_name):
    return re.sub(r"([A-Z])", lambda match: "_" + match.group(1).lower(), json_name)


def _balanced(mask):
    depth = 0
    for character in mask:
        depth += {"(": 1, ")": -1}.get(character, 0)
        if depth < 0:
            return False
    return depth == 0


def _top_level_paths(mask):
    """The comma-separated paths of a (balanced) mask outside any ``(…)`` group."""
    paths, depth, start = [], 0, 0
    for index, character in enumerate(mask):
        if character == "(":
            depth += 1
        elif character == ")":
            depth -= 1
        elif character == "," and depth == 0:
            paths.append(mask[start:index])
            start = index + 1
    paths.append(mask[start:])
    return paths


def forwarded_header_values(headers, method, managed):
    """Apply the same rules to the caller's forwardable headers (a dict, changed in place)."""
    if FIELD_MASK_HEADER in headers:
        headers[FIELD_MASK_HEADER] = field_mask(headers[FIELD_MASK_HEADER], method, FIELD_MASK_HEADER)
    if managed:
        for name in MANAGED_DROPPED_HEADERS:
            headers.pop(name, None)
    return headers
