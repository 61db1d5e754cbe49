"""This package provides relay's plugin registry and the default plugins, in their fixed order.

A plugin is a plain object with a unique ``name`` whose method names are hooks from :data:`HOOKS`
(the contract, written once, here).  Plugins are pure: they see the request body, parsed responses and
their own per-call scratch, and do no I/O, read no Flask globals and keep nothing per request on
``self`` (one instance serves every greenlet).  :class:`Registry` checks each plugin when it is
registered — unknown hook names, wrong arguments and duplicate names or suffixes fail loudly — and calls
hooks in registration order.
"""

import inspect
import re
from dataclasses import dataclass, field

HOOKS = {
    # hook: (arguments after ctx, what it does)
    "resolve_model": (("model",), "Return the upstream model name for `model` (or None to keep it); runs as a chain."),
    "rewrite_request": (("body",), "Change the parsed request body in place; return True if it changed."),
    "pinned_resources": (("body",), "Return the owned upstream resources the request references, as a list of "
                         "(kind, name) pairs; kind is cachedContents, files, uploads, batches or operations. A "
                         "reference that only looks like one is returned as written: relay refuses it. The "
                         "answers of all plugins are joined, in order, without repeats."),
    "list_models": (("body",), "Change a models.list/get response body in place; return True if it changed."),
    "read_timeout": ((), "Return a read timeout in seconds for this call, or None."),
}
ATTRIBUTES = {"name", "suffixes"}
# At most this many runs of the resolve_model chain: a suffix, an alias to a suffixed name, its suffix.
RESOLVE_PASSES = 3


@dataclass
class PluginContext:
    """What a hook may know about the call; ``scratch`` is per call and per plugin."""

    method: str
    requested_model: str | None = None
    upstream_model: str | None = None
    scratch: dict = field(default_factory=dict)
    # The caller's body as it arrived, when relay parsed it from those bytes (None when relay built the body,
    # as the OpenAI door does): lets a hook skip a walk of a large body for a key the bytes cannot hold.
    raw_body: bytes | None = None

    def scratch_for(self, plugin):
        return self.scratch.setdefault(plugin.name, {})


class PluginError(Exception):
    """A plugin does not fit the contract."""


class Registry:
    """The registered plugins and, per hook, the ones that implement it, in registration order."""

    def __init__(self, plugins=()):
        self.plugins = []
        self._hooks = {hook: [] for hook in HOOKS}
        self._suffixed = None  # matches a model name ending in a suffix some plugin claims
        for plugin in plugins:
            self.register(plugin)

    def register(self, plugin):
        name = getattr(plugin, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"{plugin!r} has no name")
        if any(existing.name == name for existing in self.plugins):
            raise PluginError(f"a plugin named {name!r} is already registered")
        suffixes = getattr(plugin, "suffixes", ())
        well_formed = all(isinstance(suffix, str) and suffix for suffix in suffixes)
        if not isinstance(suffixes, (tuple, list)) or not well_formed:
            raise PluginError(f"plugin {name!r}: suffixes must be a tuple of model-name suffixes, e.g. ('-thinking',)")
        taken = {suffix for existing in self.plugins for suffix in getattr(existing, "suffixes", ())}
        clash = taken & set(suffixes)
        if clash:
            raise PluginError(f"plugin {name!r} claims model suffixes already taken: {sorted(clash)}")
        hooks = []
        for attribute in dir(plugin):
            if attribute.startswith("_") or attribute in ATTRIBUTES:
                continue
            if attribute not in HOOKS:
                raise PluginError(f"plugin {name!r}: {attribute!r} is not a hook; hooks are {', '.join(HOOKS)}")
            expected = ("ctx", *HOOKS[attribute][0])
            hook = getattr(plugin, attribute)
            if not callable(hook):
                raise PluginError(f"plugin {name!r}: {attribute} must be a method taking {expected}")
            params = tuple(inspect.signature(hook).parameters)
            if params != expected:
                raise PluginError(f"plugin {name!r}: {attribute}{params} should take {expected}")
            hooks.append(attribute)
        self.plugins.append(plugin)
        for hook in hooks:
            self._hooks[hook].append(plugin)
        self._suffixed = _suffix_pattern(self.plugins)

    def resolve_model(self, ctx, model):
        """Run the chain in order; run it again while the result still ends in a suffix a plugin claims:
        an alias may name a suffixed model (``deep = "gemini-2.5-flash-thinking-8192"``)."""
        for _ in range(RESOLVE_PASSES):
            for plugin in self._hooks["resolve_model"]:
                model = plugin.resolve_model(ctx, model) or model
            if self._suffixed is None or not self._suffixed.search(model):
                break
        return model

    def rewrite_request(self, ctx, body):
        changed = False
        for plugin in self._hooks["rewrite_request"]:
            changed = bool(plugin.rewrite_request(ctx, body)) or changed
        return changed

    def pinned_resources(self, ctx, body):
        found = {}
        for plugin in self._hooks["pinned_resources"]:
            for kind, name in plugin.pinned_resources(ctx, body) or ():
                found[(kind, name)] = None
        return list(found)

    def list_models(self, ctx, body):
        changed = False
        for plugin in self._hooks["list_models"]:
            changed = bool(plugin.list_models(ctx, body)) or changed
        return changed

    def read_timeout(self, ctx):
        for plugin in self._hooks["read_timeout"]:
            seconds = plugin.read_timeout(ctx)
            if seconds:
                return seconds
        return None

    def wants(self, hook):
        return bool(self._hooks[hook])


def _suffix_pattern(plugins):
    """One regex for every claimed suffix (``<N>`` stands for digits), or None when none is claimed."""
    suffixes = [re.escape(suffix).replace(re.escape("<N>"), r"\d+")
                for plugin in plugins for suffix in getattr(plugin, "suffixes", ())]
    return re.compile(f"(?:{'|'.join(suffixes)})$") if suffixes else None


def default_registry(settings):
    """The plugins relay runs, in order: thinking suffixes, aliases, resource affinity, image passthrough."""
    from relay.plugins.affinity import ResourceAffinity
    from relay.plugins.aliases import Aliases
    from relay.plugins.images import ImagePassthrough
    from relay.plugins.thinking import ThinkingSuffixes

    plugins = [ThinkingSuffixes(list_variants=settings.thinking_variants)]
    if settings.aliases:
        plugins.append(Aliases(settings.aliases))
    plugins += [ResourceAffinity(), ImagePassthrough(settings.model_read_timeouts)]
    return Registry(plugins)
