"""The package version: one place, read by ganfast/__init__.py, ganfast/info.py and the build (pyproject.toml)."""
__version__ = "0.1.0"
