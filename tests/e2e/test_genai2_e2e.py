"""End-to-end: google-genai 2.x (``/v1beta`` by default) against relay, from its own virtualenv.

google-genai 3.x (the suite's pinned SDK) defaults to ``/v1``; many teams still run 2.x, which cannot be
installed beside it, so this test builds a small virtualenv with the pinned 2.x release once per machine
(cached under ~/.cache) and drives relay from a subprocess.
"""
from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest

from .harness import header_values

pytestmark = pytest.mark.timeout(240)

GENAI_2 = "google-genai==2.34.0"
UPSTREAM_KEY = "up-key-genai2-Mm41"
CLIENT_KEY = "client-key-genai2-Nn52"
PROBE = r"""
import json, sys
from google import genai
client = genai.Client(api_key=sys.argv[2], http_options={"base_url": sys.argv[1]})
out = {
    "text": client.models.generate_content(model="gemini-2.0-flash", contents="hi").text,
    "chunks": [chunk.text for chunk in client.models.generate_content_stream(model="gemini-2.0-flash", contents="hi")],
    "tokens": client.models.count_tokens(model="gemini-2.0-flash", contents="hi").total_tokens,
    "dims": len(client.models.embed_content(model="gemini-embedding-001", contents="hi").embeddings[0].values),
}
print(json.dumps(out))
"""


@pytest.fixture(scope="session")
def genai2_python():
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "relay-tests" / GENAI_2.replace("==", "-")
    python = home / "bin" / "python"
    if not (home / "ready").exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(home)
        install = subprocess.run([str(python), "-m", "pip", "install", "-q", GENAI_2], capture_output=True, text=True, timeout=200)
        if install.returncode != 0:
            message = f"could not install {GENAI_2}: {install.stderr[-800:]}"
            pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
        (home / "ready").write_text(GENAI_2)
    return python


def test_genai_2x_through_relay(genai2_python, relay_factory, fake_upstream):
    relay = relay_factory(env={"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY})
    run = subprocess.run([str(genai2_python), "-c", PROBE, relay.url, CLIENT_KEY],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "NO_PROXY": "*"})
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert "Rayleigh" in result["text"]
    assert len(result["chunks"]) >= 2 and "".join(result["chunks"])
    assert result["tokens"] > 0 and result["dims"] > 0
    paths = [entry["path"] for entry in fake_upstream.requests()]
    assert paths == [
        "/v1beta/models/gemini-2.0-flash:generateContent",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
        "/v1beta/models/gemini-2.0-flash:countTokens",
        "/v1beta/models/gemini-embedding-001:batchEmbedContents",
    ]
    for entry in fake_upstream.requests():
        assert header_values(entry, "x-goog-api-key") == [UPSTREAM_KEY]
