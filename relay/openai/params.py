"""This module provides the tables of OpenAI request parameters relay maps, ignores or rejects (the README's table).

Each mapped parameter names the Gemini field it becomes; each rejected one says why.  Ignored parameters
are accepted and dropped: they have no Gemini meaning and dropping them changes nothing a client relies
on.  Fields no table names are kept by validation and dropped by translation, like the ignored ones.
"""

CHAT_MAPPED_PARAMS = {
    "model": "the path's model; its thinking family decides how reasoning_effort maps",
    "messages": "contents (user → user, assistant → model, tool → functionResponse parts) + systemInstruction "
                "(system and developer)",
    "temperature": "generationConfig.temperature",
    "top_p": "generationConfig.topP",
    "max_completion_tokens": "generationConfig.maxOutputTokens",
    "max_tokens": "generationConfig.maxOutputTokens (max_completion_tokens wins)",
    "stop": "generationConfig.stopSequences",
    "n": "generationConfig.candidateCount",
    "seed": "generationConfig.seed",
    "presence_penalty": "generationConfig.presencePenalty (0 is left out)",
    "frequency_penalty": "generationConfig.frequencyPenalty (0 is left out)",
    "logprobs": "generationConfig.responseLogprobs",
    "top_logprobs": "generationConfig.logprobs",
    "response_format": "generationConfig.responseMimeType application/json (+ responseJsonSchema for json_schema)",
    "tools": "tools[].functionDeclarations[] with parametersJsonSchema",
    "tool_choice": "toolConfig.functionCallingConfig (auto → AUTO, none → NONE, required → ANY, "
                   "named → ANY + allowedFunctionNames)",
    "reasoning_effort": "generationConfig.thinkingConfig (thinkingLevel on Gemini 3, thinkingBudget on 2.5)",
    "modalities": "generationConfig.responseModalities (text, image)",
    "web_search_options": "tools[].googleSearch",
    "stream": "streamGenerateContent?alt=sse instead of generateContent",
    "stream_options.include_usage": "a last chunk with usage and no choices",
    "google / extra_body.google": "thinking_config → thinkingConfig, cached_content → cachedContent, "
                                  "safety_settings → safetySettings",
}

CHAT_IGNORED_PARAMS = (
    "user", "metadata", "store", "service_tier", "parallel_tool_calls (true)", "prompt_cache_key",
    "safety_identifier", "logit_bias", "prediction", "verbosity", "stream_options.include_obfuscation",
    "tools[].function.strict", "response_format.json_schema.name", "response_format.json_schema.strict",
    "messages[].name", "messages[].reasoning_content", "messages[].content[].image_url.detail",
)

CHAT_REJECTED_PARAMS = {
    "audio": "Gemini's OpenAI door returns text and images, not audio.",
    "modalities (audio)": "Gemini's OpenAI door returns text and images, not audio.",
    "n (above 1, with stream)": "Gemini streams a single candidate.",
    "parallel_tool_calls (false)": "Gemini has no switch to stop parallel function calls.",
    "functions": "deprecated: send tools.",
    "function_call": "deprecated: send tool_choice.",
    "tools[].type (not function)": "Gemini declares functions only.",
    "messages[].role (function)": "deprecated: send tool messages.",
    "messages[].content[].file.file_id": "OpenAI file ids have no Gemini counterpart: send file_data.",
    "reasoning_effort with google.thinking_config.thinking_budget/thinking_level": "Google allows one or the other.",
}

EMBEDDINGS_MAPPED_PARAMS = {
    "model": "the path's model (models/<id>:batchEmbedContents)",
    "input": "requests[].content.parts[].text, 100 per batchEmbedContents call, up to 2,048",
    "dimensions": "requests[].outputDimensionality",
    "encoding_format": "float lists, or base64 of little-endian float32 (relay encodes)",
}

EMBEDDINGS_IGNORED_PARAMS = ("user",)

EMBEDDINGS_REJECTED_PARAMS = {
    "input (token arrays)": "Gemini embeds text only: send strings.",
    "input (more than 2,048 entries)": "OpenAI's own limit.",
}


def readme_tables():
    """The README's parameter tables, rendered from the tables above (a test keeps the README in step)."""
    lines = ["| chat parameter | what relay does |", "|---|---|"]
    lines += [f"| `{name}` | mapped: {target} |" for name, target in CHAT_MAPPED_PARAMS.items()]
    lines += [f"| `{name}` | accepted and ignored |" for name in CHAT_IGNORED_PARAMS]
    lines += [f"| `{name}` | rejected (400 naming it): {reason} |" for name, reason in CHAT_REJECTED_PARAMS.items()]
    lines += ["", "| embeddings parameter | what relay does |", "|---|---|"]
    lines += [f"| `{name}` | mapped: {target} |" for name, target in EMBEDDINGS_MAPPED_PARAMS.items()]
    lines += [f"| `{name}` | accepted and ignored |" for name in EMBEDDINGS_IGNORED_PARAMS]
    lines += [f"| `{name}` | rejected (400 naming it): {reason} |" for name, reason in EMBEDDINGS_REJECTED_PARAMS.items()]
    return "\n".join(lines) + "\n"
