"""This package provides relay's blueprints: the Gemini routes, operations endpoints and the admin views."""
