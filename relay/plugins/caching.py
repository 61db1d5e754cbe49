"""This module provides the cachedContent-affinity plugin: which context cache a request depends on.

A Gemini context cache lives under the upstream key that created it, so a request naming one must go to
that key.  This plugin only finds the name (in the body, or in ``generateContentRequest`` for the legacy
countTokens form); the ownership records themselves live in the shared store (:mod:`relay.ownership`).
"""

CACHE_METHODS = ("generateContent", "streamGenerateContent", "countTokens")


def cache_name(body):
    for key in ("cachedContent", "cached_content"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value if value.startswith("cachedContents/") else f"cachedContents/{value}"
    return None


class CacheAffinity:
    name = "cache_affinity"

    def pinned_cache(self, ctx, body):
        if ctx.method not in CACHE_METHODS:
            return None
        name = cache_name(body)
        if name is None and ctx.method == "countTokens":
            inner = body.get("generateContentRequest") or body.get("generate_content_request")
            if isinstance(inner, dict):
                name = cache_name(inner)
        return name
