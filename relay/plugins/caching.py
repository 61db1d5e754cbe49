"""This module provides the cachedContent-affinity plugin: which context cache a request depends on.

A Gemini context cache lives under the upstream key that created it, so a request naming one must go to
that key.  This plugin only finds the name (in the body, or in ``generateContentRequest`` for the legacy
countTokens form); the ownership records themselves live in the shared store (:mod:`relay.ownership`).
"""

from relay.gemini.methods import generate_request, method_named


def cache_name(body):
    for key in ("cachedContent", "cached_content"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value if value.startswith("cachedContents/") else f"cachedContents/{value}"
    return None


class CacheAffinity:
    name = "cache_affinity"

    def pinned_cache(self, ctx, body):
        method = method_named(ctx.method)
        if method is None or not method.names_cache:
            return None
        name = cache_name(body)
        inner = generate_request(ctx.method, body)
        if name is None and inner is not None and inner is not body:
            name = cache_name(inner)
        return name
