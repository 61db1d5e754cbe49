"""This module provides the image-generation plugin: longer read timeouts for image models, nothing else.

Image requests (``responseModalities: ["IMAGE"]``, ``imageConfig``) reach the upstream as sent, and image
responses (multi-MB ``inlineData``, ~600 KB ``thoughtSignature``) come back byte-identical because no
plugin asks to parse or rewrite response bodies.  What image models do need is patience: their first
byte can take far longer than a text model's, so read timeouts are settable per model pattern
(``RELAY_MODEL_TIMEOUTS`` / ``[model_timeouts]``; the default gives ``*-image*`` models 600 s).
"""

import fnmatch


class ImagePassthrough:
    name = "image_passthrough"

    def __init__(self, model_timeouts=()):
        self._timeouts = tuple(model_timeouts)

    def read_timeout(self, ctx):
        model = ctx.upstream_model or ""
        for pattern, seconds in self._timeouts:
            if fnmatch.fnmatchcase(model, pattern):
                return seconds
        return None
