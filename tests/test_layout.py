"""Tests that the README's Layout section matches the tree: every package and module listed, nothing stale."""

import re

from tests.support import REPO_ROOT

TOP_LEVEL = ("app.py", "gunicorn.conf.py", "relay_worker.py")


def layout_block():
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1]


def listed_paths():
    return {match.group(1) for match in re.finditer(r"^(\S+)\s", layout_block(), re.MULTILINE)}


def tree_paths():
    relay = REPO_ROOT / "relay"
    paths = {f"relay/{path.relative_to(relay)}" for path in relay.rglob("*.py")}
    paths |= {"relay/"} | {f"relay/{path.relative_to(relay)}/" for path in relay.rglob("*") if path.is_dir()}
    paths |= {name for name in TOP_LEVEL if (REPO_ROOT / name).exists()}
    return {path for path in paths if "__pycache__" not in path}


def test_readme_layout_lists_every_package_and_module():
    missing = tree_paths() - listed_paths()
    assert not missing, f"add these to README.md's Layout section, with their one-line role: {sorted(missing)}"


def test_readme_layout_lists_nothing_that_is_not_there():
    stale = {path for path in listed_paths() if path.startswith(("relay/", *TOP_LEVEL))} - tree_paths()
    assert not stale, f"README.md's Layout section lists paths that do not exist: {sorted(stale)}"


def test_every_listed_entry_says_what_it_is_for():
    for line in layout_block().strip().splitlines():
        path, _, role = line.partition(" ")
        assert role.strip(), f"README.md's Layout: {path} has no one-line role"
