"""Tests for relay/api/routing.py and the URL map settings: no path, however spelled, is answered with a redirect
built from the caller's Host header, and doubled slashes are served like single ones."""

import re

import pytest

from tests.support import UPSTREAM_URL as UPSTREAM

UPSTREAM_KEY = "AIzaUpstreamKey-routing-0123456789"
CLIENT_KEY = "relay-client-key-routing-0123456789"
ADMIN_TOKEN = "admin-token-routing-0123456789"
SECRET = "SECRET-query-key-routing-0123456789"
HOSTILE = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
MODELS = b'{"models": [{"name": "models/gemini-2.5-flash"}]}'


@pytest.fixture(scope="module")
def app(module_app_factory):
    return module_app_factory({"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": CLIENT_KEY,
                               "RELAY_ADMIN_TOKEN": ADMIN_TOKEN})


def get_raw(app, path, query, headers=HOSTILE):
    """GET with ``path`` as the raw PATH_INFO (the test client would read ``//host/...`` as a URL with a host)."""
    client = app.test_client()
    response = client.get(f"/placeholder?{query}", headers=headers, environ_overrides={"PATH_INFO": path})
    response.get_data()
    response.close()
    return response


def assert_no_redirect_and_no_echo(response, *secrets):
    assert not 300 <= response.status_code < 400, (response.status_code, response.headers)
    assert "Location" not in response.headers
    seen = str(list(response.headers.items())) + response.get_data(as_text=True)
    assert "evil.example" not in seen
    for secret in secrets:
        assert secret not in seen


PATHS = ["//v1beta/models", "///v1beta/models", "/v1beta//models", "/v1beta/models/", "//v1beta//models//",
         "/v1/v1beta//models", "/relay", "//relay", "/relay//", "/relay/upstreams/", "//relay/usage", "/healthz/",
         "//healthz", "/readyz/", "/metrics/", "//metrics", "/openapi.json/", "/static//usage.html",
         "/v1beta/models/gemini-2.5-flash/", "/v1beta/cachedContents/", "//v1beta/cachedContents/abc/"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("query", [f"key={SECRET}", f"key={CLIENT_KEY}&x=1"])
def test_no_spelling_of_a_path_is_answered_with_a_redirect(app, mock_upstream, path, query):
    mock_upstream.add_callback("GET", re.compile(r".*"), callback=lambda request: (200, {}, MODELS))
    response = get_raw(app, path, query)

    assert_no_redirect_and_no_echo(response, SECRET, CLIENT_KEY)
    for call in mock_upstream.calls:
        assert "key=" not in call.request.url and "//" not in call.request.url.removeprefix("http://")


@pytest.mark.parametrize("path", ["//v1beta/models", "/v1beta//models", "/v1beta/models/", "///v1/v1beta/models//"])
def test_doubled_and_trailing_slashes_are_served(app, mock_upstream, path):
    mock_upstream.get(f"{UPSTREAM}/{'v1beta' if 'v1beta' in path else 'v1'}/models", body=MODELS)
    response = get_raw(app, path, f"key={CLIENT_KEY}&pageSize=5")

    assert response.status_code == 200, response.data
    assert [call.request.url for call in mock_upstream.calls] == [f"{UPSTREAM}/v1beta/models?pageSize=5"]


def test_the_usage_page_is_served_with_or_without_its_slash(app):
    for path in ("/relay", "/relay/", "//relay//"):
        response = get_raw(app, path, "")
        assert response.status_code == 200 and response.content_type.startswith("text/html")


def test_no_rule_redirects(app):
    """Every rule, with a slash added or taken away: never a 3xx (a rule added later inherits the map's settings)."""
    assert app.url_map.merge_slashes is False and app.url_map.strict_slashes is False
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", "x", rule.rule)
        for variant in {path.rstrip("/"), path.rstrip("/") + "/", "/" + path}:
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                response = app.test_client().open("/placeholder", method=method, headers=HOSTILE,
                                                  environ_overrides={"PATH_INFO": variant or "/"})
                assert not 300 <= response.status_code < 400, (method, variant, response.headers)
                response.close()
