"""The library's version (pyproject.toml states the same; a test checks that they agree)."""

__version__ = "1.0.0"
