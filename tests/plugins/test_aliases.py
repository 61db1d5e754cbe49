"""Tests for alias and suffix resolution together: an alias whose target carries a thinking suffix.

The suffix must come off before the upstream sees the model, and turn into a thinkingConfig, whichever
way round the caller combines them; asserted on what reached the upstream.
"""

import json

import pytest
import responses

from tests.support import UPSTREAM_URL

CLIENT_KEY = "client-key-aliases-0001"
ANSWER = {"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}],
          "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2}}
ALIASES = {"deep": "gemini-2.5-flash-thinking-8192", "fast": "gemini-2.5-flash", "loop-a": "loop-b-thinking",
           "loop-b": "loop-a-thinking"}


@pytest.fixture
def client(app_factory, tmp_path, mock_upstream):
    config = tmp_path / "relay.toml"
    config.write_text(f'[[upstreams]]\nname = "google"\nurl = "{UPSTREAM_URL}"\nkeys = ["upstream-key-1"]\n\n[aliases]\n' + "".join(f'"{name}" = "{target}"\n' for name, target in ALIASES.items()))
    app = app_factory({"RELAY_CONFIG": str(config), "RELAY_API_KEYS": CLIENT_KEY})
    mock_upstream.add(responses.POST, f"{UPSTREAM_URL}/v1beta/models/gemini-2.5-flash:generateContent", json=ANSWER)
    return app.test_client()


def generate(client, model):
    return client.post(f"/v1beta/models/{model}:generateContent", headers={"x-goog-api-key": CLIENT_KEY},
                       json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})


def sent(mock_upstream):
    request = mock_upstream.calls[-1].request
    return request.url, json.loads(request.body)


def test_alias_to_a_suffixed_model_reaches_upstream_without_the_suffix(client, mock_upstream):
    response = generate(client, "deep")
    assert response.status_code == 200, response.data
    url, body = sent(mock_upstream)
    assert url == f"{UPSTREAM_URL}/v1beta/models/gemini-2.5-flash:generateContent"
    assert body["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 8192}


def test_suffix_on_an_alias_still_applies(client, mock_upstream):
    assert generate(client, "fast-nothinking").status_code == 200
    url, body = sent(mock_upstream)
    assert url.endswith("/models/gemini-2.5-flash:generateContent")
    assert body["generationConfig"]["thinkingConfig"] == {"includeThoughts": False, "thinkingBudget": 0}


def test_the_callers_suffix_wins_over_the_alias_targets(client, mock_upstream):
    assert generate(client, "deep-nothinking").status_code == 200
    url, body = sent(mock_upstream)
    assert url.endswith("/models/gemini-2.5-flash:generateContent")
    assert body["generationConfig"]["thinkingConfig"] == {"includeThoughts": False, "thinkingBudget": 0}


def test_aliases_that_name_each_other_end_after_a_bounded_number_of_passes(client, mock_upstream):
    response = generate(client, "loop-a")  # each pass ends in a suffix again: only the pass limit stops it
    assert response.status_code == 503  # no such upstream model (the mock refuses the connection)
    assert [call.request.url.split("/models/")[1] for call in mock_upstream.calls] == ["loop-b-thinking:generateContent"]
