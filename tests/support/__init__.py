"""This module provides helpers shared by test packages (real servers, fixtures' plumbing)."""
