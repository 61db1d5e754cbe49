"""Unit tests of the thinking-suffix plugin: parsing, family tables, clamps, and the client-wins merge."""

import pytest

from relay.plugins import PluginContext
from relay.plugins import thinking
from relay.plugins.thinking import ThinkingSuffixes, family_of, merge_thinking, parse_suffix, suffix_config


def run_plugin(model, body, method="generateContent"):
    """Resolve ``model`` and rewrite ``body`` the way the generate view does; return (upstream model, changed)."""
    plugin = ThinkingSuffixes()
    ctx = PluginContext(method=method, requested_model=model)
    ctx.upstream_model = plugin.resolve_model(ctx, model) or model
    return ctx.upstream_model, plugin.rewrite_request(ctx, body)


def thinking_config(body):
    return body["generationConfig"]["thinkingConfig"]


# -- parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, parsed", [
    ("gemini-2.5-flash-thinking", ("gemini-2.5-flash", "thinking", None)),
    ("gemini-2.5-flash-thinking-8192", ("gemini-2.5-flash", "thinking", "8192")),
    ("gemini-2.5-flash-thinking-0", ("gemini-2.5-flash", "thinking", "0")),
    ("gemini-2.5-flash-nothinking", ("gemini-2.5-flash", "nothinking", None)),
    ("gemini-3-flash-preview-thinking-minimal", ("gemini-3-flash-preview", "thinking", "minimal")),
    ("gemini-3-pro-preview-thinking-low", ("gemini-3-pro-preview", "thinking", "low")),
    ("gemini-3-pro-preview-thinking-medium", ("gemini-3-pro-preview", "thinking", "medium")),
    ("gemini-3-pro-preview-thinking-high", ("gemini-3-pro-preview", "thinking", "high")),
    # A model whose own name contains "thinking" keeps it; only the last suffix is relay's.
    ("gemini-2.0-flash-thinking-exp-thinking", ("gemini-2.0-flash-thinking-exp", "thinking", None)),
    ("gemini-2.0-flash-thinking-exp-01-21-nothinking", ("gemini-2.0-flash-thinking-exp-01-21", "nothinking", None)),
])
def test_suffixes_parse(model, parsed):
    assert parse_suffix(model) == parsed


@pytest.mark.parametrize("model", [
    "gemini-2.5-flash",
    "gemini-2.0-flash-thinking-exp",  # real Google model names that merely contain "thinking"
    "gemini-2.0-flash-thinking-exp-01-21",
    "gemini-2.0-flash-thinking-exp-1219",
    "thinking",
    "-thinking",
    "gemini-2.5-flash-thinking-extreme",
    "gemini-2.5-flash-thinking-",
    "gemini-2.5-flash-thinking--1",
    "gemini-2.5-flash-Thinking",
    "gemini-2.5-flash-thinkingish",
])
def test_names_that_are_not_suffixed(model):
    assert parse_suffix(model) is None
    upstream_model, changed = run_plugin(model, body := {"contents": []})
    assert upstream_model == model and not changed and body == {"contents": []}


# -- families -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, family", [
    ("gemini-2.5-pro", thinking.GEMINI_25_PRO),
    ("gemini-2.5-pro-preview-06-05", thinking.GEMINI_25_PRO),
    ("gemini-2.5-flash", thinking.GEMINI_25_FLASH),
    ("gemini-2.5-flash-preview-09-2025", thinking.GEMINI_25_FLASH),
    ("gemini-2.5-flash-lite", thinking.GEMINI_25_FLASH_LITE),
    ("gemini-2.5-flash-lite-preview-09-2025", thinking.GEMINI_25_FLASH_LITE),
    ("gemini-3-pro-preview", thinking.GEMINI_3_PRO),
    ("gemini-3.1-pro-preview", thinking.GEMINI_3_LATER_PRO),
    ("gemini-3.1-pro-preview-customtools", thinking.GEMINI_3_LATER_PRO),
    ("gemini-3-flash-preview", thinking.GEMINI_3_FLASH),
    ("gemini-3.5-flash", thinking.GEMINI_3_FLASH),
    ("gemini-3.6-flash", thinking.GEMINI_3_FLASH),
    ("gemini-3.7-flash", thinking.GEMINI_37_FLASH),
    ("gemini-3.8-flash", thinking.GEMINI_37_FLASH),
    ("gemini-3.1-flash-lite-preview", thinking.GEMINI_3_FLASH_LITE),
    ("gemini-3.5-flash-lite", thinking.GEMINI_3_FLASH_LITE),
    ("gemini-4-ultra", thinking.GEMINI_3_LATER),
    # Not text thinking models relay knows limits for: the suffix is applied as written.
    ("gemini-2.0-flash", None),
    ("gemini-2.5-flash-image", None),
    ("gemini-2.5-flash-preview-tts", None),
    ("gemini-2.5-flash-native-audio-latest", None),
    ("gemini-3-pro-image-preview", None),
    ("gemini-flash-latest", None),
    ("gemma-3-27b-it", None),
    ("my-fine-tune", None),
])
def test_family_of(model, family):
    assert family_of(model) == family


def test_documented_ranges():
    assert (thinking.GEMINI_25_PRO.budget_min, thinking.GEMINI_25_PRO.budget_max) == (128, 32768)
    assert not thinking.GEMINI_25_PRO.can_disable
    assert (thinking.GEMINI_25_FLASH.budget_min, thinking.GEMINI_25_FLASH.budget_max) == (0, 24576)
    lite = thinking.GEMINI_25_FLASH_LITE
    assert (lite.budget_min, lite.lowest_nonzero, lite.budget_max) == (0, 512, 24576)
    assert thinking.GEMINI_3_PRO.levels == ("LOW", "HIGH")
    assert thinking.GEMINI_3_LATER_PRO.levels == ("LOW", "MEDIUM", "HIGH")
    assert thinking.GEMINI_3_FLASH.levels == ("MINIMAL", "LOW", "MEDIUM", "HIGH")
    assert thinking.GEMINI_37_FLASH.levels == ("LOW", "MEDIUM", "HIGH")


# -- Gemini 2.5: budgets ------------------------------------------------------------------------------

BUDGET_CASES = [
    # model, suffix, thinkingConfig sent upstream
    ("gemini-2.5-pro", "-thinking", {"includeThoughts": True, "thinkingBudget": -1}),
    ("gemini-2.5-pro", "-thinking-4096", {"includeThoughts": True, "thinkingBudget": 4096}),
    ("gemini-2.5-pro", "-thinking-1", {"includeThoughts": True, "thinkingBudget": 128}),
    ("gemini-2.5-pro", "-thinking-0", {"includeThoughts": True, "thinkingBudget": 128}),
    ("gemini-2.5-pro", "-thinking-99999", {"includeThoughts": True, "thinkingBudget": 32768}),
    ("gemini-2.5-pro", "-nothinking", {"includeThoughts": False, "thinkingBudget": 128}),
    ("gemini-2.5-pro", "-thinking-minimal", {"includeThoughts": True, "thinkingBudget": 512}),
    ("gemini-2.5-pro", "-thinking-low", {"includeThoughts": True, "thinkingBudget": 1024}),
    ("gemini-2.5-pro", "-thinking-medium", {"includeThoughts": True, "thinkingBudget": 8192}),
    ("gemini-2.5-pro", "-thinking-high", {"includeThoughts": True, "thinkingBudget": 24576}),
    ("gemini-2.5-flash", "-thinking", {"includeThoughts": True, "thinkingBudget": -1}),
    ("gemini-2.5-flash", "-thinking-8192", {"includeThoughts": True, "thinkingBudget": 8192}),
    ("gemini-2.5-flash", "-thinking-0", {"includeThoughts": True, "thinkingBudget": 0}),
    ("gemini-2.5-flash", "-thinking-1", {"includeThoughts": True, "thinkingBudget": 1}),
    ("gemini-2.5-flash", "-thinking-32768", {"includeThoughts": True, "thinkingBudget": 24576}),
    ("gemini-2.5-flash", "-nothinking", {"includeThoughts": False, "thinkingBudget": 0}),
    ("gemini-2.5-flash", "-thinking-high", {"includeThoughts": True, "thinkingBudget": 24576}),
    ("gemini-2.5-flash", "-thinking-minimal", {"includeThoughts": True, "thinkingBudget": 512}),
    ("gemini-2.5-flash-lite", "-thinking", {"includeThoughts": True, "thinkingBudget": -1}),
    ("gemini-2.5-flash-lite", "-thinking-100", {"includeThoughts": True, "thinkingBudget": 512}),
    ("gemini-2.5-flash-lite", "-thinking-511", {"includeThoughts": True, "thinkingBudget": 512}),
    ("gemini-2.5-flash-lite", "-thinking-512", {"includeThoughts": True, "thinkingBudget": 512}),
    ("gemini-2.5-flash-lite", "-thinking-0", {"includeThoughts": True, "thinkingBudget": 0}),
    ("gemini-2.5-flash-lite", "-thinking-30000", {"includeThoughts": True, "thinkingBudget": 24576}),
    ("gemini-2.5-flash-lite", "-nothinking", {"includeThoughts": False, "thinkingBudget": 0}),
    ("gemini-2.5-flash-lite", "-thinking-low", {"includeThoughts": True, "thinkingBudget": 1024}),
]


@pytest.mark.parametrize("model, suffix, expected", BUDGET_CASES)
def test_gemini_25_budgets(model, suffix, expected):
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    upstream_model, changed = run_plugin(model + suffix, body)
    assert upstream_model == model
    assert changed
    assert thinking_config(body) == expected


# -- Gemini 3 and later: levels -------------------------------------------------------------------------

LEVEL_CASES = [
    ("gemini-3-pro-preview", "-thinking", {"includeThoughts": True}),
    ("gemini-3-pro-preview", "-nothinking", {"includeThoughts": False, "thinkingLevel": "LOW"}),
    ("gemini-3-pro-preview", "-thinking-minimal", {"includeThoughts": True, "thinkingLevel": "LOW"}),
    ("gemini-3-pro-preview", "-thinking-low", {"includeThoughts": True, "thinkingLevel": "LOW"}),
    # Equally far from LOW and HIGH: the higher one (Google's own compatibility layer maps medium to high).
    ("gemini-3-pro-preview", "-thinking-medium", {"includeThoughts": True, "thinkingLevel": "HIGH"}),
    ("gemini-3-pro-preview", "-thinking-high", {"includeThoughts": True, "thinkingLevel": "HIGH"}),
    ("gemini-3-pro-preview", "-thinking-0", {"includeThoughts": True, "thinkingLevel": "LOW"}),
    ("gemini-3-pro-preview", "-thinking-1024", {"includeThoughts": True, "thinkingLevel": "LOW"}),
    ("gemini-3-pro-preview", "-thinking-4096", {"includeThoughts": True, "thinkingLevel": "HIGH"}),
    ("gemini-3-pro-preview", "-thinking-30000", {"includeThoughts": True, "thinkingLevel": "HIGH"}),
    ("gemini-3.1-pro-preview", "-thinking-medium", {"includeThoughts": True, "thinkingLevel": "MEDIUM"}),
    ("gemini-3.1-pro-preview", "-thinking-minimal", {"includeThoughts": True, "thinkingLevel": "LOW"}),
    ("gemini-3.1-pro-preview", "-nothinking", {"includeThoughts": False, "thinkingLevel": "LOW"}),
    ("gemini-3.1-pro-preview", "-thinking-4096", {"includeThoughts": True, "thinkingLevel": "MEDIUM"}),
    ("gemini-3-flash-preview", "-thinking-minimal", {"includeThoughts": True, "thinkingLevel": "MINIMAL"}),
    ("gemini-3-flash-preview", "-nothinking", {"includeThoughts": False, "thinkingLevel": "MINIMAL"}),
    ("gemini-3-flash-preview", "-thinking-0", {"includeThoughts": True, "thinkingLevel": "MINIMAL"}),
    ("gemini-3-flash-preview", "-thinking-512", {"includeThoughts": True, "thinkingLevel": "LOW"}),
    ("gemini-3-flash-preview", "-thinking-1025", {"includeThoughts": True, "thinkingLevel": "MEDIUM"}),
    ("gemini-3-flash-preview", "-thinking-8193", {"includeThoughts": True, "thinkingLevel": "HIGH"}),
    ("gemini-3.1-flash-lite-preview", "-nothinking", {"includeThoughts": False, "thinkingLevel": "MINIMAL"}),
    ("gemini-3.7-flash", "-thinking-minimal", {"includeThoughts": True, "thinkingLevel": "LOW"}),
    ("gemini-3.7-flash", "-nothinking", {"includeThoughts": False, "thinkingLevel": "LOW"}),
    ("gemini-3.7-flash", "-thinking-medium", {"includeThoughts": True, "thinkingLevel": "MEDIUM"}),
]


@pytest.mark.parametrize("model, suffix, expected", LEVEL_CASES)
def test_gemini_3_levels(model, suffix, expected):
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    upstream_model, changed = run_plugin(model + suffix, body)
    assert upstream_model == model
    assert changed
    assert thinking_config(body) == expected
    assert "thinkingBudget" not in thinking_config(body)


@pytest.mark.parametrize("family", [
    thinking.GEMINI_3_PRO, thinking.GEMINI_3_LATER_PRO, thinking.GEMINI_3_FLASH, thinking.GEMINI_37_FLASH,
])
@pytest.mark.parametrize("arg", ["minimal", "low", "medium", "high", "0", "1", "1024", "8192", "99999", None])
def test_levels_are_always_supported(family, arg):
    config = suffix_config(family, "thinking", arg)
    assert config.get("thinkingLevel", family.levels[-1]) in family.levels


@pytest.mark.parametrize("family", [thinking.GEMINI_25_PRO, thinking.GEMINI_25_FLASH, thinking.GEMINI_25_FLASH_LITE])
@pytest.mark.parametrize("budget", [0, 1, 127, 128, 511, 512, 24576, 24577, 32768, 40000])
def test_budgets_always_within_range(family, budget):
    value = suffix_config(family, "thinking", str(budget))["thinkingBudget"]
    assert value == 0 and family.can_disable or family.budget_min <= value <= family.budget_max
    assert value == 0 or value >= family.lowest_nonzero


# -- unknown models: as written ----------------------------------------------------------------------

@pytest.mark.parametrize("suffix, expected", [
    ("-thinking", {"includeThoughts": True, "thinkingBudget": -1}),
    ("-thinking-99999", {"includeThoughts": True, "thinkingBudget": 99999}),
    ("-thinking-3", {"includeThoughts": True, "thinkingBudget": 3}),
    ("-nothinking", {"thinkingBudget": 0}),
    ("-thinking-minimal", {"includeThoughts": True, "thinkingLevel": "MINIMAL"}),
    ("-thinking-medium", {"includeThoughts": True, "thinkingLevel": "MEDIUM"}),
])
def test_unknown_models_get_the_suffix_as_written(suffix, expected):
    body = {"contents": []}
    upstream_model, _ = run_plugin("my-fine-tune" + suffix, body)
    assert upstream_model == "my-fine-tune"
    assert thinking_config(body) == expected


def test_family_follows_the_upstream_model_not_the_public_name():
    """An alias may stand between the suffix and the real model: the family is the real model's."""
    plugin = ThinkingSuffixes()
    ctx = PluginContext(method="generateContent", requested_model="fast-thinking-99999")
    assert plugin.resolve_model(ctx, "fast-thinking-99999") == "fast"
    ctx.upstream_model = "gemini-2.5-flash"  # what the alias plugin resolved "fast" to
    body = {"contents": []}
    plugin.rewrite_request(ctx, body)
    assert thinking_config(body)["thinkingBudget"] == 24576


# -- the client's own thinkingConfig wins, field by field ------------------------------------------------

def test_client_budget_wins_but_suffix_adds_include_thoughts():
    body = {"generationConfig": {"temperature": 0.2, "thinkingConfig": {"thinkingBudget": 300}}}
    run_plugin("gemini-2.5-flash-thinking-8192", body)
    assert body == {"generationConfig": {"temperature": 0.2,
                                         "thinkingConfig": {"thinkingBudget": 300, "includeThoughts": True}}}


def test_client_include_thoughts_wins_but_suffix_adds_budget():
    body = {"generationConfig": {"thinkingConfig": {"includeThoughts": False}}}
    run_plugin("gemini-2.5-flash-thinking-8192", body)
    assert thinking_config(body) == {"includeThoughts": False, "thinkingBudget": 8192}


def test_client_level_blocks_suffix_budget_and_vice_versa():
    """Google rejects a budget next to a level: whichever amount the client sent is the only one."""
    body = {"generationConfig": {"thinkingConfig": {"thinkingLevel": "LOW"}}}
    run_plugin("gemini-2.5-flash-thinking-8192", body)
    assert thinking_config(body) == {"thinkingLevel": "LOW", "includeThoughts": True}
    body = {"generationConfig": {"thinkingConfig": {"thinkingBudget": 2048}}}
    run_plugin("gemini-3-flash-preview-thinking-high", body)
    assert thinking_config(body) == {"thinkingBudget": 2048, "includeThoughts": True}


def test_snake_case_fields_count_as_set():
    """google-genai sends snake_case inside thinkingConfig; those fields win too, and stay where they are."""
    body = {"generation_config": {"thinking_config": {"include_thoughts": False, "thinking_budget": 128}}}
    upstream_model, changed = run_plugin("gemini-2.5-pro-thinking-high", body)
    assert upstream_model == "gemini-2.5-pro" and not changed
    assert body == {"generation_config": {"thinking_config": {"include_thoughts": False, "thinking_budget": 128}}}
    body = {"generationConfig": {"thinking_config": {"thinking_level": "high"}}}
    run_plugin("gemini-3-flash-preview-nothinking", body)
    assert body == {"generationConfig": {"thinking_config": {"thinking_level": "high", "includeThoughts": False}}}


def test_client_setting_everything_leaves_the_body_untouched():
    body = {"generationConfig": {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 1000}}}
    before = repr(body)
    _, changed = run_plugin("gemini-2.5-flash-nothinking", body)
    assert not changed and repr(body) == before


def test_merge_creates_missing_levels_only_when_needed():
    body = {"contents": []}
    assert merge_thinking(body, {}) is False
    assert body == {"contents": []}
    assert merge_thinking(body, {"thinkingBudget": 0}) is True
    assert body == {"contents": [], "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}}


# -- which calls carry it --------------------------------------------------------------------------------

def test_stream_and_legacy_count_tokens_carry_thinking():
    body = {"contents": []}
    run_plugin("gemini-2.5-flash-thinking-1024", body, method="streamGenerateContent")
    assert thinking_config(body) == {"includeThoughts": True, "thinkingBudget": 1024}
    legacy = {"generateContentRequest": {"model": "models/gemini-2.5-flash", "contents": []}}
    run_plugin("gemini-2.5-flash-thinking-1024", legacy, method="countTokens")
    assert thinking_config(legacy["generateContentRequest"]) == {"includeThoughts": True, "thinkingBudget": 1024}


@pytest.mark.parametrize("method", ["countTokens", "embedContent", "batchEmbedContents", "cachedContents.create"])
def test_other_calls_only_lose_the_suffix(method):
    body = {"contents": []}
    upstream_model, changed = run_plugin("gemini-2.5-flash-thinking", body, method=method)
    assert upstream_model == "gemini-2.5-flash" and not changed and body == {"contents": []}


def test_rewrite_without_a_suffix_does_nothing():
    plugin = ThinkingSuffixes()
    ctx = PluginContext(method="generateContent", requested_model="gemini-2.5-flash", upstream_model="gemini-2.5-flash")
    body = {"contents": []}
    assert plugin.rewrite_request(ctx, body) is False and body == {"contents": []}


def test_scratch_is_per_call():
    """One plugin instance serves every greenlet: what a call learned lives in that call's context only."""
    plugin = ThinkingSuffixes()
    first = PluginContext(method="generateContent")
    second = PluginContext(method="generateContent")
    plugin.resolve_model(first, "gemini-2.5-flash-nothinking")
    plugin.resolve_model(second, "gemini-2.5-pro-thinking-low")
    first.upstream_model, second.upstream_model = "gemini-2.5-flash", "gemini-2.5-pro"
    first_body, second_body = {}, {}
    plugin.rewrite_request(first, first_body)
    plugin.rewrite_request(second, second_body)
    assert thinking_config(first_body) == {"includeThoughts": False, "thinkingBudget": 0}
    assert thinking_config(second_body) == {"includeThoughts": True, "thinkingBudget": 1024}
    assert not [name for name in vars(plugin) if name != "_list_variants"]


# -- models.list / models.get ----------------------------------------------------------------------------

MODELS = {"models": [
    {"name": "models/gemini-2.5-flash", "displayName": "Gemini 2.5 Flash", "thinking": True,
     "supportedGenerationMethods": ["generateContent", "countTokens"]},
    {"name": "models/gemini-2.0-flash", "displayName": "Gemini 2.0 Flash",
     "supportedGenerationMethods": ["generateContent"]},
    {"name": "models/gemini-2.5-flash-native-audio-latest", "thinking": True,
     "supportedGenerationMethods": ["countTokens", "bidiGenerateContent"]},
], "nextPageToken": "abc"}


def test_list_models_adds_variants_of_thinking_models_only():
    body = {"models": [dict(model) for model in MODELS["models"]], "nextPageToken": "abc"}
    assert ThinkingSuffixes().list_models(PluginContext(method="models.list"), body) is True
    names = [model["name"] for model in body["models"]]
    assert names == [
        "models/gemini-2.5-flash",
        *[f"models/gemini-2.5-flash{suffix}" for suffix in thinking.VARIANTS],
        "models/gemini-2.0-flash",
        "models/gemini-2.5-flash-native-audio-latest",
    ]
    assert body["models"][1]["displayName"] == "Gemini 2.5 Flash (thinking)"
    assert body["nextPageToken"] == "abc"
    assert all(parse_suffix(name.removeprefix("models/")) for name in names[1:6])


def test_list_models_variants_can_be_turned_off():
    body = {"models": [dict(model) for model in MODELS["models"]]}
    assert ThinkingSuffixes(list_variants=False).list_models(PluginContext(method="models.list"), body) is False
    assert len(body["models"]) == 3


def test_get_model_names_the_requested_variant():
    plugin = ThinkingSuffixes()
    ctx = PluginContext(method="models.get", requested_model="gemini-2.5-flash-thinking-low")
    ctx.upstream_model = plugin.resolve_model(ctx, ctx.requested_model)
    body = dict(MODELS["models"][0])
    assert plugin.list_models(ctx, body) is True
    assert body["name"] == "models/gemini-2.5-flash-thinking-low"
    assert body["displayName"] == "Gemini 2.5 Flash (thinking-low)"
    plain = PluginContext(method="models.get", requested_model="gemini-2.5-flash", upstream_model="gemini-2.5-flash")
    assert plugin.list_models(plain, dict(MODELS["models"][0])) is False
