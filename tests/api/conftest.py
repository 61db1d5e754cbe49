"""This module provides the fixtures of the Files, Batch and media route tests: a managed relay app (two upstream
keys, two client keys) in this process, answered by the fake upstream's in-process twin, which keeps files,
upload sessions, batches and operations per key like Google (``google.resources``, ``google.requests``)."""

import pytest
import responses

from tests.conftest import UPSTREAM_URL
from tests.fakeupstream import inprocess

CLIENT_A = "client-a-api-key-1111"
CLIENT_B = "client-b-api-key-2222"
UPSTREAM_KEYS = ("upstream-one-aaaa1111", "upstream-two-bbbb2222")
PUBLIC_URL = "https://relay.example.com/base"
MANAGED = {"RELAY_UPSTREAM_KEYS": ",".join(UPSTREAM_KEYS), "RELAY_API_KEYS": f"{CLIENT_A},{CLIENT_B}",
           "RELAY_PUBLIC_URL": PUBLIC_URL}


@pytest.fixture
def google():
    """The in-process fake upstream (its State): ``.requests`` is what reached it, ``.resources`` what it keeps."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield inprocess.install(mock, UPSTREAM_URL)


@pytest.fixture
def relay_app(app_factory, google):
    """``relay_app(**env)``: a managed relay app (MANAGED plus ``env``; a None value removes a variable);
    ``overrides`` replaces Settings fields (e.g. aliases)."""
    def build(overrides=None, **env):
        environ = {**MANAGED, **env}
        return app_factory({name: value for name, value in environ.items() if value is not None}, overrides=overrides)
    return build


@pytest.fixture
def client(relay_app):
    return relay_app().test_client()


def as_client(key=CLIENT_A, **headers):
    return {"x-goog-api-key": key, **headers}


def upstream_calls(google, fragment=""):
    """The requests that reached the upstream whose path (with query) contains ``fragment``."""
    return [entry for entry in google.requests if fragment in entry["path"] + "?" + entry["query"]]
