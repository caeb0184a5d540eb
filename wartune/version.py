"""The release, written here only: pyproject.toml reads it, and a search folder records the
release that wrote it (`results/manifest.py`). It sits below every layer, so any may read it."""

__version__ = "0.3.1"
