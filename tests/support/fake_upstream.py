"""This module provides the fixtures of the fake upstream's own tests (tests/test_fakeupstream*.py): the fake as its
own process, one per module, and reset for each test.  A test module takes them by assignment:
``fake_process, fake = fake_upstream.fake_process, fake_upstream.fake``.

The e2e suites start it through tests/e2e/conftest.py instead, beside their relays.
"""

import os

import pytest

from tests.e2e.harness import PROXY_VARIABLES, FakeUpstream


@pytest.fixture(scope="module")
def fake_process(tmp_path_factory):
    """The fake upstream process; proxies and Google key variables are unset meanwhile, so that SDK clients in this
    process talk to it directly."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper() in PROXY_VARIABLES or name in ("GEMINI_API_KEY", "GOOGLE_API_KEY",
                                                           "GOOGLE_GENAI_API_VERSION"):
                patch.delenv(name)
        with FakeUpstream(tmp_path_factory.mktemp("fake")) as fake:
            yield fake


@pytest.fixture
def fake(fake_process):
    """The module's fake upstream with an empty log and no scripts."""
    fake_process.reset()
    return fake_process
