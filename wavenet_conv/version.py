"""The library's version (pyproject.toml states the same; a test checks that they agree)."""

__version__ = "0.3.0"
