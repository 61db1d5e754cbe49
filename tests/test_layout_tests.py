"""The tests' own layout: shared constants come from tests/support, apps from conftest's factory.

A test module that spells the mocked upstream's URL again, or builds an app with ``create_app(`` itself,
is how 19 copies of the same constants and fixtures grew; these checks keep them from growing back.  A test
whose subject is create_app itself may call it, with ``# direct create_app: <why>`` on the line or the line
above.
"""

import ast

import pytest

from tests.support import REPO_ROOT, UPSTREAM_URL

TESTS = REPO_ROOT / "tests"
# Helpers, not test modules: the support package, the fake upstream, the e2e harness, conftest files.
NOT_TEST_MODULES = ("support/", "fakeupstream/", "e2e/harness.py")
ALLOW_DIRECT = "# direct create_app:"


def module_paths():
    for path in sorted(TESTS.rglob("*.py")):
        relative = path.relative_to(TESTS).as_posix()
        if path.name != "conftest.py" and not relative.startswith(NOT_TEST_MODULES):
            yield relative


def problems(source, name="<test module>"):
    """What in ``source`` repeats the shared upstream URL or builds an app around conftest's factory."""
    tree = ast.parse(source)
    lines = source.splitlines()
    found = []
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant) \
                and node.value.value == UPSTREAM_URL:
            targets = ", ".join(map(ast.unparse, node.targets if isinstance(node, ast.Assign) else [node.target]))
            found.append(f"{name}:{node.lineno}: {targets} = {UPSTREAM_URL!r}: import UPSTREAM_URL from tests.support")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            nearby = lines[max(node.lineno - 2, 0):node.lineno]
            if called == "create_app" and not any(ALLOW_DIRECT in line for line in nearby):
                found.append(f"{name}:{node.lineno}: create_app(...) directly: use conftest's app_factory or "
                             f"module_app_factory (or say why not with {ALLOW_DIRECT!r})")
    return found


def test_no_test_module_repeats_the_upstream_url_or_builds_its_own_app():
    found = [problem for relative in module_paths()
             for problem in problems((TESTS / relative).read_text(), f"tests/{relative}")]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ('UPSTREAM_URL = "http://upstream.test"\n', 1),
    ('UPSTREAM = "http://upstream.test"  # conftest\'s default\n', 1),
    ('BASE: str = "http://upstream.test"\n', 1),
    ('from tests.support import UPSTREAM_URL as UPSTREAM\nURL = UPSTREAM + "/v1beta"\n', 0),
    ('OTHER = "http://other.test"\n', 0),
    ("from relay import create_app\napp = create_app(environ={})\n", 1),
    ("import relay\n\ndef test_x():\n    relay.create_app()\n", 1),
    ("def test_x():\n    # direct create_app: start-up is the subject\n    create_app(environ={})\n", 0),
    ("def test_x():\n    create_app(environ={})  # direct create_app: start-up is the subject\n", 0),
])
def test_the_check_sees_what_it_is_for(source, expected):
    assert len(problems(source)) == expected, problems(source)
