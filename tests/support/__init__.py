"""This package provides helpers shared by test packages (real servers, fixtures' plumbing) and the paths they use."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "gemini"
