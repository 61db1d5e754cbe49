"""This module provides the thinking-suffix plugin: ``gemini-2.5-flash-thinking-8192`` → a thinkingConfig.

Suffixes: ``-thinking`` (include thoughts, dynamic budget), ``-thinking-<N>`` (budget N), ``-nothinking``
(as little thinking as the model allows), ``-thinking-minimal|low|medium|high``.  The suffix is stripped
from the model the upstream sees and mapped per model family, following Google's documented limits:
Gemini 2.5 takes a token budget (clamped to the family's range), Gemini 3 and later a thinking level
(budgets map to levels, unsupported levels to the nearest supported one).  Whatever the client set in
``thinkingConfig`` itself wins, field by field.
"""

import re
from dataclasses import dataclass

from relay.gemini.methods import generate_request

SUFFIX = re.compile(r"^(?P<base>.+?)-(?:(?P<off>nothinking)|thinking(?:-(?P<arg>\d+|minimal|low|medium|high))?)$")
LEVELS = ("MINIMAL", "LOW", "MEDIUM", "HIGH")
# A level asked of a budget model: Google's own OpenAI-compatibility mapping (low 1K, medium 8K, high 24K
# tokens); minimal is the smallest budget every 2.5 model accepts without switching thinking off.
LEVEL_BUDGETS = {"MINIMAL": 512, "LOW": 1024, "MEDIUM": 8192, "HIGH": 24576}
VARIANTS = ("-thinking", "-nothinking", "-thinking-low", "-thinking-medium", "-thinking-high")


@dataclass(frozen=True)
class Family:
    name: str
    budget_min: int = 0
    budget_max: int = 24576
    can_disable: bool = True
    lowest_nonzero: int = 1
    levels: tuple = ()  # non-empty: the family takes thinkingLevel, not a budget


# Google's documented limits (ai.google.dev/gemini-api/docs/thinking; Vertex "Thinking" page, 2026):
# 2.5 Pro 128–32768 and cannot switch thinking off; 2.5 Flash 0–24576; 2.5 Flash-Lite 0 or 512–24576.
GEMINI_25_PRO = Family("gemini-2.5-pro", budget_min=128, budget_max=32768, can_disable=False)
GEMINI_25_FLASH = Family("gemini-2.5-flash")
GEMINI_25_FLASH_LITE = Family("gemini-2.5-flash-lite", lowest_nonzero=512)
# Gemini 3 levels: 3 Pro LOW/HIGH; 3.1 Pro and later Pros LOW/MEDIUM/HIGH; every Flash-Lite and the Flash
# models up to 3.6 all four; Flash from 3.7 on no MINIMAL (Google answers 400 "Thinking level MINIMAL is not
# supported", fixtures/thinking/vercel-ai__google-gemini-3.7-flash-thinking-levels.json).
GEMINI_3_PRO = Family("gemini-3-pro", levels=("LOW", "HIGH"))
GEMINI_3_LATER_PRO = Family("gemini-3.x-pro", levels=("LOW", "MEDIUM", "HIGH"))
GEMINI_3_FLASH = Family("gemini-3-flash", levels=LEVELS)
GEMINI_3_FLASH_LITE = Family("gemini-3-flash-lite", levels=LEVELS)
GEMINI_37_FLASH = Family("gemini-3.7-flash", levels=("LOW", "MEDIUM", "HIGH"))
GEMINI_3_LATER = Family("gemini-3+", levels=("LOW", "MEDIUM", "HIGH"))
_GENERATION = re.compile(r"^gemini-(?P<major>\d+)(?:\.(?P<minor>\d+))?-(?:(?P<tier>pro|flash-lite|flash)(?=-|$))?")
# Image, speech and live-audio variants think differently or not at all: relay does not know their limits.
_NOT_TEXT = ("-image", "-tts", "-audio", "-live", "embedding")


def family_of(model):
    """The thinking family of a model id, or None when relay does not know it (suffix applied as written)."""
    if any(marker in model for marker in _NOT_TEXT):
        return None
    if model.startswith("gemini-2.5-pro"):
        return GEMINI_25_PRO
    if model.startswith("gemini-2.5-flash-lite"):
        return GEMINI_25_FLASH_LITE
    if model.startswith("gemini-2.5-flash"):
        return GEMINI_25_FLASH
    match = _GENERATION.match(model)
    if not match or int(match["major"]) < 3:
        return None
    version = (int(match["major"]), int(match["minor"] or 0))
    if match["tier"] == "pro":
        return GEMINI_3_PRO if version == (3, 0) else GEMINI_3_LATER_PRO
    if match["tier"] == "flash-lite":
        return GEMINI_3_FLASH_LITE
    if match["tier"] == "flash":
        return GEMINI_3_FLASH if version < (3, 7) else GEMINI_37_FLASH
    return GEMINI_3_LATER


def parse_suffix(model):
    """``(base model, kind, argument)`` for a suffixed name, else None; kind is thinking or nothinking."""
    match = SUFFIX.match(model)
    if not match:
        return None
    if match.group("off"):
        return match.group("base"), "nothinking", None
    return match.group("base"), "thinking", match.group("arg")


def clamp_budget(family, budget):
    if budget == -1:
        return -1
    if budget == 0 and family.can_disable:
        return 0
    budget = max(family.budget_min, min(family.budget_max, budget))
    return max(budget, family.lowest_nonzero) if budget else budget


def nearest_level(family, level):
    if level in family.levels:
        return level
    wanted = LEVELS.index(level)
    # Ties go to the higher level: asking for more thought than a model offers beats asking for less.
    return min(family.levels, key=lambda candidate: (abs(LEVELS.index(candidate) - wanted), -LEVELS.index(candidate)))


def level_for_budget(budget):
    if budget == 0:
        return "MINIMAL"
    if budget == -1:
        return None
    return "LOW" if budget <= 1024 else "MEDIUM" if budget <= 8192 else "HIGH"


def suffix_config(family, kind, arg):
    """The thinkingConfig (camelCase) a suffix asks for on a model of ``family`` (None: unknown model)."""
    if family is None:
        if kind == "nothinking":
            return {"thinkingBudget": 0}
        if arg is None:
            return {"includeThoughts": True, "thinkingBudget": -1}
        if arg.isdigit():
            return {"includeThoughts": True, "thinkingBudget": int(arg)}
        return {"includeThoughts": True, "thinkingLevel": arg.upper()}
    if kind == "nothinking":
        if family.levels:
            return {"includeThoughts": False, "thinkingLevel": family.levels[0]}
        return {"includeThoughts": False, "thinkingBudget": 0 if family.can_disable else family.budget_min}
    config = {"includeThoughts": True}
    if family.levels:
        level = None if arg is None else (level_for_budget(int(arg)) if arg.isdigit() else arg.upper())
        if level is not None:
            config["thinkingLevel"] = nearest_level(family, level)
        return config
    if arg is None:
        budget = -1
    elif arg.isdigit():
        budget = int(arg)
    else:
        budget = LEVEL_BUDGETS[arg.upper()]
    config["thinkingBudget"] = clamp_budget(family, budget)
    return config


def _child(mapping, camel, snake):
    """The dict under ``camel`` or ``snake`` (clients send either spelling), creating ``camel`` if neither is."""
    for key in (camel, snake):
        value = mapping.get(key)
        if isinstance(value, dict):
            return value
    mapping[camel] = {}
    return mapping[camel]


def _existing(mapping, camel, snake):
    for key in (camel, snake):
        value = mapping.get(key)
        if isinstance(value, dict):
            return value
    return {}


def merge_thinking(body, wanted):
    """Add the ``wanted`` thinkingConfig fields the client did not set itself; True if anything was added.

    The client wins field by field: its includeThoughts beats the suffix's, and its thinkingBudget or
    thinkingLevel beats the suffix's amount (Google rejects a request carrying both a budget and a level).
    """
    generation = _existing(body, "generationConfig", "generation_config")
    present = set(_existing(generation, "thinkingConfig", "thinking_config"))
    has_amount = bool(present & {"thinkingBudget", "thinking_budget", "thinkingLevel", "thinking_level"})
    has_include = bool(present & {"includeThoughts", "include_thoughts"})
    missing = {
        name: value for name, value in wanted.items()
        if not (has_amount if name in ("thinkingBudget", "thinkingLevel") else has_include)
    }
    if not missing:
        return False
    generation = _child(body, "generationConfig", "generation_config")
    _child(generation, "thinkingConfig", "thinking_config").update(missing)
    return True


class ThinkingSuffixes:
    name = "thinking"
    suffixes = ("-thinking", "-thinking-<N>", "-nothinking", "-thinking-minimal", "-thinking-low",
                "-thinking-medium", "-thinking-high")

    def __init__(self, list_variants=True):
        self._list_variants = list_variants

    def resolve_model(self, ctx, model):
        parsed = parse_suffix(model)
        if parsed is None:
            return None
        base, kind, arg = parsed
        scratch = ctx.scratch_for(self)
        if "kind" not in scratch:  # the caller's own suffix wins over one an alias's target carries
            scratch.update(kind=kind, arg=arg, base=base)
        return base

    def rewrite_request(self, ctx, body):
        scratch = ctx.scratch_for(self)
        if "kind" not in scratch:
            return False
        # countTokens with plain contents has no generationConfig to carry thinking: only its legacy form does.
        body = generate_request(ctx.method, body)
        if body is None:
            return False
        # The family is the model's upstream name: an alias may stand between the suffix and the real model.
        wanted = suffix_config(family_of(ctx.upstream_model or scratch["base"]), scratch["kind"], scratch["arg"])
        return merge_thinking(body, wanted)

    def list_models(self, ctx, body):
        if isinstance(body.get("models"), list):
            if not self._list_variants:
                return False
            listed = []
            for model in body["models"]:
                listed.append(model)
                if _thinks(model):
                    listed.extend(_variant(model, suffix) for suffix in VARIANTS)
            changed = len(listed) != len(body["models"])
            body["models"] = listed
            return changed
        requested = ctx.requested_model or ""
        if requested != ctx.upstream_model and isinstance(body.get("name"), str) and parse_suffix(requested):
            body.update(_variant(body, requested[len(parse_suffix(requested)[0]):]))
            return True
        return False


def _thinks(model):
    """A listed model that thinks and generates content (a live-audio model that thinks has no use for a suffix)."""
    if not isinstance(model, dict) or not model.get("thinking") or not isinstance(model.get("name"), str):
        return False
    methods = model.get("supportedGenerationMethods")
    return not isinstance(methods, list) or "generateContent" in methods


def _variant(model, suffix):
    variant = dict(model)
    variant["name"] = model["name"] + suffix
    if isinstance(model.get("displayName"), str):
        variant["displayName"] = f"{model['displayName']} ({suffix.lstrip('-')})"
    return variant


# OpenAI's reasoning_effort on a budget model, as Google's own OpenAI-compatibility layer maps it
# (ai.google.dev/gemini-api/docs/openai: minimal and low 1K, medium 8K, high 24K tokens); the efforts
# openai-python 2.x added above high ask for the most a family offers.
EFFORT_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


def effort_config(model, effort):
    """The thinkingConfig (camelCase) an OpenAI ``reasoning_effort`` asks for on ``model``.

    ``none`` asks for as little thinking as the model allows (what ``-nothinking`` does).  Gemini 3
    families get the nearest level they support; 2.5 families Google's budget, clamped to their range;
    a model relay does not know gets Google's budget as written.
    """
    family = family_of(model)
    if effort == "none":
        return suffix_config(family, "nothinking", None)
    if effort in ("xhigh", "max"):
        if family is not None and not family.levels:
            return {"thinkingBudget": family.budget_max}
        effort = "high"
    if family is None:
        return {"thinkingBudget": EFFORT_BUDGETS[effort]}
    if family.levels:
        return {"thinkingLevel": nearest_level(family, effort.upper())}
    return {"thinkingBudget": clamp_budget(family, EFFORT_BUDGETS[effort])}
