"""This module provides the alias plugin: a public model name (``[aliases]`` in relay.toml) → an upstream name."""


class Aliases:
    name = "aliases"

    def __init__(self, aliases):
        self._aliases = dict(aliases)

    def resolve_model(self, ctx, model):
        return self._aliases.get(model)
