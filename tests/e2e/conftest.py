"""This module provides the e2e fixtures: a fake upstream per module (reset per test) and relay launchers."""
from __future__ import annotations

import os

import pytest

from .harness import PROXY_VARIABLES, REPO_ROOT, FakeUpstream, RelayServer, genai_client as make_genai_client


@pytest.fixture(scope="session", autouse=True)
def no_proxies_for_clients():
    """The SDK (httpx) and requests in this process must talk to loopback directly."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper() in PROXY_VARIABLES:
                patch.delenv(name)
        patch.setenv("NO_PROXY", "*")
        patch.setenv("no_proxy", "*")
        for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_API_VERSION", "GOOGLE_GENAI_USE_VERTEXAI"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def fake_upstream_process(tmp_path_factory):
    with FakeUpstream(tmp_path_factory.mktemp("fake")) as fake:
        yield fake


@pytest.fixture
def fake_upstream(fake_upstream_process):
    """The module's fake upstream with an empty log and no scripts."""
    fake_upstream_process.reset()
    yield fake_upstream_process


def _require_relay():
    if not (REPO_ROOT / "app.py").exists() or not (REPO_ROOT / "gunicorn.conf.py").exists():
        pytest.skip("the relay is not in the tree yet (app.py / gunicorn.conf.py missing)")


class RelayFactory:
    """Starts relays against a given upstream; stops them all on close()."""

    def __init__(self, workdir, default_upstream_url: str):
        self.workdir = workdir
        self.default_upstream_url = default_upstream_url
        self.relays: list[RelayServer] = []

    def __call__(self, env: dict | None = None, workers: int = 2, upstream_url: str | None = None) -> RelayServer:
        _require_relay()
        name = f"relay-{len(self.relays)}"
        env = {"RELAY_DB": str(self.workdir / f"{name}.db"), **(env or {})}
        relay = RelayServer(self.workdir, upstream_url or self.default_upstream_url, env=env, workers=workers,
                            name=name)
        self.relays.append(relay)
        return relay.start()

    def close(self) -> None:
        for relay in self.relays:
            relay.stop()


@pytest.fixture
def relay_factory(tmp_path, fake_upstream_process):
    """Start relays (env overrides as a dict, None removes a variable); all stopped at teardown."""
    factory = RelayFactory(tmp_path, fake_upstream_process.url)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_relay_factory(tmp_path_factory, fake_upstream_process):
    """Like relay_factory, but relays live for the whole module (share one where the env is the same)."""
    factory = RelayFactory(tmp_path_factory.mktemp("relay"), fake_upstream_process.url)
    yield factory
    factory.close()


@pytest.fixture
def genai_client():
    """`genai_client(base_url, api_key, api_version=None)` → google.genai.Client."""
    return make_genai_client
