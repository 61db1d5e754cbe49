"""relay/openapi.json against relay itself: schemathesis generates calls from the document (valid and invalid),
runs them through the Flask app in this process with the fake upstream's in-process twin, and checks that
nothing answers 5xx and that every status, content type and body is one the document promises.
"""

import json
import os

import pytest
import responses
from hypothesis import HealthCheck, settings

from tests.support import UPSTREAM_URL
from tests.fakeupstream import inprocess

if os.environ.get("CI"):
    import schemathesis  # CI installs requirements-dev.txt: a missing schemathesis is a failure there
else:
    schemathesis = pytest.importorskip("schemathesis")

from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance, response_schema_conformance, status_code_conformance,
)
from tests.support import REPO_ROOT

DOCUMENT = REPO_ROOT / "relay" / "openapi.json"
CLIENT_KEY = "client-key-openapi-Oo11"
ADMIN_TOKEN = "admin-openapi-Pp22"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def relay_app(module_app_factory):
    return module_app_factory({"RELAY_UPSTREAM_KEYS": "up-openapi", "RELAY_API_KEYS": CLIENT_KEY,
                               "RELAY_ADMIN_TOKEN": ADMIN_TOKEN, "RELAY_PUBLIC_URL": "https://relay.test"})


@pytest.fixture(scope="module")
def upstream():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield inprocess.install(mock, UPSTREAM_URL)


@pytest.fixture(scope="module")
def api_schema(relay_app, upstream):
    return schemathesis.openapi.from_wsgi("/openapi.json", relay_app)


# tunedModels routes share every schema with their models twins: testing one of each keeps the run short.
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex="^/{version}/tunedModels")


@schema.parametrize()
@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_relay_matches_its_openapi_document(case):
    case.call_and_validate(headers={"x-goog-api-key": CLIENT_KEY, "Authorization": f"Bearer {ADMIN_TOKEN}"},
                           checks=CHECKS)


def test_unauthenticated_calls_match_the_document_too(relay_app, upstream, api_schema):
    client = relay_app.test_client()
    for operation in api_schema.get_all_operations():
        operation = operation.ok()
        if operation.path.startswith("/{version}"):
            path = concrete(operation.path)
            response = client.open(path, method=operation.method.upper(), json={})
            assert response.status_code in (400, 401), (operation.method, path, response.status_code)
            error = response.get_json()
            error = error[0] if isinstance(error, list) else error
            assert error["error"]["status"] in ("UNAUTHENTICATED", "INVALID_ARGUMENT")


def concrete(path):
    path = path.replace("{version}", "v1beta").replace("{model}", "gemini-2.5-flash").replace("{cacheId}", "abc")
    return path.replace("{fileId}", "abc").replace("{batchId}", "abc").replace("{operationId}", "abc")


def test_document_and_routes_agree(relay_app):
    response = relay_app.test_client().get("/openapi.json")
    assert response.status_code == 200 and response.data == DOCUMENT.read_bytes()
    document = json.loads(DOCUMENT.read_text())
    assert document["openapi"] == "3.1.0"
    adapter = relay_app.url_map.bind("relay.test")
    documented_endpoints = set()
    for path, item in document["paths"].items():
        for method in item:
            endpoint, _arguments = adapter.match(concrete(path), method=method.upper())
            documented_endpoints.add((endpoint, method.upper()))
            prefixed, _arguments = adapter.match("/v1" + concrete(path), method=method.upper()) \
                if path.startswith("/{version}") else (None, None)
            assert prefixed is None or prefixed.partition(".")[0].endswith("_v1_prefix")
    # A WebSocket route is described by its HTTP twin (the same path without an upgrade) and the README.
    served = {(rule.endpoint, method) for rule in relay_app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}
              if rule.endpoint != "static" and not rule.endpoint.partition(".")[0].endswith("_v1_prefix")
              and not rule.websocket}
    assert served == documented_endpoints, "every route relay serves is documented, and only those"
