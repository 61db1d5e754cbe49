"""This package holds relay's tests.  It is a package so that pytest puts the repository root, not tests/, on
sys.path: tests/openai must not shadow the openai SDK the end-to-end tests drive."""
