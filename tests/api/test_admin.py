"""Tests for the admin surfaces' one token check (relay/clients/auth.py), as /relay/*, /metrics and /debug/runtime
use it, and for what /relay/usage says to a token that is neither the admin token nor a client key."""

import pytest

from relay.clients import auth

UPSTREAM_KEY = "AIzaUpstreamKey-admin-0123456789"
CLIENT_KEY = "relay-client-key-admin-0123456789"
ADMIN_TOKEN = "admin-token-admin-0123456789"
SURFACES = ("/relay/upstreams", "/metrics", "/debug/runtime")


@pytest.fixture(scope="module")
def admin(module_app_factory):
    return module_app_factory({"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY,
                               "RELAY_ADMIN_TOKEN": ADMIN_TOKEN}).test_client()


@pytest.fixture(scope="module")
def no_admin(module_app_factory):
    return module_app_factory({"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY}).test_client()


@pytest.mark.parametrize("headers, expected", [
    ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, True), ({"Authorization": f"bearer  {ADMIN_TOKEN} "}, True),
    ({"Authorization": f"Bearer {ADMIN_TOKEN}x"}, False), ({"Authorization": ADMIN_TOKEN}, False),
    ({"Authorization": f"Basic {ADMIN_TOKEN}"}, False), ({"x-goog-api-key": ADMIN_TOKEN}, False), ({}, False),
])
def test_one_check_for_the_admin_token(headers, expected):
    assert auth.presents_admin_token(headers, ADMIN_TOKEN) is expected
    assert auth.presents_admin_token(headers, None) is False
    assert auth.presents_admin_token({"Authorization": "Bearer "}, "") is False


def test_every_admin_surface_is_off_without_the_token_and_closed_to_a_wrong_one(admin, no_admin, google_error):
    for path in SURFACES:
        google_error(no_admin.get(path, headers={"Authorization": "Bearer anything"}), 403, "PERMISSION_DENIED")
        error = google_error(admin.get(path, headers={"Authorization": f"Bearer {CLIENT_KEY}"}), 401,
                             "UNAUTHENTICATED")
        assert "RELAY_ADMIN_TOKEN" in error["message"] and path in error["message"]
        assert admin.get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200


def test_a_wrong_token_on_the_usage_view_hears_about_the_admin_token(admin, google_error):
    error = google_error(admin.get("/relay/usage", headers={"Authorization": "Bearer not-the-admin-token"}), 401,
                         "UNAUTHENTICATED")
    assert "admin token (RELAY_ADMIN_TOKEN)" in error["message"] and "not-the-admin-token" not in error["message"]
    own = admin.get("/relay/usage", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert own.status_code == 200 and own.json["client"].startswith("static:")


def test_the_usage_page_says_which_token_it_wants():
    from importlib.resources import files

    page = files("relay").joinpath("static/usage.html").read_text()
    assert "this page needs the admin token (RELAY_ADMIN_TOKEN)" in page
