"""Unit tests of the plugin registry (validation, order, hook semantics) and the small plugins on it."""

import ast

import pytest

from relay.config import load_settings
from relay.plugins import HOOKS, PluginContext, PluginError, Registry, default_registry
from relay.plugins.affinity import ResourceAffinity, cache_name
from relay.plugins.aliases import Aliases
from relay.plugins.images import ImagePassthrough
from relay.plugins.thinking import ThinkingSuffixes
from tests.support import REPO_ROOT

PLUGIN_DIR = REPO_ROOT / "relay" / "plugins"


class Upper:
    name = "upper"

    def resolve_model(self, ctx, model):
        return model.upper()


class Tagger:
    """Appends its tag to the model and to body["seen"], so tests can read the call order."""

    def __init__(self, name, suffixes=()):
        self.name = name
        self.suffixes = suffixes

    def resolve_model(self, ctx, model):
        return f"{model}+{self.name}"

    def rewrite_request(self, ctx, body):
        body.setdefault("seen", []).append(self.name)
        return self.name == "changes"


# -- validation when registered --------------------------------------------------------------------------

def test_duplicate_names_are_rejected():
    registry = Registry([Tagger("one")])
    with pytest.raises(PluginError, match="already registered"):
        registry.register(Tagger("one"))
    assert [plugin.name for plugin in registry.plugins] == ["one"]


def test_duplicate_suffixes_are_rejected():
    registry = Registry([Tagger("one", suffixes=("-fast", "-slow"))])
    with pytest.raises(PluginError, match=r"\['-slow'\]"):
        registry.register(Tagger("two", suffixes=("-slow", "-other")))
    with pytest.raises(PluginError, match="-thinking"):
        Registry([ThinkingSuffixes(), Tagger("copycat", suffixes=("-thinking",))])


def test_malformed_suffixes_are_rejected():
    with pytest.raises(PluginError, match="suffixes"):
        Registry([Tagger("one", suffixes="-thinking")])
    with pytest.raises(PluginError, match="suffixes"):
        Registry([Tagger("one", suffixes=("",))])


def test_unknown_hook_names_are_rejected():
    class Typo:
        name = "typo"

        def rewrite_requests(self, ctx, body):  # one letter too many: must not be silently ignored
            return False

    with pytest.raises(PluginError, match="'rewrite_requests' is not a hook"):
        Registry([Typo()])


def test_public_attributes_that_are_not_hooks_are_rejected():
    class Leaky:
        name = "leaky"

        def __init__(self):
            self.last_model = None  # per-request state on self would be shared by every greenlet

    with pytest.raises(PluginError, match="'last_model' is not a hook"):
        Registry([Leaky()])


def test_wrong_hook_arguments_are_rejected():
    class WrongArgs:
        name = "wrong"

        def rewrite_request(self, ctx, request_body):
            return False

    class MissingCtx:
        name = "missing"

        def resolve_model(self, model):
            return model

    class NotCallable:
        name = "constant"
        read_timeout = 30

    with pytest.raises(PluginError, match=r"should take \('ctx', 'body'\)"):
        Registry([WrongArgs()])
    with pytest.raises(PluginError, match=r"should take \('ctx', 'model'\)"):
        Registry([MissingCtx()])
    with pytest.raises(PluginError, match="must be a method"):
        Registry([NotCallable()])


def test_a_plugin_needs_a_name():
    class Nameless:
        def resolve_model(self, ctx, model):
            return model

    with pytest.raises(PluginError, match="has no name"):
        Registry([Nameless()])


def test_a_rejected_plugin_leaves_the_registry_unchanged():
    registry = Registry([Tagger("one")])
    with pytest.raises(PluginError):
        registry.register(Tagger("one"))
    assert registry.resolve_model(PluginContext(method="generateContent"), "m") == "m+one"


def test_every_hook_is_documented():
    for hook, (arguments, description) in HOOKS.items():
        assert isinstance(arguments, tuple) and description.strip()
        assert hasattr(Registry, hook), f"Registry has no runner for {hook}"


# -- running, in registration order ------------------------------------------------------------------------

def test_hooks_run_in_registration_order():
    registry = Registry([Tagger("first"), Tagger("changes"), Tagger("last")])
    ctx = PluginContext(method="generateContent")
    assert registry.resolve_model(ctx, "m") == "m+first+changes+last"
    body = {}
    assert registry.rewrite_request(ctx, body) is True
    assert body["seen"] == ["first", "changes", "last"]


def test_resolve_model_chain_keeps_the_model_when_a_plugin_returns_none():
    registry = Registry([Aliases({"fast": "gemini-2.5-flash"}), Upper()])
    ctx = PluginContext(method="generateContent")
    assert registry.resolve_model(ctx, "fast") == "GEMINI-2.5-FLASH"
    assert registry.resolve_model(ctx, "other") == "OTHER"


def test_rewrite_reports_no_change_when_no_plugin_changed_anything():
    body = {}
    assert Registry([Tagger("first")]).rewrite_request(PluginContext(method="generateContent"), body) is False


def test_pinned_resources_are_joined_and_first_read_timeout_wins():
    class Fixed:
        def __init__(self, name, resources, seconds):
            self.name, self._resources, self._seconds = name, resources, seconds

        def pinned_resources(self, ctx, body):
            return self._resources

        def read_timeout(self, ctx):
            return self._seconds

    a, b = ("cachedContents", "cachedContents/a"), ("files", "files/b")
    registry = Registry([Fixed("none", [], None), Fixed("a", [a], 10), Fixed("b", [b, a], 20)])
    ctx = PluginContext(method="generateContent")
    assert registry.pinned_resources(ctx, {}) == [a, b]
    assert registry.read_timeout(ctx) == 10
    assert Registry().pinned_resources(ctx, {}) == [] and Registry().read_timeout(ctx) is None


def test_wants_tells_whether_any_plugin_implements_a_hook():
    registry = Registry([Upper()])
    assert registry.wants("resolve_model") and not registry.wants("list_models")


def test_default_registry_order_and_settings():
    settings = load_settings({"RELAY_THINKING_VARIANTS": "false", "RELAY_MODEL_TIMEOUTS": "*-image*=900"})
    registry = default_registry(settings)
    assert [plugin.name for plugin in registry.plugins] == ["thinking", "resource_affinity", "image_passthrough"]
    ctx = PluginContext(method="generateContent", upstream_model="gemini-2.5-flash-image")
    assert registry.read_timeout(ctx) == 900
    body = {"models": [{"name": "models/gemini-2.5-flash", "thinking": True}]}
    assert registry.list_models(PluginContext(method="models.list"), body) is False

    with_aliases = default_registry(load_settings({}, overrides={"aliases": {"fast": "gemini-2.5-flash"}}))
    assert [plugin.name for plugin in with_aliases.plugins] == ["thinking", "aliases", "resource_affinity",
                                                               "image_passthrough"]
    ctx = PluginContext(method="generateContent", requested_model="fast-nothinking")
    ctx.upstream_model = with_aliases.resolve_model(ctx, "fast-nothinking")
    assert ctx.upstream_model == "gemini-2.5-flash"
    body = {}
    assert with_aliases.rewrite_request(ctx, body) is True
    assert body == {"generationConfig": {"thinkingConfig": {"includeThoughts": False, "thinkingBudget": 0}}}


def test_plugins_are_pure():
    """No plugin module imports Flask, requests, the store or anything that does I/O."""
    forbidden = {"flask", "requests", "urllib3", "gevent", "socket", "relay.store", "relay.services", "relay.pipeline.forward",
                 "relay.upstream", "os", "threading"}
    for path in PLUGIN_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not any(name == bad or name.startswith(bad + ".") for bad in forbidden), f"{path.name}: {name}"


# -- the small plugins -----------------------------------------------------------------------------------

def test_aliases():
    plugin = Aliases({"fast": "gemini-2.5-flash"})
    ctx = PluginContext(method="generateContent")
    assert plugin.resolve_model(ctx, "fast") == "gemini-2.5-flash"
    assert plugin.resolve_model(ctx, "gemini-2.5-pro") is None


@pytest.mark.parametrize("body, name", [
    ({"cachedContent": "cachedContents/abc"}, "cachedContents/abc"),
    ({"cached_content": "cachedContents/abc"}, "cachedContents/abc"),
    ({"cachedContent": "abc"}, "cachedContents/abc"),
    ({"cachedContent": ""}, None),
    ({"cachedContent": 5}, None),
    ({"contents": []}, None),
])
def test_cache_name(body, name):
    assert cache_name(body) == name


def test_resource_affinity_finds_the_cache_a_request_depends_on():
    plugin = ResourceAffinity()
    for method in ("generateContent", "streamGenerateContent", "countTokens"):
        ctx = PluginContext(method=method)
        assert plugin.pinned_resources(ctx, {"cachedContent": "cachedContents/x1"}) == [
            ("cachedContents", "cachedContents/x1")]
    legacy = {"generateContentRequest": {"model": "models/m", "cachedContent": "cachedContents/x2"}}
    assert plugin.pinned_resources(PluginContext(method="countTokens"), legacy) == [("cachedContents", "cachedContents/x2")]
    assert plugin.pinned_resources(PluginContext(method="generateContent"), legacy) == []
    assert plugin.pinned_resources(PluginContext(method="embedContent"), {"cachedContent": "cachedContents/x"}) == []


def test_image_read_timeouts_follow_model_patterns():
    plugin = ImagePassthrough([("*-image*", 600.0), ("gemini-3*-pro*", 900.0)])
    assert plugin.read_timeout(PluginContext(method="generateContent", upstream_model="gemini-2.5-flash-image")) == 600
    assert plugin.read_timeout(PluginContext(method="generateContent", upstream_model="gemini-3.1-pro-preview")) == 900
    assert plugin.read_timeout(PluginContext(method="generateContent", upstream_model="gemini-2.5-flash")) is None
    assert plugin.read_timeout(PluginContext(method="models.list")) is None


def test_image_plugin_leaves_image_requests_alone():
    """Image requests (responseModalities, imageConfig) must reach the upstream as sent: no plugin rewrites them."""
    registry = default_registry(load_settings({}))
    body = {"contents": [{"parts": [{"text": "a cat"}]}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"],
                                 "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K",
                                                 "imageOutputOptions": {"mimeType": "image/jpeg"}}}}
    before = repr(body)
    ctx = PluginContext(method="generateContent", requested_model="gemini-2.5-flash-image")
    ctx.upstream_model = registry.resolve_model(ctx, "gemini-2.5-flash-image")
    assert ctx.upstream_model == "gemini-2.5-flash-image"
    assert registry.rewrite_request(ctx, body) is False and repr(body) == before
